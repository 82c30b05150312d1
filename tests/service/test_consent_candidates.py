"""Candidates of a person who withdrew consent to personalization (issue 36): the proposals
awaiting review close at the withdrawal (`withdrawn`, with the reason and an audit line), and
a session that reaches the registry after it, such as that of a job that was running, is
refused whole, its files deleted."""

from __future__ import annotations

import copy
import uuid

import pandas as pd
import pytest
import torch
from tests.service.review_helpers import register

from tailorml.models.cnn import model_bytes
from tailorml.registry import consent
from tailorml.registry.job_queue import LeaseLost
from tailorml.registry.models import CandidateRecord, Registry
from tailorml.service.jobs import Lease


def withdraw(client, person) -> None:
    answer = client.put(
        "/api/v1/people/me/consent", headers=person.secret, json={"personalization": False}
    )
    assert answer.status_code == 200 and answer.json()["personalization"]["granted"] is False


def grant(client, person) -> None:
    answer = client.put(
        "/api/v1/people/me/consent", headers=person.secret, json={"personalization": True}
    )
    assert answer.status_code == 200 and answer.json()["personalization"]["granted"] is True


def test_a_withdrawal_closes_the_candidates_awaiting_review(app, made, trained):
    client, service = app
    alice, bob = made.people["alice"], made.people["bob"]
    older = register(service, alice.id, trained, shift=0.01)
    pending = register(service, alice.id, trained, shift=0.02)  # supersedes `older`
    assert service.registry.candidate(older).status == "superseded"
    assert [c.id for c in service.registry.candidates(alice.id)] == [pending]

    withdraw(client, alice)
    closed = service.registry.candidate(pending)
    assert closed.status == "withdrawn"
    assert closed.withdrawn_reason == consent.WITHDRAWN_CANDIDATE
    assert service.registry.candidate(older).status == "superseded"  # unchanged
    assert service.registry.candidates(alice.id, pending_only=True) == []
    lines = [e for e in service.registry.audit(alice.id) if e.action == "candidates_withdrawn"]
    assert len(lines) == 1
    assert lines[0].details == {"candidate_ids": [pending], "reason": consent.WITHDRAWN_CANDIDATE}
    shown = client.get(f"/api/v1/candidates/{pending}", headers=bob.secret)
    assert shown.status_code == 200 and shown.json()["status"] == "withdrawn"

    # granting consent again does not reopen it: it waits for no review, ever
    grant(client, alice)
    for decision in ("approve", "reject"):
        answer = client.post(
            f"/api/v1/candidates/{pending}/review",
            headers=bob.secret,
            json={"decision": decision, "comment": "looked at it"},
        )
        assert answer.status_code == 400 and "is closed" in answer.json()["message"]
    assert service.registry.candidate(pending).status == "withdrawn"
    assert service.registry.active_model(alice.id).kind == "predefined"


def held_out_session(registry: Registry, individual: str, trained, shift: float):
    """What a personalization job hands the registry: a proposal, its model file not yet
    stored, and its held-out readings in the clear in artifacts/ (as `soft.session.record`
    writes them before registering)."""
    model = copy.deepcopy(trained.model)
    with torch.no_grad():
        next(model.parameters()).add_(shift)
    gates = [{"gate": "no_harm", "passed": True, "numbers": {}, "reason": "fine"}]
    record = CandidateRecord("TL(n=300)", model_bytes(model), 0.6, True, {}, gates, {})
    key = uuid.uuid4().hex
    folder = registry.root / "artifacts" / key
    folder.mkdir(parents=True)
    pd.DataFrame({"cgm": [140.0, 150.0]}).to_parquet(folder / "readings.parquet")
    summary = {"synthetic": True, "policy": trained.model.policy.to_dict(), "artifacts": key}
    return [record], summary, folder


def test_a_session_registered_after_the_withdrawal_is_refused(app, made, trained):
    client, service = app
    carol = made.people["carol"]
    registry = service.registry
    withdraw(client, carol)
    sessions = len(registry._query("SELECT id FROM sessions"))
    models = sorted(p.name for p in registry.models_dir.iterdir())
    records, summary, folder = held_out_session(registry, carol.id, trained, 0.03)
    with pytest.raises(consent.NotConsented, match="not registered"):
        registry.register_session(
            carol.id, registry.predefined().id, "hash", records, 0, summary, actor="t"
        )
    assert len(registry._query("SELECT id FROM sessions")) == sessions
    assert registry.candidates(carol.id, pending_only=False) == []
    assert not folder.exists()  # the held-out readings in the clear are gone
    assert sorted(p.name for p in registry.models_dir.iterdir()) == models
    grant(client, carol)


