"""Approve and reject need a comment and a confirmation; the comment is in the review record
and the audit log. A personalized model can be rolled back from the patient's page (the same
`Service.rollback` as POST /api/v1/model/rollback), with a reason and a confirmation."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import make_service_data
from tests.service.review_helpers import form_token, register, signed_in

from tailorml.service.app import create_app
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained):
    return make_service_data(tmp_path_factory.mktemp("review-decide"), trained)


@pytest.fixture(scope="module")
def service(made):
    return Service(made.data, ServerKey.load(made.key_file, made.data), database=made.database)


@pytest.fixture(scope="module")
def app(service):
    return create_app(service, run_jobs=False)


@pytest.fixture
def bob(made, app):
    with TestClient(app) as client:
        yield signed_in(client, made.people["bob"].token)


def test_an_empty_comment_is_refused_and_nothing_recorded(made, service, bob, trained):
    alice = made.people["alice"]
    candidate = register(service, alice.id, trained, shift=0.01)
    csrf = form_token(bob.get(f"/review/candidates/{candidate}").text)
    refused = bob.post(
        f"/review/candidates/{candidate}",
        data={"csrf": csrf, "decision": "approve", "comment": "   ", "confirm": "yes"},
    )
    assert refused.status_code == 400
    assert "Not recorded: write a comment" in refused.text
    assert service.registry.candidate(candidate).status == "pending_review"
    assert service.registry.reviews(alice.id) == []


def test_approval_is_confirmed_before_it_is_recorded(made, service, bob, trained):
    alice = made.people["alice"]
    candidate = register(service, alice.id, trained, shift=0.02)
    csrf = form_token(bob.get(f"/review/candidates/{candidate}").text)
    asked = bob.post(
        f"/review/candidates/{candidate}",
        data={"csrf": csrf, "decision": "approve", "comment": "fewer missed lows"},
    )
    assert asked.status_code == 200 and 'id="confirm"' in asked.text
    assert f"Approve candidate {candidate} for alice?" in asked.text
    assert service.registry.candidate(candidate).status == "pending_review"  # not yet
    done = bob.post(
        f"/review/candidates/{candidate}",
        data={
            "csrf": csrf,
            "decision": "approve",
            "comment": "fewer missed lows",
            "confirm": "yes",
        },
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/review/candidates/{candidate}?done=approved"
    page = bob.get(done.headers["location"])
    assert "now the patient&#39;s active model" in page.text
    review = service.registry.reviews(alice.id)[-1]
    assert (review.candidate_id, review.decision, review.comment) == (
        candidate,
        "approve",
        "fewer missed lows",
    )
    audit = [e for e in service.registry.audit(alice.id) if e.action == "approve"][-1]
    assert audit.details["comment"] == "fewer missed lows" and audit.actor == "bob"
    assert service.registry.active_model(alice.id).candidate_id == candidate


def test_rollback_from_the_patients_page(made, service, bob, trained, app):
    alice = made.people["alice"]
    if service.registry.active_model(alice.id).kind != "personalized":
        candidate = register(service, alice.id, trained, shift=0.03)
        service.review(service.store.person(made.people["bob"].id), candidate, "approve", "ok")
    page = bob.get(f"/review/patients/{alice.id}")
    assert 'id="rollback"' in page.text
    csrf = form_token(page.text)
    url = f"/review/patients/{alice.id}/rollback"
    empty = bob.post(url, data={"csrf": csrf, "reason": ""})
    assert empty.status_code == 400 and "Not rolled back: write the reason" in empty.text
    asked = bob.post(url, data={"csrf": csrf, "reason": "too many false alarms at night"})
    assert 'id="confirm-rollback"' in asked.text
    assert service.registry.active_model(alice.id).kind == "personalized"
    no_token = bob.post(url, data={"reason": "x", "confirm": "yes"})
    assert no_token.status_code == 403
    done = bob.post(
        url,
        data={"csrf": csrf, "reason": "too many false alarms at night", "confirm": "yes"},
        follow_redirects=False,
    )
    assert done.headers["location"] == f"/review/patients/{alice.id}?done=rolled_back"
    active = service.registry.active_model(alice.id)
    assert active.kind == "predefined"
    assert active.reason == "rollback: too many false alarms at night"
    assert 'id="rollback"' not in bob.get(f"/review/patients/{alice.id}").text
    # a clinician not assigned to alice, and alice herself, get no button and cannot post
    with TestClient(app) as other:
        mallory = signed_in(other, made.people["mallory"].token)
        assert mallory.get(f"/review/patients/{alice.id}").status_code == 403
    with TestClient(app) as own:
        herself = signed_in(own, alice.token)
        assert 'id="rollback"' not in herself.get(f"/review/patients/{alice.id}").text
