"""A browser subscribes to push from the patient's page, in Debian's Chromium (headless,
driven by Playwright; `make test-browser`): the page's script registers the service worker
and subscribes with the server's VAPID key, and the subscription reaches the server with
the page's session and form token. Headless Chromium has no push service of its own (its
`subscribe` fails: no Google Cloud Messaging there), so the real press of the button checks
that the page says so clearly and that the worker registered; the same press with the
browser's `PushManager.subscribe` standing in for a push service checks the POST, the
server's record and Stop; and a message given to the worker as a push service would
(`ServiceWorker.deliverPushMessage`) is shown as a notification."""

from __future__ import annotations

import json

import pytest
from tests.service.test_review_page import CHROMIUM, browser, shot, sign_in  # noqa: F401

pytestmark = pytest.mark.browser

#: A push service that accepts every subscription: what a browser with one gives the page
#: (an endpoint on the push service's host, its two keys), for the parts past `subscribe`.
FAKE_PUSH_SERVICE = """
const kept = () => JSON.parse(localStorage.getItem("fake-push") || "null");
const handle = (json) => ({endpoint: json.endpoint, toJSON: () => json,
  unsubscribe: async () => { localStorage.removeItem("fake-push"); return true; }});
PushManager.prototype.subscribe = async function (options) {
  window.__subscribeOptions = {
    userVisibleOnly: options.userVisibleOnly,
    key: Array.from(new Uint8Array(options.applicationServerKey)),
  };
  const b64 = (bytes) => btoa(String.fromCharCode(...bytes))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const p256dh = new Uint8Array(65); p256dh[0] = 4; crypto.getRandomValues(p256dh.subarray(1));
  const auth = crypto.getRandomValues(new Uint8Array(16));
  const json = {endpoint: "https://push.example.net/send/" + crypto.randomUUID(),
                expirationTime: null, keys: {p256dh: b64(p256dh), auth: b64(auth)}};
  localStorage.setItem("fake-push", JSON.stringify(json));
  return handle(json);
};
PushManager.prototype.getSubscription = async function () {
  return kept() ? handle(kept()) : null;
};
"""


def state(page) -> str:
    """The push section's state once the page's script ran (a selector: the page's CSP
    forbids the eval behind Playwright's wait_for_function)."""
    page.wait_for_selector('#push:not([data-state="no-script"])', state="attached")
    return page.get_attribute("#push", "data-state")


def settled(page, *states: str) -> str:
    found = ", ".join(f'#push[data-state="{s}"]' for s in states)
    page.wait_for_selector(found, state="attached")
    return page.get_attribute("#push", "data-state")


def worker_script(page) -> str | None:
    return page.evaluate(
        "navigator.serviceWorker.getRegistration('/').then("
        "r => r && (r.active || r.waiting || r.installing) ? "
        "(r.active || r.waiting || r.installing).scriptURL + ' ' + r.scope : null)"
    )


def endpoints(server, account) -> list[str]:
    with server.client(account.secret) as client:
        listed = client.get("/api/v1/push/subscriptions").json()["subscriptions"]
    return [s["endpoint"] for s in listed]


def test_the_button_registers_the_worker_and_says_what_happened(
    browser,  # noqa: F811
    server,
    service_data,
    tmp_path,
):
    alice = service_data.people["alice"]
    before = endpoints(server, alice)
    page = sign_in(
        browser,
        server,
        alice.token,
        permissions=["notifications"],
        viewport={"width": 390, "height": 844},
    )
    assert page.url.endswith("/me")
    assert state(page) == "ready"
    assert page.is_visible("#push-subscribe") and not page.is_visible("#push-stop")
    assert page.inner_text("#push-subscribe") == "Send alerts to this browser"
    page.click("#push-subscribe")
    outcome = settled(page, "subscribed", "failed")
    scope = worker_script(page)
    assert scope == f"{server.url}/push-sw.js {server.url}/", scope
    shot(page, tmp_path, "push-me-phone")
    if outcome == "subscribed":  # a Chromium with a push service: the server has it
        assert len(endpoints(server, alice)) == len(before) + 1
        assert page.is_visible("#push-stop")
    else:  # headless Chromium: no push service; the page says so and keeps the button
        text = page.inner_text("#push-status")
        assert "could not subscribe to its push service" in text
        assert "Your alerts are still on this page and in your app." in text
        assert page.is_visible("#push-subscribe")
        assert endpoints(server, alice) == before


