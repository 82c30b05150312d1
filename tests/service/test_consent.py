"""Consent (issue 36, item 4): a patient grants or withdraws consent to personalization and
to each assigned clinician's access; without it nothing is personalized or shown, every
change is audited and exported, and a data directory from before consents keeps its data and
what its people had."""

from __future__ import annotations

import sqlite3

import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import make_service_data
from tests.service.review_helpers import register, signed_in

from tailorml.registry import consent
from tailorml.registry.people import PeopleStore
from tailorml.service.auth import add_person


def test_enrollment_and_assignment_record_consent(app, made):
    client, _ = app
    alice, bob = made.people["alice"], made.people["bob"]
    shown = client.get("/api/v1/people/me/consent", headers=alice.secret).json()
    assert shown["personalization"]["granted"] is True
    assert shown["personalization"]["source"] == "enrollment"
    assert [(c["id"], c["name"], c["granted"], c["source"]) for c in shown["clinicians"]] == [
        (bob.id, "bob", True, "assignment")
    ]
    assert [h["scope"] for h in shown["history"]] == ["personalization", "clinician_access"]
    # consent is a patient's: a clinician has none to read or give
    assert client.get("/api/v1/people/me/consent", headers=bob.secret).status_code == 403
    put = client.put(
        "/api/v1/people/me/consent", headers=bob.secret, json={"personalization": False}
    )
    assert put.status_code == 403


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"personalization": "no"}, "consent.personalization: must be true"),
        ({"clinicians": {"bob": False}}, "consent.clinicians: 'bob' is not a person id"),
        ({"clinicians": {"p-000000000000": False}}, "clinicians.p-000000000000: not a clinician"),
        ({"clinicians": []}, "consent.clinicians: must be an object"),
        ({"sharing": True}, "consent.sharing: unknown field"),
        ({}, "consent: nothing to change"),
    ],
)
def test_a_bad_change_names_its_field_and_changes_nothing(app, made, body, message):
    client, service = app
    alice = made.people["alice"]
    before = len(service.store.consent_history(alice.id))
    answer = client.put("/api/v1/people/me/consent", headers=alice.secret, json=body)
    assert answer.status_code == 422 and answer.json()["message"].startswith(message)
    assert len(service.store.consent_history(alice.id)) == before


def test_without_consent_a_clinician_sees_nothing_until_it_is_granted_again(app, made):
    client, service = app
    alice, bob = made.people["alice"], made.people["bob"]
    reads = client.get("/api/v1/entries", params={"patient": alice.id}, headers=bob.secret)
    assert reads.status_code == 200
    withdrawn = client.put(
        "/api/v1/people/me/consent", headers=alice.secret, json={"clinicians": {bob.id: False}}
    )
    assert withdrawn.status_code == 200
    assert withdrawn.json()["clinicians"][0]["granted"] is False
    for path in ("/api/v1/entries", "/api/v1/alerts/current", "/api/v1/model", "/api/v1/audit"):
        refused = client.get(path, params={"patient": alice.id}, headers=bob.secret)
        assert refused.status_code == 403, path  # as for a patient never assigned
    assert client.get("/api/v1/people/me", headers=bob.secret).json()["patients"] == []
    # the review page: not listed, and the patient's page is "no access"
    with TestClient(client.app) as browser:
        signed_in(browser, bob.token)
        assert alice.id not in browser.get("/review").text
        assert browser.get(f"/review/patients/{alice.id}").status_code == 403
    # an administrator's assignment does not undo the patient's withdrawal
    assert service.store.assign(bob.id, alice.id, "admin") is False
    assert service.store.patients_of(bob.id) == []
    granted = client.put(
        "/api/v1/people/me/consent", headers=alice.secret, json={"clinicians": {bob.id: True}}
    )
    assert granted.json()["clinicians"][0]["granted"] is True
    assert client.get("/api/v1/model", params={"patient": alice.id}, headers=bob.secret).is_success
    # audited, in her own audit view and her export
    actions = [
        (e["action"], e["details"].get("clinician"))
        for e in client.get("/api/v1/audit", headers=alice.secret).json()
        if e["action"].startswith("consent_")
    ]
    assert actions[-2:] == [("consent_withdrawn", bob.id), ("consent_granted", bob.id)]
    exported = client.get("/api/v1/people/me/export", headers=alice.secret).json()["consents"]
    assert [(c["scope"], c["granted"], c["source"]) for c in exported][-2:] == [
        ("clinician_access", False, "patient"),
        ("clinician_access", True, "patient"),
    ]


