"""The patient's own page (`/me`, issue 36 item 3): a patient who signs in sees their own
data, model and consent switches, downloads their export and asks for erasure, each form
with its session's token."""

from __future__ import annotations

import json
import re

from fastapi.testclient import TestClient
from tests.service.review_helpers import form_token, signed_in


def test_a_patient_signs_in_to_her_own_page(app, made):
    client, _ = app
    alice = made.people["alice"]
    with TestClient(client.app) as browser:
        signed_in(browser, alice.token)
        landing = browser.get("/review", follow_redirects=False)
        assert landing.status_code == 303 and landing.headers["location"] == "/me"
        page = browser.get("/me")
        assert page.status_code == 200
        assert 'name="viewport"' in page.text
        # one script, a file of this server (Web Push): no inline script
        assert re.findall(r"<script[^>]*>[^<]*</script>", page.text) == [
            '<script src="/static/push.js" defer></script>'
        ]
        assert 'id="consent-personalization" checked' in page.text
        assert 'id="consent-bob" checked' in page.text
        assert 'id="export"' in page.text and 'id="erase"' in page.text
        assert "alice: the last 14 days" in page.text and "Active model: <b>predefined" in page.text
    bob = made.people["bob"]
    with TestClient(client.app) as browser:  # a clinician has no such page
        signed_in(browser, bob.token)
        assert browser.get("/me", follow_redirects=False).headers["location"] == "/review"


def test_the_switches_grant_and_withdraw(app, made):
    client, service = app
    alice, bob = made.people["alice"], made.people["bob"]
    with TestClient(client.app) as browser:
        signed_in(browser, alice.token)
        token = form_token(browser.get("/me").text)
        shown = f"personalization,{bob.id}"
        forged = browser.post("/me/consent", data={"shown": shown}, follow_redirects=False)
        assert forged.status_code == 403 and service.store.patients_of(bob.id) == [alice.id]
        # bob's box unchecked (a browser sends no field for it), personalization checked
        saved = browser.post(
            "/me/consent",
            data={"csrf": token, "shown": shown, "personalization": "on"},
            follow_redirects=False,
        )
        assert saved.headers["location"] == "/me?done=consent"
        assert service.store.patients_of(bob.id) == [] and service.store.consented(alice.id)
        page = browser.get("/me?done=consent").text
        assert 'id="consent-bob">' in page and "your consent is recorded" in page
        browser.post(
            "/me/consent",
            data={"csrf": token, "shown": shown, f"clinician-{bob.id}": "on"},
        )
        assert service.store.patients_of(bob.id) == [alice.id]
        assert not service.store.consented(alice.id)
        browser.post(
            "/me/consent",
            data={
                "csrf": token,
                "shown": shown,
                "personalization": "on",
                f"clinician-{bob.id}": "on",
            },
        )
        assert service.store.consented(alice.id)


def test_the_export_is_a_download_of_the_apis_export(app, made):
    client, _ = app
    alice = made.people["alice"]
    with TestClient(client.app) as browser:
        signed_in(browser, alice.token)
        token = form_token(browser.get("/me").text)
        assert browser.post("/me/export", data={}).status_code == 403  # no form token
        answer = browser.post("/me/export", data={"csrf": token})
    assert answer.status_code == 200
    assert (
        answer.headers["content-disposition"] == f'attachment; filename="tailorml-{alice.id}.json"'
    )
    assert answer.headers["cache-control"] == "no-store"
    exported = json.loads(answer.text)
    api = client.get("/api/v1/people/me/export", headers=alice.secret).json()
    assert (
        exported["person"] == api["person"] == {"id": alice.id, "name": "alice", "role": "patient"}
    )
    assert exported["consents"] == api["consents"] and len(api["consents"]) >= 2
    # the API's export does not take the page's cookie
    assert client.get("/api/v1/people/me/export").status_code == 401


def test_erasure_asks_for_the_id_then_erases_and_signs_out(app, made):
    client, service = app
    carol = made.people["carol"]
    client.post(
        "/api/v1/entries", headers=carol.secret, json=[{"sgv": 120, "date": 1_765_000_000_000}]
    )
    with TestClient(client.app) as browser:
        signed_in(browser, carol.token)
        token = form_token(browser.get("/me").text)
        asked = browser.post("/me/erase", data={"csrf": token})
        assert asked.status_code == 200 and f"Type your id, <code>{carol.id}</code>" in asked.text
        wrong = browser.post("/me/erase", data={"csrf": token, "confirm": "p-000000000000"})
        assert wrong.status_code == 400 and service.store.person(carol.id).erased is None
        done = browser.post("/me/erase", data={"csrf": token, "confirm": carol.id})
        assert done.status_code == 200 and "1 readings" in done.text
        assert browser.get("/me", follow_redirects=False).headers["location"] == "/login"
    assert service.store.person(carol.id).erased is not None
    assert client.get("/api/v1/entries", headers=carol.secret).status_code == 401