def test_the_subscription_reaches_the_server_and_stop_removes_it(
    browser,  # noqa: F811
    server,
    service_data,
):
    alice = service_data.people["alice"]
    before = endpoints(server, alice)
    context = browser.new_context(permissions=["notifications"])
    context.add_init_script(FAKE_PUSH_SERVICE)
    page = context.new_page()
    page.goto(server.url + "/login")
    page.fill("#token", alice.token)
    page.click("#sign-in")
    page.wait_for_url(server.url + "/me")
    assert state(page) == "ready"
    with page.expect_request(lambda r: r.url.endswith("/push/subscribe")) as posted:
        page.click("#push-subscribe")
    assert settled(page, "subscribed", "failed") == "subscribed", page.inner_text("#push-status")
    assert posted.value.method == "POST"
    options = page.evaluate("window.__subscribeOptions")
    with server.client(alice.secret) as client:
        key = client.get("/api/v1/push/subscriptions").json()["vapid_public_key"]
    import base64

    assert options["userVisibleOnly"] is True
    assert bytes(options["key"]) == base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
    endpoint = page.evaluate("JSON.parse(localStorage.getItem('fake-push')).endpoint")
    assert endpoints(server, alice) == [*before, endpoint]
    assert page.is_visible("#push-stop") and not page.is_visible("#push-subscribe")
    page.reload()  # the page knows this browser is subscribed
    assert state(page) == "subscribed"
    page.click("#push-stop")
    assert settled(page, "stopped") == "stopped"
    assert endpoints(server, alice) == before
    assert page.is_visible("#push-subscribe")
    context.close()


def test_without_push_or_permission_the_page_says_so(
    browser,  # noqa: F811
    server,
    service_data,
):
    alice = service_data.people["alice"]
    context = browser.new_context()
    context.add_init_script("delete window.PushManager;")
    page = context.new_page()
    page.goto(server.url + "/login")
    page.fill("#token", alice.token)
    page.click("#sign-in")
    page.wait_for_url(server.url + "/me")
    assert state(page) == "unsupported"
    assert "no Push API" in page.inner_text("#push-status")
    assert not page.is_visible("#push-subscribe")
    context.close()

    page = sign_in(browser, server, alice.token)  # notifications not granted: denied
    page.evaluate("Notification.requestPermission = async () => 'denied'")
    assert state(page) in ("ready", "denied")
    if page.is_visible("#push-subscribe"):
        page.click("#push-subscribe")
    assert settled(page, "denied") == "denied"
    assert "Notifications are blocked" in page.inner_text("#push-status")


def test_a_pushed_alert_is_shown_by_the_worker(browser, server, service_data):  # noqa: F811
    """The worker's push handler, given the payload the server sends (`service.push.send`),
    shows its title and body; Chromium's DevTools protocol delivers it as a push service
    would."""
    alice = service_data.people["alice"]
    page = sign_in(browser, server, alice.token, permissions=["notifications"])
    assert state(page) in ("ready", "subscribed")
    cdp = page.context.new_cdp_session(page)
    registrations = []
    cdp.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda e: registrations.extend(e["registrations"]),
    )
    cdp.send("ServiceWorker.enable")
    page.wait_for_timeout(500)
    ids = [r["registrationId"] for r in registrations if r["scopeURL"] == server.url + "/"]
    assert ids, registrations
    message = {
        "patient": alice.id,
        "name": "alice",
        "title": "Urgent low alert: alice",
        "body": "50 mg/dL. urgent low",
        "url": "/me",
        "decision": {"decision": "urgent", "reading_ms": 1_700_000_000_000},
    }
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {"origin": server.url, "registrationId": ids[0], "data": json.dumps(message)},
    )
    shown = None
    for _ in range(50):  # polled: wait_for_function evaluates a string, which the CSP forbids
        shown = page.evaluate(
            "navigator.serviceWorker.ready.then(r => r.getNotifications()).then("
            "n => n.map(x => [x.title, x.body, x.data.url, x.requireInteraction]))"
        )
        if shown:
            break
        page.wait_for_timeout(100)
    assert shown == [["Urgent low alert: alice", "50 mg/dL. urgent low", "/me", True]]
