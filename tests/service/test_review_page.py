"""The review page in a real browser (Debian's Chromium, headless, driven by Playwright):
`make test-browser`. Not part of `make test`: it needs the system browser."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
from tests.service.conftest import propose_candidate
from tests.service.review_helpers import register

from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey

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


#: where the screenshots go (look at them): TAILORML_SHOTS, else the test's tmp_path
SHOTS = os.environ.get("TAILORML_SHOTS")


def shot(page, tmp_path, name: str) -> None:
    folder = Path(SHOTS) if SHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def sign_in(browser, server, token, **context):
    page = browser.new_context(**context).new_page()
    page.goto(server.url + "/review")
    assert page.url.endswith("/login")
    page.fill("#token", token)
    page.click("#sign-in")
    # a clinician lands on the review list, a patient on their own page
    page.wait_for_url(lambda url: url in (server.url + "/review", server.url + "/me"))
    return page


def test_a_clinician_reviews_and_approves_in_the_browser(
    browser, server, service_data, trained, tmp_path
):
    alice, bob = service_data.people["alice"], service_data.people["bob"]
    candidate = propose_candidate(service_data, alice.id, trained, shift=0.05)
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
    page.wait_for_selector("#confirm")  # a second step says what will happen
    assert page.inner_text("#status") == "pending_review"
    page.click("#confirm-decision")
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
    candidate = propose_candidate(service_data, alice.id, trained, shift=0.06)
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
    candidate = propose_candidate(service_data, alice.id, trained, shift=0.07)
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


def upload_two_days(server, account) -> None:
    """Two days of readings ending now: a day at 90 mg/dL, then a day swinging 60-240, the
    newest an urgent low (52 mg/dL), from a phone 2 h ahead of UTC (`utcOffset`, as
    AndroidAPS sends it)."""
    now = int(time.time() * 1000) // 300_000 * 300_000
    entries = []
    for i in range(576):
        value = 90 if i < 288 else 150 + 90 * math.sin(i / 20)
        date = now - (575 - i) * 300_000
        entries.append({"type": "sgv", "date": date, "sgv": round(value), "utcOffset": 120})
    entries[-1]["sgv"] = 52
    with server.client(account.secret) as client:
        assert client.post("/api/v1/entries", json=entries).status_code == 200


def test_side_by_side_units_confirmation_and_a_phone(
    browser, server, service_data, trained, tmp_path
):
    alice, bob = service_data.people["alice"], service_data.people["bob"]
    upload_two_days(server, alice)
    key = ServerKey.load(service_data.key_file, service_data.data)
    service = Service(service_data.data, key, database=service_data.database)
    candidate = register(service, alice.id, trained, shift=0.08)
    page = sign_in(browser, server, bob.token, viewport={"width": 1280, "height": 900})
    page.goto(f"{server.url}/review/candidates/{candidate}")
    headline = page.inner_text("#headline")
    assert "+2.0 early warnings a week, +0.84 false alarms a day (×2.0), no missed low" in headline
    worse = page.locator("#side-by-side tr[data-key=false] td.worse")
    assert worse.inner_text().startswith("+0.84 false alarms a day")
    assert page.inner_text("#patient-name") == "alice"
    mgdl = float(page.inner_text("#mean"))
    # no zone chosen yet: the phone's offset from the uploads, and the page says so
    assert page.inner_text("#zone-line") == (
        "Times in UTC+02:00: the patient's phone's offset, from their last upload that "
        "carries one (a reading)."
    )
    assert "urgent low: 52 mg/dL, at or below 55 mg/dL" in page.inner_text("#alerts")
    shot(page, tmp_path, "candidate-desktop")
    page.select_option("#unit", "mmol")
    page.select_option("#tz", "Europe/Berlin")
    page.click("#show")
    page.wait_for_url("**unit=mmol**")
    assert page.inner_text("#glycemia .unit") == "mmol/L"
    assert float(page.inner_text("#mean")) == round(mgdl / 18.016, 1)
    assert "Europe/Berlin" in page.inner_text("#context-heading ~ p.muted")
    page.goto(f"{server.url}/review/patients/{alice.id}")  # remembered
    assert page.inner_text("#glycemia .unit") == "mmol/L"
    assert page.inner_text("#zone-line").startswith("Times in Europe/Berlin: chosen on this page")
    # the reason's numbers in the page's unit: 52 / 18.016 = 2.9, 55 / 18.016 = 3.1
    reasons = page.locator("#alerts td[data-label=why]").all_inner_texts()
    assert "urgent low: 2.9 mmol/L, at or below 3.1 mmol/L" in reasons
    assert not any("mg/dL" in r for r in reasons)
    page.locator("#alerts").scroll_into_view_if_needed()
    shot(page, tmp_path, "patient-desktop-mmol")
    page.goto(f"{server.url}/review/candidates/{candidate}")
    page.fill("#comment", "no missed low; the false alarms were discussed with alice")
    page.click("#approve")
    page.wait_for_selector("#confirm")
    assert f"Approve candidate {candidate} for alice?" in page.inner_text("#confirm")
    assert page.inner_text("#status") == "pending_review"
    shot(page, tmp_path, "confirm-desktop")

    phone = sign_in(browser, server, bob.token, viewport={"width": 390, "height": 844})
    for name, url in (
        ("overview-phone", "/review"),
        ("candidate-phone", f"/review/candidates/{candidate}"),
        ("patient-phone", f"/review/patients/{alice.id}"),
    ):
        phone.goto(server.url + url)
        width = phone.evaluate("document.scrollingElement.scrollWidth")
        assert width <= 390, f"{url} is {width} px wide on a 390 px phone"
        shot(phone, tmp_path, name)

    page.click("#confirm-decision")
    page.wait_for_selector("#message")
    assert "approved" in page.inner_text("#message")
    assert page.inner_text("#status") == "approved"
    page.goto(f"{server.url}/review/patients/{alice.id}")
    assert page.locator("#rollback").count() == 1
    shot(page, tmp_path, "patient-after-approval")


def test_a_patient_signs_in_to_her_data_consent_export_and_erasure_on_a_phone(
    browser, server, service_data, tmp_path
):
    alice, bob = service_data.people["alice"], service_data.people["bob"]
    upload_two_days(server, alice)
    phone = sign_in(browser, server, alice.token, viewport={"width": 390, "height": 844})
    assert phone.url == server.url + "/me"
    assert phone.locator("#consent-personalization").is_checked()
    assert phone.locator("#consent-bob").is_checked()
    assert phone.locator("#trace").count() == 1 and phone.locator("#glycemia").count() == 1
    width = phone.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 390, f"/me is {width} px wide on a 390 px phone"
    shot(phone, tmp_path, "me-phone")

    # withdraw bob's access with the switch: he is refused at once, then granted again
    phone.locator("#consent-bob").uncheck()
    phone.click("#save-consent")
    phone.wait_for_url("**/me?done=consent")
    assert not phone.locator("#consent-bob").is_checked()
    assert "recorded" in phone.inner_text("#message")
    with server.client(bob.secret) as client:
        assert client.get("/api/v1/model", params={"patient": alice.id}).status_code == 403
    shot(phone, tmp_path, "me-phone-withdrawn")
    phone.locator("#consent-bob").check()
    phone.click("#save-consent")
    phone.wait_for_url("**/me?done=consent")
    with server.client(bob.secret) as client:
        assert client.get("/api/v1/model", params={"patient": alice.id}).status_code == 200

    # the export: a download of the same JSON as the API's export
    with phone.expect_download() as started:
        phone.click("#export")
    download = started.value
    assert download.suggested_filename == f"tailorml-{alice.id}.json"
    exported = json.loads(Path(download.path()).read_text())
    assert exported["person"]["id"] == alice.id
    assert [c["granted"] for c in exported["consents"] if c["scope"] == "clinician_access"][
        -2:
    ] == [False, True]

    # erasure asks first (the confirmation is not followed here: alice is used elsewhere)
    phone.click("#erase")
    phone.wait_for_selector("#erase-confirm")
    assert alice.id in phone.inner_text("#erase-confirm")
    width = phone.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 390, f"the erasure confirmation is {width} px wide on a 390 px phone"
    shot(phone, tmp_path, "me-phone-erase")
    desktop = sign_in(browser, server, alice.token, viewport={"width": 1280, "height": 900})
    shot(desktop, tmp_path, "me-desktop")
