"""Bad input round 3 at the service's boundary, each case re-created from the hostile pass:
a lone surrogate cannot poison a person's data, numbers and structures without limits are
422s (422s, never 500s that also drop the connection), a clinician's upload cannot land in their
own account, and a service given the wrong server key refuses to start."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import make_service_data

from tailorml.errors import TailormlError
from tailorml.service.app import create_app
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey, write_key_file

NOW_MS = 1_765_000_000_000


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained):
    return make_service_data(tmp_path_factory.mktemp("hostile"), trained)


@pytest.fixture(scope="module")
def client(made):
    service = Service(made.data, ServerKey.load(made.key_file, made.data), database=made.database)
    with TestClient(create_app(service, run_jobs=False), raise_server_exceptions=False) as client:
        yield client, service


def post(client, path, body: str, who):
    return client.post(path, content=body.encode(), headers=who.secret)


@pytest.mark.parametrize("field", ["device", "direction", "sysTime", "dateString"])
def test_a_lone_surrogate_in_an_entry_is_refused_and_nothing_is_stored(client, made, field):
    client, service = client
    alice = made.people["alice"]
    before = len(service.store.entries(alice.id, None, None, 10_000))
    entry = {"type": "sgv", "sgv": 120, "date": NOW_MS, field: "x"}
    body = json.dumps([entry]).replace('"x"', '"\\ud800"')
    answer = post(client, "/api/v1/entries", body, alice)
    assert answer.status_code == 422, answer.text
    assert "lone UTF-16 surrogate" in answer.json()["message"]
    assert len(service.store.entries(alice.id, None, None, 10_000)) == before
    assert client.get("/api/v1/entries?count=5", headers=alice.secret).status_code == 200


@pytest.mark.parametrize("field", ["notes", "enteredBy", "eventType"])
def test_a_lone_surrogate_in_a_treatment_is_refused(client, made, field):
    client, _ = client
    alice = made.people["alice"]
    body = json.dumps([{"created_at": NOW_MS, "carbs": 10, field: "x"}]).replace('"x"', '"\\udfff"')
    answer = post(client, "/api/v1/treatments", body, alice)
    assert answer.status_code == 422 and "surrogate" in answer.json()["message"]


def test_a_record_stored_with_a_surrogate_before_the_fix_still_reads_back(client, made):
    client, service = client
    carol = service.store.by_name("carol")
    # what an older version stored: the check is bypassed by calling the store directly
    cipher = service.keyring.cipher(carol.id)
    record = {"type": "sgv", "sgv": 99, "date": NOW_MS - 1, "device": "\ud800"}
    sealed = cipher.seal(json.dumps(record).encode(), "entry")
    service.store.add_entries(carol.id, [(NOW_MS - 1, "poisoned", sealed)], "test")
    for path in ("/api/v1/entries?count=5", "/api/v1/people/me/export"):
        answer = client.get(path, headers=made.people["carol"].secret)
        assert answer.status_code == 200, (path, answer.text)
    assert "\\ud800" in client.get("/api/v1/entries", headers=made.people["carol"].secret).text


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('[{"type": "sgv", "sgv": 1' + "0" * 400 + ', "date": 1765000000000}]', "sgv"),
        ('[{"type": "sgv", "sgv": 1' + "0" * 5000 + ', "date": 1765000000000}]', "too long"),
        ('[{"type": "sgv", "sgv": 100, "date": 1' + "0" * 400 + "}]", "date"),
        ('[{"type": "sgv", "sgv": 100, "date": 1e20}]', "date"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (
            '[{"type": "sgv", "sgv": 100, "date": 1765000000000, "device": '
            + "[" * 50_000
            + "]" * 50_000
            + "}]",
            "nested too deeply",
        ),
    ],
)
def test_numbers_and_structures_without_limits_are_422s(client, made, body, named):
    client, _ = client
    alice = made.people["alice"]
    answer = post(client, "/api/v1/entries", body, alice)
    assert answer.status_code == 422, answer.text[:200]
    assert named in answer.json()["message"]
    # the connection is still good for the next valid request
    assert client.get("/api/v1/entries?count=1", headers=alice.secret).status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        "find[date][$lte]=-" + "9" * 40,
        "find[date][$gte]=" + "9" * 40,
        "find[date][$gte]=" + "9" * 5000,
    ],
)
def test_huge_time_filters_are_answered_not_overflowed(client, made, query):
    client, _ = client
    answer = client.get(f"/api/v1/entries?{query}", headers=made.people["alice"].secret)
    assert answer.status_code in (200, 422), answer.text[:200]
    if answer.status_code == 422:
        assert "is not epoch ms or ISO 8601" in answer.json()["message"]


@pytest.mark.parametrize("path", ["/api/v1/personalization/", "/api/v1/candidates/"])
def test_huge_ids_are_not_found_not_500(client, made, path):
    client, _ = client
    for ident in ("9" * 30, "-1", "0"):
        answer = client.get(path + ident, headers=made.people["alice"].secret)
        assert answer.status_code in (403, 404), (ident, answer.text)


def test_a_clinicians_upload_without_a_patient_is_refused_not_stored_as_theirs(client, made):
    client, service = client
    bob = made.people["bob"]
    entry = [{"type": "sgv", "sgv": 120, "date": NOW_MS, "patient": made.people["alice"].id}]
    answer = post(client, "/api/v1/entries", json.dumps(entry), bob)
    assert answer.status_code == 400
    assert "keeps no readings; name the patient" in answer.json()["message"]
    assert service.store.entries(bob.id, None, None, 10) == []
    treatments = post(client, "/api/v1/treatments", json.dumps([{"date": NOW_MS, "carbs": 5}]), bob)
    assert treatments.status_code == 400


def test_a_service_given_another_server_key_refuses_to_start(made, tmp_path, client):
    _, service = client
    service.keyring.cipher(service.store.by_name("alice").id)  # a data key exists
    other = write_key_file(tmp_path / "other.key")
    with pytest.raises(TailormlError, match="holds data keys wrapped by server key"):
        Service(made.data, ServerKey.load(other, made.data), database=made.database)


def test_api_answers_are_not_cached_and_errors_keep_the_api_shape(client, made):
    client, _ = client
    alice = made.people["alice"]
    answer = client.get("/api/v1/entries", headers=alice.secret)
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-content-type-options"] == "nosniff"
    bad_id = client.get("/api/v1/personalization/abc", headers=alice.secret)
    assert bad_id.status_code == 422 and set(bad_id.json()) == {"status", "message"}
    assert "job_id" in bad_id.json()["message"]
    assert client.head("/api/v1/status.json").status_code == 200


def test_time_filters_need_an_offset_as_uploads_do(client, made):
    client, _ = client
    alice = made.people["alice"]
    naive = client.get("/api/v1/entries?find[date][$gte]=2024-01-05T08:00:00", headers=alice.secret)
    assert naive.status_code == 422 and "has no UTC offset" in naive.json()["message"]
    zoned = client.get(
        "/api/v1/entries?find[date][$gte]=2024-01-05T08:00:00Z", headers=alice.secret
    )
    assert zoned.status_code == 200


def test_contradictory_date_and_date_string_are_refused(client, made):
    client, _ = client
    alice = made.people["alice"]
    entry = {"type": "sgv", "sgv": 120, "date": NOW_MS, "dateString": "2020-01-01T00:00:00Z"}
    answer = post(client, "/api/v1/entries", json.dumps([entry]), alice)
    assert answer.status_code == 422 and "min from the record's time" in answer.json()["message"]
    same = {
        "type": "sgv",
        "sgv": 121,
        "date": NOW_MS + 300_000,
        "dateString": "2025-12-06T06:51:40+01:00",
    }  # the same instant in another zone
    assert post(client, "/api/v1/entries", json.dumps([same]), alice).status_code == 200


def test_a_refused_access_is_in_the_persons_own_audit_view(client, made):
    client, _ = client
    alice, mallory = made.people["alice"], made.people["mallory"]  # mallory is not assigned
    answer = client.get(f"/api/v1/entries?patient={alice.id}", headers=mallory.secret)
    assert answer.status_code == 403
    audit = client.get("/api/v1/audit", headers=alice.secret).json()
    denied = [line for line in audit if line["action"] == "denied:read_entries"]
    assert denied and "mallory" in denied[-1]["actor"]


def test_a_key_file_others_can_read_is_refused(tmp_path, made):
    key = write_key_file(tmp_path / "open.key")
    key.chmod(0o644)
    with pytest.raises(TailormlError, match="chmod 600"):
        ServerKey.load(key, made.data)


def test_a_conflicting_repeat_answers_with_the_value_that_is_stored(client, made):
    client, _ = client
    carol = made.people["carol"]
    first = {"type": "sgv", "sgv": 120, "date": NOW_MS + 600_000}
    assert post(client, "/api/v1/entries", json.dumps([first]), carol).json()[0]["sgv"] == 120
    repeat = dict(first, sgv=180, device="other")
    answer = post(client, "/api/v1/entries", json.dumps([repeat]), carol).json()
    # a corrected value replaces the stored one, as Nightscout's upsert (the old one stays in
    # the record's history): the answer is what is now stored
    assert answer[0]["sgv"] == 180 and answer[0]["device"] == "other"
    both = post(client, "/api/v1/entries", json.dumps([dict(first, sgv=90)] * 2), carol).json()
    assert [e["sgv"] for e in both] == [90, 90]
    stored = client.get(
        f"/api/v1/entries?find[date][$gte]={NOW_MS + 600_000}&find[date][$lte]={NOW_MS + 600_000}",
        headers=carol.secret,
    ).json()
    assert [e["sgv"] for e in stored] == [90]


@pytest.mark.parametrize(
    "query",
    ["find[date][$gte]=--5", "find[date][$lt]=---1", "count=²", "count=-3", "find[date][$gte]=¹²"],
)
def test_numbers_python_reads_oddly_are_422s_not_500s(client, made, query):
    client, _ = client
    answer = client.get(f"/api/v1/entries?{query}", headers=made.people["alice"].secret)
    assert answer.status_code == 422, answer.text


def test_upper_case_sgv_is_a_reading_and_every_time_field_must_agree(client, made):
    client, _ = client
    alice = made.people["alice"]
    upper = {"type": "SGV", "sgv": 140, "date": NOW_MS + 900_000}
    stored = post(client, "/api/v1/entries", json.dumps([upper]), alice).json()
    assert stored[0]["type"] == "sgv" and stored[0]["sgv"] == 140
    sys_time = {"type": "sgv", "sgv": 120, "date": NOW_MS, "sysTime": "2023-01-01T00:00:00Z"}
    answer = post(client, "/api/v1/entries", json.dumps([sys_time]), alice)
    assert answer.status_code == 422 and "sysTime" in answer.json()["message"]
    treatment = {"created_at": "2025-12-06T10:00:00Z", "date": NOW_MS, "carbs": 5}
    answer = post(client, "/api/v1/treatments", json.dumps([treatment]), alice)
    assert answer.status_code == 422 and "date" in answer.json()["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/treatments?find[type]=x",
        "/api/v1/entries?find[eventType]=x",
        "/api/v1/alerts?find[type]=x",
    ],
)
def test_a_filter_a_route_does_not_apply_is_refused_not_ignored(client, made, path):
    client, _ = client
    answer = client.get(path, headers=made.people["alice"].secret)
    assert answer.status_code == 422 and "unsupported filter" in answer.json()["message"]


def test_rollback_and_personalization_take_the_patient_from_the_query(client, made):
    client, _ = client
    bob, alice = made.people["bob"], made.people["alice"]  # bob reviews alice
    answer = client.post(
        f"/api/v1/model/rollback?patient={alice.id}", json={"reason": "x"}, headers=bob.secret
    )
    # about alice, not about bob himself: she was never personalized here
    assert answer.status_code == 400 and "never been personalized" in answer.json()["message"]
    assert alice.id in answer.json()["message"] and "/" not in answer.json()["message"]
    assert "tailorml" not in answer.json()["message"]  # no CLI command in an API answer


def test_an_anonymous_body_is_refused_before_it_is_read_and_login_forms_are_bounded(client):
    client, _ = client
    answer = client.post("/api/v1/entries", content=b"[" * 500_000)
    assert answer.status_code == 401
    login = client.post(
        "/login",
        content=b"token=" + b"x" * 100_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert login.status_code == 413 and "Form too large" in login.text  # the HTML page


def test_credentials_of_two_accounts_in_one_request_are_refused(client, made):
    """A request is one person's: a Bearer token of one account and an api-secret of
    another used to be read as the api-secret's account."""
    client, _ = client
    alice, carol = made.people["alice"], made.people["carol"]
    mixed = client.get("/api/v1/verifyauth", headers=alice.bearer | carol.secret)
    same = client.get("/api/v1/verifyauth", headers=alice.bearer | alice.secret)
    assert mixed.status_code == 401
    assert "name different accounts; send one credential" in mixed.json()["message"]
    assert same.status_code == 200
