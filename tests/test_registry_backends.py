"""The model registry's contract on both backends: a data directory's SQLite file and a
PostgreSQL database (`store_location`, tests/postgres_fixtures.py), model files in the
directory either way. The registry's own tests (tests/test_registry.py) that go through
its typed API run here once per backend, unchanged; the rest says what PostgreSQL adds
(consent read from the people tables of the same database, decisions that take turns)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import tests.test_registry as contract

from tailorml.errors import TailormlError
from tailorml.registry import consent
from tailorml.registry.database import DATABASE_ERRORS, is_postgres_url
from tailorml.registry.models import Registry
from tailorml.registry.people import PeopleStore
from tailorml.service.auth import add_person


def open_registry(location, files: Path) -> Registry:
    """The registry where `location` says: a data directory, or a PostgreSQL URL (its model
    files then in `files`)."""
    if is_postgres_url(location):
        return Registry(files, database=str(location))
    return Registry(location)


@pytest.fixture
def registry(store_location, tmp_path) -> Registry:
    store = open_registry(store_location, tmp_path / "files")
    model = contract.tiny_model_file(tmp_path / "predefined.pt")
    store.register_predefined(model, "cohort-hash", {"k": 1}, "abc123", "test predefined")
    return store


@pytest.mark.parametrize(
    "case",
    [
        contract.test_a_session_registers_candidates_gates_and_model_files,
        contract.test_approve_activates_and_rollback_returns_to_predefined,
        contract.test_reject_keeps_the_active_model_and_only_proposals_can_be_decided,
        contract.test_a_tampered_model_file_is_refused,
        contract.test_register_session_returns_the_ids_callers_need,
        contract.test_candidate_views_decode_metrics_and_gates,
        contract.test_candidates_lists_exactly_the_pending_ones,
        contract.test_active_model_after_approval_and_rollback,
        contract.test_rollback_refuses_unknown_people_and_empty_reasons,
        contract.test_reviews_and_audit_are_typed_with_decoded_details,
        contract.test_candidate_names_in_a_session_are_distinct,
    ],
    ids=lambda case: case.__name__.removeprefix("test_")[:40],
)
def test_the_registry_contract(registry, case):
    case(registry)


def test_a_round_trip_with_serving_superseding_retiring_and_an_append_only_audit(registry):
    first = contract.session(registry)
    assert registry.serving(registry.predefined()) is not None  # its ONNX file and policy
    proposal = registry.candidate(first.proposal_candidate_id)
    assert registry.serving(registry.model(proposal.model_id)) is None  # bytes, not a model
    second = contract.session(registry)  # newer data: the first proposal is superseded
    assert registry.candidate(proposal.id).status == "superseded"
    with pytest.raises(TailormlError, match="superseded"):
        registry.decide(proposal.id, "approve", "Dr. Rossi", "expert", "")
    registry.decide(second.proposal_candidate_id, "approve", "Dr. Rossi", "expert", "ok")
    assert registry.active_model("p1").candidate_id == second.proposal_candidate_id
    retired = registry.retire("p1", "erased", "admin")
    assert registry.candidate(second.proposal_candidate_id).model_id in retired
    assert registry.active_model("p1").kind == "predefined"
    assert [e.action for e in registry.audit("p1")] == [
        "personalize",
        "personalize",
        "approve",
        "retire_models",
    ]
    for change in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with (
            pytest.raises(DATABASE_ERRORS, match="append-only"),
            registry.database.transaction() as connection,
        ):
            connection.execute(change)


def test_an_account_without_consent_gets_no_session_and_no_approval(store_location, tmp_path):
    """In the service's database the registry reads the people tables' consents
    (`consent.may_personalize`, a catalog check on each backend)."""
    people = PeopleStore(store_location)
    ann, _ = add_person(people, "ann", "patient", "test")
    registry = open_registry(store_location, tmp_path / "files")
    registry.register_predefined(
        contract.tiny_model_file(tmp_path / "predefined.pt"), "h", {}, None, "predefined"
    )
    proposed = contract.session(registry, ann.id).proposal_candidate_id
    people.set_consent(ann.id, False, "ann", "patient")
    assert registry.candidate(proposed).status == "withdrawn"
    with pytest.raises(TailormlError, match="withdrawn consent"):
        registry.decide(proposed, "approve", "Dr. Rossi", "expert", "")
    with pytest.raises(consent.NotConsented):
        contract.session(registry, ann.id)
    assert [s for s in [registry.latest_session(ann.id)]] == [
        registry.candidate(proposed).session_id
    ]
    # a cohort id (no account) may always be personalized
    assert contract.session(registry, "cohort-7").proposal_candidate_id is not None


def test_two_decisions_of_one_candidate_at_once_record_one(registry):
    """On PostgreSQL decisions run side by side: the candidate's row lock makes the second
    read the first's result, as SQLite's write lock does."""
    proposed = contract.session(registry).proposal_candidate_id
    start = threading.Barrier(4)
    outcomes: list[str] = []

    def decide(decision: str) -> None:
        start.wait()
        try:
            registry.decide(proposed, decision, "Dr. Rossi", "expert", decision)
            outcomes.append(decision)
        except TailormlError:
            outcomes.append("refused")

    threads = [threading.Thread(target=decide, args=(d,)) for d in ("approve", "reject") * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes).count("refused") == 3
    assert len(registry.reviews("p1")) == 1
    decided = next(o for o in outcomes if o != "refused")
    assert (registry.active_model("p1").kind == "personalized") == (decided == "approve")
