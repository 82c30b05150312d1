import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from multiprocessing import get_context
from pathlib import Path

import pytest

from tailorml.errors import TailormlError
from tailorml.registry.models import CandidateRecord, GateResult, Registry

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


PREDEFINED_THRESHOLD = 0.45  # the operating point saved in the predefined model file


def tiny_model_file(path: Path, threshold: float = PREDEFINED_THRESHOLD) -> Path:
    import torch

    from tailorml.models.cnn import CNNSpec, SmallCNN, save_model
    from tailorml.policy import AlertPolicy

    model = SmallCNN(CNNSpec(1, 8, 3, conv_channels=[2], hidden=4), torch.zeros(1), torch.ones(1))
    model.policy = AlertPolicy(threshold=threshold)
    save_model(model, path)
    return path


@pytest.fixture
def registry(tmp_path):
    store = Registry(tmp_path / "registry")
    model = tiny_model_file(tmp_path / "predefined.pt")
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


def sql(store: Registry, statement: str, parameters: tuple = ()) -> list[sqlite3.Row]:
    """Read the registry's tables directly (its file, or its PostgreSQL database): for
    invariants the typed API deliberately hides."""
    return store.database.query(statement, parameters)


def test_a_session_registers_candidates_gates_and_model_files(registry):
    session_id = session(registry).id
    rows = registry.session(session_id).candidates
    assert [r.status for r in rows] == ["not_selected", "pending_review", "failed_gates"]
    assert len(sql(registry, "SELECT * FROM gate_results")) == 3 * 5
    assert [len(r.gates) for r in rows] == [5, 5, 5]
    for row in rows:
        record = registry.model(row.model_id)
        registry.verify(record)  # file present and matching its hash
    assert registry.session(session_id).proposal_candidate_id == rows[1].id


def test_approve_activates_and_rollback_returns_to_predefined(registry):
    session(registry)
    assert registry.active_model("p1").kind == "predefined"
    proposed = registry.candidates(pending_only=True)[0]
    registry.decide(proposed.id, "approve", "Dr. Rossi", "expert", "fewer false alarms")
    active = registry.active_model("p1")
    assert active.candidate_id == proposed.id and active.model.id == proposed.model_id
    assert active.reason == "approved by Dr. Rossi (expert): fewer false alarms"
    registry.rollback("p1", "patient felt alerts were late", actor="Dr. Rossi")
    active = registry.active_model("p1")
    assert active.candidate_id is None and active.kind == "predefined"
    assert [h.reason.split(":")[0] for h in registry.history("p1")] == [
        "approved by Dr. Rossi (expert)",
        "rollback",
    ]
    actions = [entry.action for entry in registry.audit("p1")]
    assert actions == ["personalize", "approve", "rollback"]


def test_reject_keeps_the_active_model_and_only_proposals_can_be_decided(registry):
    session(registry)
    rows = registry.candidates(pending_only=False)
    registry.decide(rows[1].id, "reject", "patient", "user", "too many changes")
    assert registry.candidate(rows[1].id).status == "rejected"
    assert registry.active_model("p1").kind == "predefined"
    with pytest.raises(TailormlError, match="is 'failed_gates', not pending review"):
        registry.decide(rows[2].id, "approve", "someone", "expert", "")
    with pytest.raises(TailormlError, match="is 'rejected', not pending review"):
        registry.decide(rows[1].id, "approve", "someone", "expert", "")
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
    from tailorml.registry.models import CandidateRecord, Registry
    sys.stdin.readline()  # imported (torch, seconds): wait for the test's go
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
    assert sql(store, "PRAGMA integrity_check")[0][0] == "ok"
    sessions = sql(store, "SELECT id, n_candidates, proposal_candidate_id FROM sessions")
    for row in sessions:
        candidates = sql(store, "SELECT id FROM candidates WHERE session_id = ?", (row["id"],))
        assert len(candidates) == row["n_candidates"]  # never half a session
        assert row["proposal_candidate_id"] == candidates[0]["id"]
        for found in candidates:
            gates = sql(
                store, "SELECT COUNT(*) FROM gate_results WHERE candidate_id = ?", (found["id"],)
            )
            assert gates[0][0] == 8
    for model in sql(store, "SELECT sha256 FROM models"):
        assert store.model_path(model["sha256"]).exists()
    return len(sessions)


