"""The review page in a real browser (Debian's Chromium, headless, driven by Playwright):
`make test-browser`. Not part of `make test`: it needs the system browser."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.service.conftest import propose_candidate

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("TAILORML_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no browser at {CHROMIUM}: apt-get install chromium, or set TAILORML_CHROMIUM")
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


def sign_in(browser, server, token):
    page = browser.new_context().new_page()
    page.goto(server.url + "/review")
    assert page.url.endswith("/login")
    page.fill("#token", token)
    page.click("#sign-in")
    page.wait_for_url(server.url + "/review")
    return page


def test_a_clinician_reviews_and_approves_in_the_browser(
    browser, server, service_data, trained, tmp_path
):
    alice, bob = service_data.people["alice"], service_data.people["bob"]
    candidate = propose_candidate(service_data.data, alice.id, trained, shift=0.05)
    page = sign_in(browser, server, bob.token)
    assert "alice" in page.inner_text("body")
    page.click(f"a[href='/review/candidates/{candidate}']")
    page.wait_for_url(f"**/review/candidates/{candidate}")
    assert page.inner_text("#status") == "pending_review"
    assert "no_harm" in page.inner_text("#gates")
    card = page.frame_locator("iframe")
    assert "Model card" in card.locator("h1").inner_text()
    page.fill("#comment", "reviewed in the browser")
    page.click("#approve")
    page.wait_for_selector("#message")
    assert "approved" in page.inner_text("#message")
    assert page.inner_text("#status") == "approved"
    page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
    page.goto(server.url + "/review")  # the overview links the newest session's card
    page.click("a.open-card")
    page.wait_for_url(f"**/review/cards/{alice.id}")
    assert "Model card" in page.locator("h1").inner_text()
    assert "approved" in page.inner_text("body")
    with server.client(bob.secret) as client:
        model = client.get("/api/v1/model", params={"patient": alice.id}).json()
        audit = client.get("/api/v1/audit", params={"patient": alice.id}).json()
    assert model["kind"] == "personalized" and model["candidate_id"] == candidate
    approval = [e for e in audit if e["action"] == "approve"][-1]
    assert (
        approval["actor"] == "bob" and approval["details"]["comment"] == "reviewed in the browser"
    )


def test_a_patient_sees_no_buttons_and_others_see_nothing(browser, server, service_data, trained):
    alice, carol = service_data.people["alice"], service_data.people["carol"]
    candidate = propose_candidate(service_data.data, alice.id, trained, shift=0.06)
    own = sign_in(browser, server, alice.token)
    own.goto(f"{server.url}/review/candidates/{candidate}")
    assert own.inner_text("#status") == "pending_review"
    assert own.locator("#approve").count() == 0  # the assigned clinician decides
    other = sign_in(browser, server, carol.token)
    answer = other.goto(f"{server.url}/review/candidates/{candidate}")
    assert answer.status == 403 and "no access" in other.inner_text("#message")
    card = other.goto(f"{server.url}/review/cards/{alice.id}")
    assert card.status == 403


def test_a_form_without_its_token_is_refused(browser, server, service_data, trained):
    alice, bob = service_data.people["alice"], service_data.people["bob"]
    candidate = propose_candidate(service_data.data, alice.id, trained, shift=0.07)
    page = sign_in(browser, server, bob.token)
    answer = page.request.post(
        f"{server.url}/review/candidates/{candidate}", form={"decision": "approve"}
    )
    assert answer.status == 403
    with server.client(bob.secret) as client:
        assert client.get(f"/api/v1/candidates/{candidate}").json()["status"] == "pending_review"


def test_a_wrong_token_does_not_sign_in(browser, server):
    page = browser.new_context().new_page()
    page.goto(server.url + "/login")
    page.fill("#token", "tm_not-a-token")
    page.click("#sign-in")
    assert "Not signed in" in page.inner_text("#message")