def test_without_consent_to_personalization_nothing_is_personalized(app, made, trained):
    client, service = app
    alice, bob = made.people["alice"], made.people["bob"]
    queued = client.post("/api/v1/personalization", headers=alice.secret)
    assert queued.status_code == 202 and queued.json()["status"] == "queued"
    candidate = register(service, alice.id, trained, shift=0.01)
    service.review(service.store.person(bob.id), candidate, "approve", "fine")
    assert service.registry.active_model(alice.id).kind == "personalized"
    pending = register(service, alice.id, trained, shift=0.02)

    answer = client.put(
        "/api/v1/people/me/consent", headers=alice.secret, json={"personalization": False}
    )
    assert answer.status_code == 200 and answer.json()["personalization"]["granted"] is False
    job = service.store.job(queued.json()["id"])  # the queued job never runs
    assert job.status == "failed" and job.error == consent.WITHDRAWN_JOB
    assert service.store.claim_job("test-worker") is None
    active = service.registry.active_model(alice.id)  # back to the predefined model
    assert active.kind == "predefined"
    assert active.reason == "rollback: consent to personalization withdrawn"
    again = client.post("/api/v1/personalization", headers=alice.secret)
    assert again.status_code == 403
    assert "not consented to personalization" in again.json()["message"]
    by_bob = client.post("/api/v1/personalization", headers=bob.secret, json={"patient": alice.id})
    assert by_bob.status_code == 403
    review = client.post(
        f"/api/v1/candidates/{pending}/review",
        headers=bob.secret,
        json={"decision": "approve", "comment": "looks fine"},
    )
    assert review.status_code == 400 and "withdrawn consent" in review.json()["message"]
    # the CLI on the server's data directory is refused by the same rule (the registry's)
    from typer.testing import CliRunner

    from tailorml.cli import app as cli

    arguments = ["review", "approve", str(pending), "--reviewer", "root"]
    by_cli = CliRunner().invoke(cli, [*arguments, "--registry", str(made.data)])
    assert by_cli.exit_code != 0 and str(by_cli.exception) == consent.NOT_CONSENTED_APPROVAL
    assert service.registry.active_model(alice.id).kind == "predefined"
    assert service.registry.candidate(pending).status == "withdrawn"  # closed at withdrawal

    client.put("/api/v1/people/me/consent", headers=alice.secret, json={"personalization": True})
    assert client.post("/api/v1/personalization", headers=alice.secret).status_code == 202


def test_a_job_queued_past_a_withdrawal_fails_when_claimed(tmp_path):
    """A withdrawal stops the jobs it finds; one that reached the queue another way (an
    older version's row) is failed by the claim itself, in its transaction."""
    store = PeopleStore(tmp_path)
    ann = store.add_person("p-00000000000a", "ann", "patient", "a" * 64, "b" * 40, "t")
    job = store.add_job(ann.id, "t")
    with sqlite3.connect(tmp_path / "registry.sqlite") as db:  # a withdrawal, rows only
        db.execute(
            "INSERT INTO consents (patient_id, scope, granted, source, actor, created)"
            " VALUES (?, 'personalization', 0, 'patient', 'ann', 'now')",
            (ann.id,),
        )
    assert store.claim_job("worker") is None
    assert store.job(job.id).status == "failed"
    assert store.job(job.id).error == consent.WITHDRAWN_JOB


def test_a_patient_enrolled_without_consent_gives_it_on_their_page(tmp_path):
    store = PeopleStore(tmp_path)
    ann, _ = add_person(store, "ann", "patient", "t", personalization=False)
    assert store.consented(ann.id) is False
    with pytest.raises(consent.NotConsented):
        store.add_job(ann.id, "t")
    assert PeopleStore(tmp_path).consented(ann.id) is False  # a reopening grants nothing
    store.set_consent(ann.id, True, "ann (patient)", "patient")
    assert store.add_job(ann.id, "t").status == "queued"


def test_consent_rows_are_append_only(tmp_path):
    store = PeopleStore(tmp_path)
    ann = store.add_person("p-00000000000a", "ann", "patient", "a" * 64, "b" * 40, "t")
    with sqlite3.connect(tmp_path / "registry.sqlite") as db:
        for sql in ("UPDATE consents SET granted = 0", "DELETE FROM consents"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(sql)
    assert store.consented(ann.id)


def test_a_data_directory_from_before_consent_keeps_its_data_and_access(tmp_path, trained):
    made = make_service_data(tmp_path, trained)
    alice, bob, carol = (made.people[n] for n in ("alice", "bob", "carol"))
    path = made.data / "registry.sqlite"
    with sqlite3.connect(path) as db:  # the file as a version before consents left it
        db.execute("DROP TABLE consents")
        people_before = db.execute("SELECT id, name, role FROM people ORDER BY id").fetchall()
    store = PeopleStore(made.data)
    assert store.patients_of(bob.id) == [alice.id]  # existing access kept
    assert store.consented(alice.id) and store.consented(carol.id)
    history = store.consent_history(alice.id)
    assert [(c.scope, c.clinician_id, c.granted, c.source) for c in history] == [
        ("personalization", None, True, "migration"),
        ("clinician_access", bob.id, True, "migration"),
    ]
    assert [c.source for c in store.consent_history(carol.id)] == ["migration"]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT id, name, role FROM people ORDER BY id").fetchall() == (
            people_before
        )
        audited = db.execute(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'consent_granted' AND details_json"
            " LIKE '%migration%'"
        ).fetchone()[0]
    assert audited == 3  # alice's two, carol's one
    PeopleStore(made.data)  # opened again: nothing more recorded
    assert len(store.consent_history(alice.id)) == 2


def test_the_administrator_records_consent_from_the_cli(tmp_path):
    from typer.testing import CliRunner

    from tailorml.cli import app as cli

    runner = CliRunner()

    def run(*args):
        answer = runner.invoke(cli, ["users", *args, "--data", str(tmp_path)])
        assert answer.exit_code == 0, answer.output
        return answer.output

    run("add", "ann", "--role", "patient", "--no-personalization")
    run("add", "doc", "--role", "clinician")
    assert "doc now reviews ann" in run("assign", "doc", "ann")
    store = PeopleStore(tmp_path)
    ann, doc = store.by_name("ann"), store.by_name("doc")
    assert not store.consented(ann.id) and store.patients_of(doc.id) == [ann.id]
    shown = run("consent", "ann", "--clinician", "doc", "--withdraw")
    assert "doc: withdrawn (administrator" in shown
    assert "personalization: withdrawn (enrollment" in shown
    assert store.patients_of(doc.id) == []
    assert "ann withdrew doc's access" in run("assign", "doc", "ann")
    assert "(access" in run("list")  # rich wraps the cell: "ann (access" / "withdrawn)"
    run("consent", "ann", "--grant")
    assert store.consented(ann.id) and store.patients_of(doc.id) == []