def test_killing_a_writer_mid_registration_leaves_no_half_registered_session(registry):
    # the three writers import at the same time; each writes only after the one before it
    # was killed
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(registry.root), "k"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    try:
        for process in processes:
            process.stdin.write(b"go\n")
            process.stdin.flush()
            process.stdout.readline()  # at least one session finished
            time.sleep(0.3)
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    finally:
        for process in processes:
            process.kill()
            process.communicate()  # reaped, pipes closed
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
    rows = sql(registry, "SELECT individual, COUNT(*) AS n FROM sessions GROUP BY individual")
    assert {row["individual"]: row["n"] for row in rows} == {"p1": 15, "p2": 15}
    assert sql(registry, "PRAGMA integrity_check")[0][0] == "ok"


# -- the typed API ---------------------------------------------------------------------------


def two_candidates(store, individual="p1"):
    """A session with two candidates that passed their gates; the second one is proposed."""
    first = CandidateRecord("first", b"w1", 0.3, True, {"fa": 2.0}, GATES[:2], {})
    second = CandidateRecord("second", b"w2", 0.35, True, {"fa": 1.5}, GATES[2:], {})
    return store.register_session(
        individual, store.predefined().id, "h", [first, second], 1, {"note": individual}
    )


def test_register_session_returns_the_ids_callers_need(registry):
    record = two_candidates(registry)
    assert list(record.candidate_ids) == ["first", "second"]
    assert record.proposal_candidate_id == record.candidate_ids["second"]
    view = registry.session(record.id)
    assert view.individual == "p1" and view.summary == {"note": "p1"}
    assert [c.id for c in view.candidates] == list(record.candidate_ids.values())
    assert view.proposal_candidate_id == record.proposal_candidate_id
    assert view.refused_reason is None


def test_candidate_views_decode_metrics_and_gates(registry):
    record = two_candidates(registry)
    found = registry.candidate(record.candidate_ids["first"])
    assert (found.name, found.individual, found.session_id) == ("first", "p1", record.id)
    assert found.threshold == 0.3 and found.passed_gates is True
    assert found.status == "not_selected" and found.metrics == {"fa": 2.0}
    assert found.gates == [
        GateResult("gate0", True, {"i": 0}, "ok"),
        GateResult("gate1", True, {"i": 1}, "ok"),
    ]
    assert found.created == registry.session(record.id).created
    assert [g.numbers for g in registry.candidate(record.proposal_candidate_id).gates] == [
        {"i": 2},
        {"i": 3},
        {"i": 4},
    ]
    with pytest.raises(TailormlError, match="no candidate 999"):
        registry.candidate(999)
    with pytest.raises(TailormlError, match="no personalization session 999"):
        registry.session(999)


def test_candidates_lists_exactly_the_pending_ones(registry):
    p1 = two_candidates(registry, "p1")
    p2 = two_candidates(registry, "p2")
    pending = [p1.proposal_candidate_id, p2.proposal_candidate_id]
    assert [c.id for c in registry.candidates()] == pending
    assert [c.id for c in registry.candidates("p2")] == [p2.proposal_candidate_id]
    everything = registry.candidates(pending_only=False)
    assert [c.id for c in everything] == [*p1.candidate_ids.values(), *p2.candidate_ids.values()]
    registry.decide(p1.proposal_candidate_id, "reject", "Dr. Rossi", "expert", "")
    assert [c.id for c in registry.candidates()] == [p2.proposal_candidate_id]
    assert [c.status for c in registry.candidates("p1", pending_only=False)] == [
        "not_selected",
        "rejected",
    ]


def test_active_model_after_approval_and_rollback(registry):
    record = two_candidates(registry)
    predefined = registry.predefined()
    before = registry.active_model("p1")
    assert before.kind == "predefined" and before.model == predefined
    assert before.threshold is None and before.candidate_id is None and before.created is None
    chosen = record.proposal_candidate_id
    decided = registry.decide(chosen, "approve", "Dr. Rossi", "expert", "fewer alarms")
    assert decided.id == chosen and decided.status == "approved"
    active = registry.active_model("p1")
    assert active.kind == "personalized" and active.candidate_id == chosen
    assert active.threshold == 0.35 and active.actor == "Dr. Rossi"
    assert active.model.id == decided.model_id and active.model.kind == "candidate"
    assert active.model.path == registry.model_path(active.model.sha256)
    registry.verify(active.model)
    assert registry.active_model("p2").kind == "predefined"  # other individuals unaffected
    back = registry.rollback("p1", "alerts felt late", actor="nurse")
    assert back == registry.active_model("p1")
    assert back.kind == "predefined" and back.model == predefined and back.candidate_id is None
    # back at the predefined model's own operating point, read from its file
    assert back.threshold == PREDEFINED_THRESHOLD and back.reason == "rollback: alerts felt late"
    assert back.load().policy.threshold == PREDEFINED_THRESHOLD
    history = registry.history("p1")
    assert [(h.candidate_id, h.threshold, h.actor) for h in history] == [
        (chosen, 0.35, "Dr. Rossi"),
        (None, PREDEFINED_THRESHOLD, "nurse"),
    ]