def test_a_job_running_at_the_withdrawal_registers_nothing(app, made, trained, monkeypatch):
    """The race: the worker checked its lease (`Lease.hold`, as `run_job` does before
    recording) and is storing its session when the patient withdraws. The registry's own
    transaction refuses it; no candidate awaits review, the job stays failed."""
    client, service = app
    alice = made.people["alice"]
    registry = service.registry
    job = client.post("/api/v1/personalization", headers=alice.secret)
    assert job.status_code == 202
    claimed = service.store.claim_job("test-worker", 60)
    assert claimed is not None and claimed.id == job.json()["id"]
    lease = Lease(service.store, claimed.id, "test-worker", 60)
    lease.hold()  # the worker begins recording: its lease was still its own

    models = sorted(p.name for p in registry.models_dir.iterdir())
    store_file = Registry._store_file

    def withdrawn_meanwhile(self, data: bytes) -> str:
        withdraw(client, alice)  # after registration began, before its transaction
        return store_file(self, data)

    monkeypatch.setattr(Registry, "_store_file", withdrawn_meanwhile)
    records, summary, folder = held_out_session(registry, alice.id, trained, 0.04)
    with pytest.raises(consent.NotConsented):
        registry.register_session(
            alice.id, registry.predefined().id, "hash", records, 0, summary, actor="job"
        )
    monkeypatch.undo()
    assert registry.candidates(alice.id, pending_only=True) == []
    assert not folder.exists()
    assert sorted(p.name for p in registry.models_dir.iterdir()) == models
    finished = service.store.job(claimed.id)
    assert finished.status == "failed" and finished.error == consent.WITHDRAWN_JOB
    with pytest.raises(LeaseLost):  # the worker's result is not its to record any more
        service.store.finish_job(claimed.id, "done", "test-worker", session_id=None)
    grant(client, alice)


def test_the_worker_of_a_job_withdrawn_while_recording_exits_without_a_result(
    app, made, trained, monkeypatch
):
    """`run_job` when the registry refuses its session: the job stays failed with the
    withdrawal's reason and the worker exits as one whose lease was taken (75)."""
    from tailorml.data import cohort as cohort_module
    from tailorml.data import prepared as prepared_module
    from tailorml.personalize import dataset as dataset_module
    from tailorml.service import jobs
    from tailorml.soft import session as session_module

    client, service = app
    alice = made.people["alice"]
    registry = service.registry
    job = client.post("/api/v1/personalization", headers=alice.secret).json()
    claimed = service.store.claim_job("test-worker", 60)
    assert claimed is not None and claimed.id == job["id"]
    lease = Lease(service.store, claimed.id, "test-worker", 60)
    records, summary, folder = held_out_session(registry, alice.id, trained, 0.05)

    def personalize(config, individual, actor, registry_dir, data, before_record):
        before_record()  # the lease is the worker's: it begins recording
        withdraw(client, alice)
        return registry.register_session(
            individual, registry.predefined().id, "hash", records, 0, summary, actor=actor
        )

    # the training itself is not this test's: every step before the registration stands in
    monkeypatch.setattr(jobs.ServerKey, "load", staticmethod(lambda *a: service.server_key))
    monkeypatch.setattr(
        cohort_module, "load_cohort", lambda *a: type("C", (), {"sample_minutes": 5})
    )
    monkeypatch.setattr(jobs, "person_frame", lambda *a: None)
    monkeypatch.setattr(jobs, "with_person", lambda *a: None)
    monkeypatch.setattr(prepared_module, "prepare_split", lambda *a: None)
    monkeypatch.setattr(dataset_module, "from_prepared", lambda *a: None)
    monkeypatch.setattr(session_module, "personalize_individual", personalize)
    with pytest.raises(LeaseLost, match="consent to personalization was withdrawn"):
        jobs.run_job(made.data, claimed.id, None, lease, made.database)
    monkeypatch.undo()
    finished = service.store.job(claimed.id)
    assert finished.status == "failed" and finished.error == consent.WITHDRAWN_JOB
    assert registry.candidates(alice.id, pending_only=True) == []
    assert not folder.exists()
    grant(client, alice)
