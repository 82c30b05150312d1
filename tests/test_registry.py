import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from multiprocessing import get_context

import pytest

from tailorml.errors import TailormlError
from tailorml.soft.registry import CandidateRecord, Registry

GATES = [
    {"gate": f"gate{i}", "passed": True, "numbers": {"i": i}, "reason": "ok"} for i in range(5)
]


def candidate(name, payload=b"weights", passed=True):
    return CandidateRecord(
        name=name,
        model_bytes=payload + name.encode(),
        threshold=0.4,
        passed_gates=passed,
        metrics={"fa": 1.0},
        gates=GATES,
        config={"method": name},
    )


@pytest.fixture
def registry(tmp_path):
    store = Registry(tmp_path / "registry")
    model = tmp_path / "predefined.pt"
    model.write_bytes(b"predefined weights")
    store.register_predefined(model, "cohort-hash", {"k": 1}, "abc123", "test predefined")
    return store


def session(store, individual="p1", proposal=1):
    return store.register_session(
        individual,
        store.predefined().id,
        "data-hash",
        [
            candidate("threshold", passed=True),
            candidate("TL", passed=True),
            candidate("bad", passed=False),
        ],
        proposal,
        {"note": "test"},
        actor="tester",
    )


def test_a_session_registers_candidates_gates_and_model_files(registry):
    session_id = session(registry)
    rows = registry.query(
        "SELECT * FROM candidates WHERE session_id = ? ORDER BY id", (session_id,)
    )
    assert [r["status"] for r in rows] == ["not_selected", "pending_review", "failed_gates"]
    assert len(registry.query("SELECT * FROM gate_results")) == 3 * 5
    for row in rows:
        record = registry.model(row["model_id"])
        registry.verify(record)  # file present and matching its hash
    assert registry.query("SELECT proposal_candidate_id FROM sessions")[0][0] == rows[1]["id"]


def test_approve_activates_and_rollback_returns_to_predefined(registry):
    session(registry)
    assert registry.active("p1")["kind"] == "predefined"
    proposed = registry.query(
        "SELECT id, model_id FROM candidates WHERE status = 'pending_review'"
    )[0]
    registry.decide(proposed["id"], "approve", "Dr. Rossi", "expert", "fewer false alarms")
    active = registry.active("p1")
    assert active["candidate_id"] == proposed["id"] and active["model_id"] == proposed["model_id"]
    assert active["reason"] == "approved by Dr. Rossi (expert): fewer false alarms"
    registry.rollback("p1", "patient felt alerts were late", actor="Dr. Rossi")
    active = registry.active("p1")
    assert active["candidate_id"] is None and active["kind"] == "predefined"
    assert [h["reason"].split(":")[0] for h in registry.history("p1")] == [
        "approved by Dr. Rossi (expert)",
        "rollback",
    ]
    actions = [entry["action"] for entry in registry.audit("p1")]
    assert actions == ["personalize", "approve", "rollback"]


def test_reject_keeps_the_active_model_and_only_proposals_can_be_decided(registry):
    session(registry)
    rows = registry.query("SELECT id, status FROM candidates ORDER BY id")
    registry.decide(rows[1]["id"], "reject", "patient", "user", "too many changes")
    assert registry.candidate(rows[1]["id"])["status"] == "rejected"
    assert registry.active("p1")["kind"] == "predefined"
    with pytest.raises(TailormlError, match="is 'failed_gates', not pending review"):
        registry.decide(rows[2]["id"], "approve", "someone", "expert", "")
    with pytest.raises(TailormlError, match="is 'rejected', not pending review"):
        registry.decide(rows[1]["id"], "approve", "someone", "expert", "")
    with pytest.raises(TailormlError, match="no candidate 999"):
        registry.decide(999, "approve", "someone", "expert", "")


def test_the_audit_log_is_append_only(registry):
    session(registry)
    connection = sqlite3.connect(registry.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        connection.execute("UPDATE audit_log SET actor = 'mallory'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        connection.execute("DELETE FROM audit_log")


def test_a_tampered_model_file_is_refused(registry):
    record = registry.predefined()
    record.path.write_bytes(b"something else")
    with pytest.raises(TailormlError, match="does not match its sha256"):
        registry.verify(record)


WRITER = textwrap.dedent("""
    import sys
    from tailorml.soft.registry import CandidateRecord, Registry
    store = Registry(sys.argv[1])
    predefined = store.predefined().id
    gates = [{"gate": f"g{i}", "passed": True, "numbers": {"i": i}, "reason": "x" * 200}
             for i in range(8)]
    n = 0
    while True:
        records = [CandidateRecord(f"c{k}", f"{sys.argv[2]}-{n}-{k}".encode() * 50, 0.5, True,
                                   {"m": k}, gates, {}) for k in range(30)]
        store.register_session(sys.argv[2], predefined, "h", records, 0, {"n": n})
        n += 1
        print(n, flush=True)
""")


def check_consistency(store: Registry) -> int:
    assert store.query("PRAGMA integrity_check")[0][0] == "ok"
    sessions = store.query("SELECT id, n_candidates, proposal_candidate_id FROM sessions")
    for row in sessions:
        candidates = store.query("SELECT id FROM candidates WHERE session_id = ?", (row["id"],))
        assert len(candidates) == row["n_candidates"]  # never half a session
        assert row["proposal_candidate_id"] == candidates[0]["id"]
        for found in candidates:
            gates = store.query(
                "SELECT COUNT(*) FROM gate_results WHERE candidate_id = ?", (found["id"],)
            )
            assert gates[0][0] == 8
    for model in store.query("SELECT sha256 FROM models"):
        assert store.model_path(model["sha256"]).exists()
    return len(sessions)


def test_killing_a_writer_mid_registration_leaves_no_half_registered_session(registry):
    for _ in range(3):
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(registry.root), "k"], stdout=subprocess.PIPE
        )
        process.stdout.readline()  # at least one session finished
        time.sleep(0.3)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert check_consistency(registry) >= 3


def _register_many(root: str, individual: str) -> None:
    store = Registry(root)
    for _ in range(15):
        store.register_session(
            individual, store.predefined().id, "h", [candidate("a"), candidate("b")], 0, {}
        )


def test_two_processes_can_register_at_the_same_time(registry):
    context = get_context("spawn")
    workers = [
        context.Process(target=_register_many, args=(str(registry.root), name))
        for name in ("p1", "p2")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    rows = registry.query("SELECT individual, COUNT(*) AS n FROM sessions GROUP BY individual")
    assert {row["individual"]: row["n"] for row in rows} == {"p1": 15, "p2": 15}
    assert registry.query("PRAGMA integrity_check")[0][0] == "ok"