def test_rollback_refuses_unknown_people_and_empty_reasons(registry):
    session(registry)
    with pytest.raises(TailormlError, match="'nobody-123' has never been personalized"):
        registry.rollback("nobody-123", "typo")
    with pytest.raises(TailormlError, match="needs a reason"):
        registry.rollback("p1", "  ")
    assert registry.history("p1") == []  # nothing was recorded


def test_commands_that_read_need_an_existing_registry(tmp_path, registry):
    with pytest.raises(TailormlError, match=r"no registry at .*regsitry; check --registry"):
        Registry.existing(tmp_path / "regsitry")
    assert not (tmp_path / "regsitry").exists()  # a typo creates nothing
    assert Registry.existing(registry.root).predefined() == registry.predefined()
    (tmp_path / "file").write_text("x")
    with pytest.raises(TailormlError, match="is a file"):
        Registry(tmp_path / "file")


def test_reviews_and_audit_are_typed_with_decoded_details(registry):
    record = two_candidates(registry)
    registry.decide(record.proposal_candidate_id, "reject", "Ann", "user", "too different")
    (review,) = registry.reviews("p1")
    assert (review.candidate_id, review.candidate_name) == (record.proposal_candidate_id, "second")
    assert (review.reviewer, review.role, review.decision, review.comment) == (
        "Ann",
        "user",
        "reject",
        "too different",
    )
    assert registry.reviews("p2") == []
    entries = registry.audit("p1")
    assert [e.action for e in entries] == ["personalize", "reject"]
    assert entries[0].details == {
        "session_id": record.id,
        "candidates": 2,
        "proposal_candidate_id": record.proposal_candidate_id,
        "refused_reason": None,
    }
    assert entries[1].details["comment"] == "too different"
    assert [e.action for e in registry.audit()] == ["register_predefined", "personalize", "reject"]


def test_candidate_names_in_a_session_are_distinct(registry):
    with pytest.raises(TailormlError, match="must be distinct"):
        registry.register_session(
            "p1", registry.predefined().id, "h", [candidate("a"), candidate("a")], None, {}
        )


SQL_OUTSIDE_THE_REGISTRY = re.compile(r"SELECT |INSERT |UPDATE |\.query\(")


def test_no_sql_outside_the_registry_package():
    package = Path(__file__).resolve().parents[1] / "src" / "tailorml"
    registry_package = package / "registry"
    offenders = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*"))
        if path.is_file() and path.suffix in (".py", ".j2") and registry_package not in path.parents
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if SQL_OUTSIDE_THE_REGISTRY.search(line)
    ]
    assert not offenders, "SQL outside tailorml/registry/:\n" + "\n".join(offenders)


def test_a_card_for_a_hostile_id_stays_inside_the_registry(registry):
    """Ids are data, not paths: '../../../x' becomes one encoded file name under cards/."""
    from tailorml.soft.card import render_card

    hostile = "../../../x"
    data_gate = {
        "gate": "data_sufficiency",
        "passed": False,
        "reason": "2.0 days of data, need 7",
        "numbers": {"days": 2.0, "hypo_events": 1, "hyper_events": 1, "missing_fraction": 0.0}
        | {"low_mgdl": 70.0, "high_mgdl": 180.0}
        | {"fraction_low": 0.1, "fraction_in_range": 0.8, "fraction_high": 0.1},
    }
    record = registry.register_session(
        hostile,
        registry.predefined().id,
        "data-hash",
        [],
        None,
        {"synthetic": True, "data_gate": data_gate},
        refused_reason="2.0 days of data, need 7",
        actor="tester",
    )
    card = render_card(registry, record.id)
    assert card.parent == registry.root / "cards"
    assert card.name == "%2E.%2F..%2F..%2Fx.html"
    assert not (registry.root.parent.parent.parent / "x.html").exists()


