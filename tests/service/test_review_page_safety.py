"""The review page's safety fixes: a phone viewport, `?done=` shows fixed messages only, the
patient by name, a candidate's page embeds its own session's card (not the newest), an
older proposal is superseded by a newer session's and cannot be approved, and the card
points at the page's buttons instead of a command line."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import make_service_data
from tests.service.review_helpers import register, signed_in

from tailorml.errors import TailormlError
from tailorml.registry.models import SUPERSEDED, Registry
from tailorml.service.app import create_app
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained):
    return make_service_data(tmp_path_factory.mktemp("review-safety"), trained)


@pytest.fixture(scope="module")
def service(made):
    return Service(made.data, ServerKey.load(made.key_file, made.data))


@pytest.fixture(scope="module")
def bob(made, service):
    with TestClient(create_app(service, run_jobs=False)) as client:
        yield signed_in(client, made.people["bob"].token)


def test_pages_have_a_viewport_and_done_shows_only_known_messages(bob):
    page = bob.get("/review")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page.text
    hostile = bob.get("/review", params={"done": "<script>alert(1)</script>Approved!"})
    assert "alert(1)" not in hostile.text and "Approved!" not in hostile.text
    assert 'id="message"' not in hostile.text
    known = bob.get("/review", params={"done": "rolled_back"})
    assert "Rolled back: the patient is back on the predefined model." in known.text


def test_the_patient_is_named_and_the_card_is_the_candidates_own(made, service, bob, trained):
    alice = made.people["alice"]
    first = register(service, alice.id, trained, shift=0.01)
    second = register(service, alice.id, trained, shift=0.02)
    page = bob.get(f"/review/candidates/{first}")
    assert page.status_code == 200
    assert f"Candidate {first} for alice" in page.text
    assert f'src="/review/candidates/{first}/card"' in page.text
    own = bob.get(f"/review/candidates/{first}/card").text
    newest = bob.get(f"/review/candidates/{second}/card").text
    first_session = service.registry.candidate(first).session_id
    second_session = service.registry.candidate(second).session_id
    assert f"personalization session {first_session} " in own
    assert f"personalization session {second_session} " in newest
    assert "<h1>Model card: alice" in own and f"{alice.id}</span></h1>" in own
    assert "tailorml review approve" not in own + newest
    assert f'href="/review/candidates/{second}" target="_top"' in newest
    assert '<meta name="viewport"' in own


def test_an_older_proposal_is_superseded_and_cannot_be_approved(made, service, bob, trained):
    carol = made.people["carol"]
    service.store.assign(made.people["bob"].id, carol.id, "test")
    older = register(service, carol.id, trained, shift=0.03)
    newer = register(service, carol.id, trained, shift=0.04)
    registry = Registry(made.data)
    assert registry.candidate(older).status == SUPERSEDED
    assert registry.candidate(older).superseded_by == newer
    assert registry.candidate(newer).status == "pending_review"
    assert [c.id for c in registry.candidates(carol.id)] == [newer]  # pending only
    with pytest.raises(TailormlError, match=f"superseded by candidate {newer}"):
        registry.decide(older, "approve", "bob", "expert", "looks good")
    page = bob.get(f"/review/candidates/{older}")
    assert 'id="superseded"' in page.text and 'id="approve"' not in page.text
    audit = [e for e in registry.audit(carol.id) if e.action == "personalize"]
    assert audit[-1].details["superseded_candidate_ids"] == [older]
    assert registry.active_model(carol.id).kind == "predefined"


def test_a_registry_from_before_superseding_is_migrated(made, service, trained, tmp_path):
    """A file written before the column: opening it adds the column and supersedes the
    older of two pending proposals of one person."""
    import shutil
    import sqlite3

    copy = tmp_path / "old"
    shutil.copytree(made.data, copy)
    alice = made.people["alice"].id
    first = register(Service(copy, ServerKey.load(made.key_file, copy)), alice, trained, 0.05)
    with sqlite3.connect(copy / "registry.sqlite") as connection:
        connection.execute("ALTER TABLE candidates DROP COLUMN superseded_by")
        # a second proposal registered by the old code: both pending
        session = connection.execute(
            "SELECT * FROM sessions WHERE proposal_candidate_id = ?", (first,)
        ).fetchone()
        connection.execute(
            "INSERT INTO sessions (individual, created, actor, predefined_model_id, data_hash,"
            " n_candidates, summary_json) SELECT individual, created, actor,"
            " predefined_model_id, data_hash, n_candidates, '{}' FROM sessions WHERE id = ?",
            (session[0],),
        )
        newest = connection.execute("SELECT MAX(id) FROM sessions").fetchone()[0]
        connection.execute(
            "INSERT INTO candidates (session_id, individual, model_id, name, threshold,"
            " passed_gates, status, metrics_json) SELECT ?, individual, model_id, name,"
            " threshold, passed_gates, status, metrics_json FROM candidates WHERE id = ?",
            (newest, first),
        )
        second = connection.execute("SELECT MAX(id) FROM candidates").fetchone()[0]
        connection.execute(
            "UPDATE sessions SET proposal_candidate_id = ? WHERE id = ?", (second, newest)
        )
    registry = Registry(copy)
    assert registry.candidate(first).status == SUPERSEDED
    assert registry.candidate(second).status == "pending_review"
    assert Registry(copy).candidate(first).superseded_by == second  # idempotent
