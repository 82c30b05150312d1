"""What the fifth hostile pass and the leftovers of the third found in the service, each
refused or answered at the boundary: contradictory times in devicestatus and treatments,
HEAD on the GET routes, numbers a client did not mean (-0.0, underflow), the audit
log's `count`."""

from __future__ import annotations

import json
import math
import time

import pytest

HOUR_AGO_MS = int(time.time() * 1000) - 3_600_000


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


@pytest.mark.parametrize("field", ["mills", "date"])
def test_a_devicestatus_whose_mills_or_date_contradicts_created_at_is_refused(app, made, field):
    client, _ = app
    alice = made.people["alice"]
    status = {"created_at": iso(HOUR_AGO_MS), field: HOUR_AGO_MS - 86_400_000, "device": "x"}
    answer = client.post("/api/v1/devicestatus", json=[status], headers=alice.secret)
    assert answer.status_code == 422
    assert f"[0]: {field} (" in answer.json()["message"] and "1,440 min" in answer.json()["message"]


def test_a_devicestatus_whose_mills_agrees_is_stored_with_that_instant(app, made):
    client, _ = app
    alice = made.people["alice"]
    when = HOUR_AGO_MS - 7_000
    status = {"created_at": iso(when), "mills": when, "device": "agrees"}
    stored = client.post("/api/v1/devicestatus", json=status, headers=alice.secret).json()[0]
    assert stored["mills"] == when and stored["created_at"] == iso(when)
    back = client.get("/api/v1/devicestatus.json?count=50", headers=alice.secret).json()
    assert [s["mills"] for s in back if s.get("device") == "agrees"] == [when]


def test_a_profile_may_start_at_another_time_than_it_was_created(app, made):
    client, _ = app
    alice = made.people["alice"]
    profile = {"created_at": iso(HOUR_AGO_MS), "startDate": iso(HOUR_AGO_MS - 86_400_000)}
    answer = client.post("/api/v1/profile", json=profile | {"store": {}}, headers=alice.secret)
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("timestamp", "said"),
    [
        (iso(HOUR_AGO_MS - 3_600_000), "timestamp ("),  # an hour from created_at
        ("not a time", "timestamp: 'not a time' is not an ISO 8601"),
        (True, "timestamp: must be epoch milliseconds or ISO 8601, not a boolean"),
    ],
)
def test_a_treatments_timestamp_is_checked_like_created_at(app, made, timestamp, said):
    client, _ = app
    alice = made.people["alice"]
    treatment = {"eventType": "Note", "created_at": iso(HOUR_AGO_MS), "timestamp": timestamp}
    answer = client.post("/api/v1/treatments", json=[treatment], headers=alice.secret)
    assert answer.status_code == 422 and said in answer.json()["message"]


def test_a_treatment_with_only_a_timestamp_is_stored_at_it(app, made):
    client, _ = app
    alice = made.people["alice"]
    treatment = {"eventType": "Note", "timestamp": iso(HOUR_AGO_MS - 60_000), "notes": "ts"}
    stored = client.post("/api/v1/treatments", json=treatment, headers=alice.secret).json()[0]
    assert stored["date"] == HOUR_AGO_MS - 60_000
    assert stored["created_at"] == iso(HOUR_AGO_MS - 60_000)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/entries.json",
        "/api/v1/entries/current.json",
        "/api/v1/treatments",
        "/api/v1/devicestatus.json",
        "/api/v1/verifyauth",
        "/api/v2/properties",
        "/pebble",
        "/api/v1/alerts/current",
        "/api/v1/status.json",
        "/api/v1/entries/",  # a trailing slash, as xDrip+ writes it
    ],
)
def test_head_answers_wherever_get_does_without_a_body(app, made, path):
    client, _ = app
    alice = made.people["alice"]
    get = client.get(path, headers=alice.secret)
    head = client.head(path, headers=alice.secret)
    assert head.status_code == get.status_code == 200
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["cache-control"] == "no-store"


def test_head_is_refused_like_get_without_credentials_and_on_a_post_only_path(app):
    client, _ = app
    assert client.head("/api/v1/entries.json").status_code == 401
    answer = client.head("/api/v1/model/rollback")  # POST only: 405 as GET is
    assert answer.status_code == 405 and answer.content == b""


def post_raw(client, path, text, who):
    headers = who.secret | {"content-type": "application/json"}
    return client.post(path, content=text.encode(), headers=headers)


def positive_zero(value) -> bool:
    return value == 0 and math.copysign(1.0, value) == 1.0


