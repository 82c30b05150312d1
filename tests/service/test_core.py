"""The service's rules called directly (no HTTP): paging through sealed filters, a model
that cannot run, and a personalization session's tables sealed with the person's key."""

from __future__ import annotations

import pytest
from tests.service.conftest import make_service_data, propose_candidate

from tailorml.service.artifacts import seal_session, sealed_reader
from tailorml.service.auth import AccessDenied
from tailorml.service.core import Service
from tailorml.service.crypto import DecryptionError, ServerKey


@pytest.fixture
def service(tmp_path, trained):
    made = make_service_data(tmp_path, trained)
    return Service(made.data, ServerKey.load(made.key_file, made.data)), made


def test_a_type_filter_pages_through_sealed_records(service):
    core, _ = service
    alice = core.store.by_name("alice")
    start = 1_600_000_000_000
    entries = [
        {"type": "sgv" if i % 3 == 0 else "mbg", "sgv": 40 + i // 3, "mbg": 90, "date": start + i}
        for i in range(1500)
    ]
    core.upload_entries(alice, entries)
    found = core.entries(alice, None, 400, None, None, "sgv")
    # sgv are the 500 entries with i % 3 == 0 (sgv 40 + i // 3); the newest 400 are
    # i = 1497, 1494, ..., 300
    assert [e["sgv"] for e in found] == [40 + i // 3 for i in range(1497, 299, -3)]
    # inside a date range: i from 10 to 20 with i % 3 == 0, newest first
    within = core.entries(alice, None, 10, start + 10, start + 20, "sgv")
    assert [e["sgv"] for e in within] == [46, 45, 44]


def test_a_model_that_cannot_run_stores_the_reading_and_says_so(service, monkeypatch):
    core, _ = service
    carol = core.store.by_name("carol")

    def broken(person_id):
        raise RuntimeError("onnxruntime crashed")

    monkeypatch.setattr(core.runtimes, "for_person", broken)
    stored, decisions = core.upload_entries(
        carol, [{"type": "sgv", "sgv": 99, "date": 1_600_000_000_000}]
    )
    assert len(stored) == 1 and len(core.entries(carol, None, 10, None, None, None)) == 1
    assert [d.decision for d in decisions] == ["no_decision"]
    current = core.alerts(carol, None, 1, None, None)[0]
    assert current["decision"] == "no_decision" and current["threshold"] is None
    assert "the model could not run (RuntimeError)" in current["reason"]


def test_a_sessions_tables_are_sealed_and_the_card_is_drawn_from_them(service, trained):
    core, made = service
    alice, bob, carol, mallory = map(core.store.by_name, ("alice", "bob", "carol", "mallory"))
    candidate = propose_candidate(made.data, alice.id, trained, tables=True)
    session_id = core.registry.candidate(candidate).session_id
    folder = made.data / "artifacts" / "0123456789abcdef"
    clear = (folder / "readings.parquet").read_bytes()

    assert seal_session(core.registry, session_id, core.keyring.cipher(alice.id)) == 2
    assert sorted(p.name for p in folder.iterdir()) == [
        "predictions.parquet.sealed",
        "readings.parquet.sealed",
    ]
    sealed = (folder / "readings.parquet.sealed").read_bytes()
    assert b"PAR1" not in sealed and clear[:64] not in sealed  # parquet's magic is gone

    card = core.card_html(bob, alice.id)  # her assigned clinician
    assert "Model card" in card and "data:image/png;base64," in card  # the trace plot
    assert core.card_html(carol, None) is None  # no session yet
    with pytest.raises(AccessDenied):
        core.card_html(mallory, alice.id)

    # another person's key does not open them, nor does one table under the other's name
    with pytest.raises(DecryptionError):
        sealed_reader(core.keyring.cipher(carol.id))(folder / "readings.parquet")
    (folder / "readings.parquet.sealed").rename(folder / "swap")
    (folder / "predictions.parquet.sealed").rename(folder / "readings.parquet.sealed")
    with pytest.raises(DecryptionError):
        sealed_reader(core.keyring.cipher(alice.id))(folder / "readings.parquet")


def test_erasure_removes_what_the_sessions_learned_from_the_person(service, trained):
    core, made = service
    alice = core.store.by_name("alice")
    candidate = propose_candidate(made.data, alice.id, trained)
    before = core.registry.candidate(candidate)
    assert before.metrics and before.gates[0].reason == "fine"  # the fixture's gate
    core.erase(alice, "test")
    after = core.registry.candidate(candidate)
    assert after.metrics == {} and all(gate.numbers == {} for gate in after.gates)
    assert all(gate.reason.startswith("removed: ") for gate in after.gates)
    summary = core.registry.session(before.session_id).summary
    assert summary == {"erased": "the person's data was erased"}
    assert (after.id, after.name, after.status) == (before.id, before.name, before.status)