def test_a_file_that_is_not_a_registry_and_an_impossible_id_are_clear_errors(tmp_path, registry):
    folder = tmp_path / "badreg"
    folder.mkdir()
    (folder / "registry.sqlite").write_text("not a database\n" * 100)
    with pytest.raises(TailormlError, match=r"registry\.sqlite is not a tailorml registry"):
        Registry.existing(folder)
    for huge in (10**20, -(10**20)):
        with pytest.raises(TailormlError, match=f"no candidate {huge}"):
            registry.candidate(huge)
        with pytest.raises(TailormlError, match=f"no candidate {huge}"):
            registry.decide(huge, "approve", "Ann", "expert", "")
    assert not registry.knows("p1")
    session(registry)
    assert registry.knows("p1") and not registry.knows("nobody")


def rollout_session(store, individual, before, after):
    """A session whose predefined model and proposal reached `before` / `after` held-out
    hypo sensitivity (None: no held-out event)."""
    records = [
        CandidateRecord("predefined", b"", 0.45, False, {"hypo_sensitivity": before}, GATES, {}),
        CandidateRecord(
            "TL", f"w-{individual}".encode(), 0.4, True, {"hypo_sensitivity": after}, GATES, {}
        ),
    ]
    return store.register_session(individual, store.predefined().id, "h", records, 1, {})


def test_a_rollout_approves_the_groups_that_pass_and_holds_back_the_others(registry):
    from tailorml.soft.rollout import apply_rollout, check_rollout, pending_rollout

    # group x: worst case 0.5 -> 0.75 (passes); group y: worst case 1.0 -> 0.5 (held back);
    # z's proposal has no held-out event after: it does not count, z passes
    for individual, before, after in [
        ("a", 0.5, 0.75),
        ("b", 1.0, 1.0),
        ("c", 1.0, 0.5),
        ("d", 1.0, 1.0),
        ("e", None, None),
    ]:
        rollout_session(registry, individual, before, after)
    groups = {"a": "x", "b": "x", "c": "y", "d": "y"}  # e is not in the cohort
    table = pending_rollout(registry, groups)
    assert table["individual"].tolist() == ["a", "b", "c", "d", "e"]
    assert table["group"].tolist() == ["x", "x", "y", "y", "unknown"]
    assert table["sensitivity_before"].tolist()[:4] == [0.5, 1.0, 1.0, 1.0]
    check = check_rollout(table)
    assert check.held_back == ["y"]
    approved, held = apply_rollout(registry, table, check, "dr-x", "weekly roll-out")
    ids = dict(zip(table["individual"], table["candidate"], strict=True))
    assert approved == [ids["a"], ids["b"], ids["e"]] and held == [ids["c"], ids["d"]]
    assert registry.active_model("a").kind == "personalized"
    assert registry.active_model("c").kind == "predefined"
    assert registry.candidate(ids["c"]).status == "pending_review"  # still a reviewer's call
    noted = [e for e in registry.audit("c") if e.action == "rollout_held_back"]
    assert noted and noted[0].details == {
        "candidate": ids["c"],
        "group": "y",
        "comment": "weekly roll-out",
    }
    review = registry.reviews("a")[0]
    assert review.reviewer == "dr-x"
    assert review.comment == "population roll-out check: group x passed. weekly roll-out"
    assert pending_rollout(registry, groups)["individual"].tolist() == ["c", "d"]


def test_review_rollout_reports_then_approves_on_the_command_line(registry, write_cohort):
    from typer.testing import CliRunner

    from conftest import cohort_frame
    from tailorml.cli import app

    frame = cohort_frame({"a": [100.0] * 3, "b": [100.0] * 3})
    frame.loc[frame["patient_id"] == "b", "group"] = "child"
    cohort = write_cohort(frame)
    rollout_session(registry, "a", 0.5, 1.0)  # adult: 0.5 -> 1.0 passes
    rollout_session(registry, "b", 1.0, 0.5)  # child: 1.0 -> 0.5 held back
    base = ["review", "rollout", "--registry", str(registry.root), "--cohort", str(cohort)]
    runner = CliRunner()
    report = runner.invoke(app, base)
    assert report.exit_code == 0, report.output
    assert "Held back: group child (worst-case hypo sensitivity 1.00 -> 0.50): b" in " ".join(
        report.output.split()
    )
    assert "Nothing decided" in report.output
    assert registry.active_model("a").kind == "predefined"
    refused = runner.invoke(app, [*base, "--approve"])
    assert refused.exit_code != 0 and "--approve needs --reviewer" in str(refused.exception)
    done = runner.invoke(app, [*base, "--approve", "--reviewer", "dr-x"])
    assert done.exit_code == 0, done.output
    assert "Approved 1 proposal(s): [" in done.output and "Held back 1 proposal(s)" in done.output
    assert registry.active_model("a").kind == "personalized"
    assert registry.active_model("b").kind == "predefined"