def test_minus_zero_is_stored_and_answered_as_zero(app, made):
    client, _ = app
    alice = made.people["alice"]
    when = HOUR_AGO_MS - 11_000
    text = f'[{{"type": "sgv", "sgv": 123, "date": {when}, "delta": -0.0, "noise": -0.0}}]'
    stored = post_raw(client, "/api/v1/entries", text, alice)
    assert stored.status_code == 200
    entry = stored.json()[0]
    assert positive_zero(entry["delta"]) and positive_zero(entry["noise"])
    assert "-0.0" not in stored.text
    treatment = f'{{"eventType": "Note", "date": {when}, "carbs": -0.0, "x": {{"y": -0e3}}}}'
    kept = post_raw(client, "/api/v1/treatments", treatment, alice)
    assert kept.status_code == 200 and "-0.0" not in kept.text
    kept = kept.json()[0]
    assert positive_zero(kept["carbs"]) and positive_zero(kept["x"]["y"])
    back = client.get("/api/v1/treatments?count=100", headers=alice.secret).text
    assert "-0.0" not in back


@pytest.mark.parametrize(
    ("path", "record", "field", "said"),
    [
        (
            "/api/v1/entries",
            '{"type": "sgv", "sgv": 1e-5000, "date": %d}',
            "entries[0].sgv",
            "underflows to 0",
        ),
        (
            "/api/v1/entries",
            '{"type": "sgv", "sgv": 1E400, "date": %d}',
            "entries[0].sgv",
            "beyond the largest",
        ),
        (
            "/api/v1/entries",
            '{"type": "sgv", "sgv": 120, "date": %d, "delta": -1e-400}',
            "entries[0].delta",
            "underflows",
        ),
        (
            "/api/v1/entries",
            '{"type": "sgv", "sgv": 120, "date": 1.5e-4000, "x": %d}',
            "entries[0].date",
            "underflows",
        ),
        (
            "/api/v1/treatments",
            '{"eventType": "Bolus", "insulin": 5e-999, "date": %d}',
            "treatments[0].insulin",
            "underflows",
        ),
        (
            "/api/v1/treatments",
            '{"eventType": "Note", "pump": {"rate": 9e-999}, "date": %d}',
            "treatments[0].pump.rate",
            "underflows",
        ),
        (
            "/api/v1/devicestatus",
            '{"created_at": "2026-01-01T00:00:00Z", "iob": [%d, 1e999]}',
            "devicestatus[0].iob[1]",
            "beyond",
        ),
    ],
)
def test_a_number_no_float_holds_is_refused_naming_its_field(app, made, path, record, field, said):
    client, _ = app
    alice = made.people["alice"]
    answer = post_raw(client, path, "[" + record % HOUR_AGO_MS + "]", alice)
    assert answer.status_code == 422
    message = answer.json()["message"]
    assert message.startswith(f"{field}: ") and said in message


def test_the_audit_log_honours_count_newest_lines_oldest_first(app, made):
    client, _ = app
    carol = made.people["carol"]
    for _ in range(3):  # three more reads of her entries: three more lines
        client.get("/api/v1/entries.json", headers=carol.secret)
    whole = client.get("/api/v1/audit?count=10000", headers=carol.secret).json()
    two = client.get("/api/v1/audit?count=2", headers=carol.secret).json()
    assert len(whole) >= 3 and two == whole[-2:]  # the newest two, oldest first
    assert len(client.get("/api/v1/audit", headers=carol.secret).json()) == len(whole)


@pytest.mark.parametrize("count", ["0", "-1", "10001", "abc", "1.5", "", "1e3", "²"])
def test_a_bad_audit_count_is_refused(app, made, count):
    client, _ = app
    carol = made.people["carol"]
    answer = client.get(f"/api/v1/audit?count={count}", headers=carol.secret)
    assert answer.status_code == 422 and "count must be a whole number" in answer.json()["message"]


def test_the_audit_count_is_in_the_openapi_schema(app):
    client, _ = app
    operation = client.get("/openapi.json").json()["paths"]["/api/v1/audit"]["get"]
    count = next(p for p in operation["parameters"] if p["name"] == "count")
    assert count["schema"]["maximum"] == 10_000 and count["schema"]["default"] == 1_000
    assert "422" in operation["responses"]


@pytest.mark.parametrize(
    "path", ["/login", "/logout", "/review/candidates/1", "/review/patients/x/rollback"]
)
@pytest.mark.parametrize("declared", [True, False])
def test_an_oversize_review_form_gets_the_review_pages_html_error(app, made, path, declared):
    """A browser posting a comment over 20 KB sees the review pages' own error page (it got
    the API's bare JSON), with their security headers."""
    from fastapi.testclient import TestClient
    from tests.service.review_helpers import signed_in

    client, _ = app
    browser = signed_in(TestClient(client.app, follow_redirects=False), made.people["bob"].token)
    body = b"comment=" + b"x" * 30_000
    headers = {"content-type": "application/x-www-form-urlencoded"}

    def chunks():  # no Content-Length: the limit is found while reading
        yield body[:10_000]
        yield body[10_000:]

    answer = browser.post(path, content=body if declared else chunks(), headers=headers)
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("text/html")
    assert "Form too large" in answer.text and "20,000 bytes" in answer.text
    assert "default-src" in answer.headers["content-security-policy"]


def test_sealed_entries_and_treatments_have_one_length_whatever_the_value(app, made):
    """AES-GCM keeps the plaintext's length: unpadded, the database told an sgv of 45 from
    one of 345 and 5 g of carbs from 50 g. Rows are padded to one bucket (512 bytes)
    or one fixed-width layout."""

    client, service = app
    carol = made.people["carol"]
    person = service.store.by_name("carol")
    at = HOUR_AGO_MS - 5 * 3_600_000
    entries = [{"type": "sgv", "sgv": v, "date": at + i * 300_000} for i, v in enumerate((45, 345))]
    treatments = [
        {"eventType": "Meal Bolus", "carbs": c, "date": at + i * 300_000}
        for i, c in enumerate((5, 50))
    ]
    assert client.post("/api/v1/entries", json=entries, headers=carol.secret).status_code == 200
    assert client.post("/api/v1/treatments", json=treatments, headers=carol.secret).is_success
    cipher = service.keyring.cipher(person.id)
    for rows, purpose in (
        (service.store.entries(person.id, at, at + 300_000, 10), "entry"),
        (service.store.treatments(person.id, at, at + 300_000, 10), "treatment"),
    ):
        assert len(rows) == 2
        assert len({len(row.sealed) for row in rows}) == 1  # one length, whatever the value
        opened = [json.loads(cipher.open(row.sealed, purpose)) for row in rows]
        assert sorted(o.get("sgv", o.get("carbs")) for o in opened) in ([45, 345], [5, 50])


def test_an_entry_sealed_before_padding_still_reads_back(app, made):
    from tailorml.registry.people import Write
    from tailorml.service.nightscout import canonical

    client, service = app
    carol = made.people["carol"]
    person = service.store.by_name("carol")
    at = HOUR_AGO_MS - 9 * 3_600_000
    old = {"type": "sgv", "date": at, "dateString": iso(at), "sgv": 77}
    cipher = service.keyring.cipher(person.id)
    nonce = b"\x01" * 12  # sealed as an older version did: the JSON alone
    sealed = nonce + cipher._aead.encrypt(nonce, canonical(old), cipher._associated("entry"))
    assert len(sealed) < 12 + 512 + 16
    key = cipher.fingerprint("entry", "sgv", str(at))
    service.store.add_entries(person.id, [Write(at, key, sealed)], "test")
    answer = client.get(
        f"/api/v1/entries.json?find[date][$gte]={at}&find[date][$lte]={at}", headers=carol.secret
    )
    (shown,) = answer.json()
    assert {k: v for k, v in shown.items() if k != "_id"} == old


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/api/v1/entries", "GET, HEAD, POST"),
        ("DELETE", "/api/v1/entries.json", "GET, HEAD, POST"),
        ("PATCH", "/api/v1/treatments", "GET, HEAD, POST, PUT"),
        ("PUT", "/api/v1/status.json", "GET, HEAD"),
    ],
)
def test_a_405_allows_every_method_the_path_serves(app, method, path, allowed):
    client, _ = app
    answer = client.request(method, path)
    assert answer.status_code == 405 and answer.headers["allow"] == allowed


@pytest.mark.parametrize("field", ["mills", "date"])
def test_a_devicestatus_timed_by_mills_or_date_gets_its_created_at(app, made, field):
    """Followers and loops read a status's created_at: one timed by mills alone was stored
    without it."""
    client, _ = app
    alice = made.people["alice"]
    when = HOUR_AGO_MS - 13_000
    stored = client.post(
        "/api/v1/devicestatus", json=[{field: when, "device": field}], headers=alice.secret
    ).json()[0]
    assert stored["created_at"] == iso(when) and stored["mills"] == when
