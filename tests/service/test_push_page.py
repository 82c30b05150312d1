"""A browser subscribes to push from the pages (issue 36): the script and its service worker
are files of this server with the right headers, the pages allow scripts from this server
only (never inline), and the page's own subscribe and unsubscribe take the page's session
and form token, as its forms do. The browser itself: test_push_browser.py."""

from __future__ import annotations

import base64
import json
import os
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from fastapi.testclient import TestClient
from tests.service.review_helpers import form_token, signed_in

import tailorml

ROOT = Path(__file__).resolve().parents[2]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def subscription(name: str) -> dict:
    """A browser's PushSubscription.toJSON() (the server checks shapes, not the keys)."""
    return {
        "endpoint": f"https://push.example.net/send/{name}",
        "expirationTime": None,
        "keys": {"p256dh": b64(b"\x04" + os.urandom(64)), "auth": b64(os.urandom(16))},
    }


def directives(policy: str) -> dict[str, list[str]]:
    parts = [p.split() for p in policy.split(";") if p.strip()]
    return {p[0]: p[1:] for p in parts}


def test_the_script_and_its_worker_are_served_as_scripts(app):
    client, _ = app
    script = client.get("/static/push.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["x-content-type-options"] == "nosniff"
    assert script.headers["cache-control"] == "no-cache"
    assert "pushManager.subscribe" in script.text and "userVisibleOnly: true" in script.text
    assert '"/push/subscribe"' in script.text and 'register("/push-sw.js"' in script.text
    worker = client.get("/push-sw.js")
    assert worker.status_code == 200
    assert worker.headers["content-type"] == "text/javascript; charset=utf-8"
    assert worker.headers["service-worker-allowed"] == "/"  # its scope covers /me and /review
    assert worker.headers["x-content-type-options"] == "nosniff"
    assert 'addEventListener("push"' in worker.text and "showNotification" in worker.text
    assert 'addEventListener("notificationclick"' in worker.text and "openWindow" in worker.text
    assert client.get("/static/other.js").status_code == 404
    # HEAD as GET (monitors), and no other origin is ever named in either file
    assert client.head("/push-sw.js").status_code == 200
    assert not re.search(r"https?://", script.text + worker.text)


def test_the_files_are_package_data():
    """An installed tailorml (not this checkout) serves the same files."""
    static = Path(tailorml.__file__).parent / "service" / "static"
    names = sorted(p.name for p in static.glob("*.js"))
    assert names == ["push-sw.js", "push.js"]
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for name in names:
        assert any(fnmatch(f"service/static/{name}", g) for g in globs["package-data"]["tailorml"])


def test_the_pages_allow_scripts_from_this_server_only(app, made):
    client, service = app
    alice, bob = made.people["alice"], made.people["bob"]
    with TestClient(client.app) as browser:
        login = browser.get("/login")
        signed_in(browser, alice.token)
        mine = browser.get("/me")
    with TestClient(client.app) as browser:
        signed_in(browser, bob.token)
        review = browser.get("/review")
    for answer in (login, mine, review):
        policy = directives(answer.headers["content-security-policy"])
        assert policy["default-src"] == ["'self'"]
        assert policy["script-src"] == ["'self'"]  # no 'unsafe-inline', no nonce, no host
        assert policy["worker-src"] == ["'self'"]
        assert not any(re.search(r"https?:|\*", v) for vs in policy.values() for v in vs)
        # every script is a file of this server, with nothing inline
        scripts = re.findall(r"<script([^>]*)>([^<]*)</script>", answer.text)
        assert all(attrs == ' src="/static/push.js" defer' and not body for attrs, body in scripts)
    key = service.push.public_key()
    for page in (mine, review):  # the subscribe section: the VAPID key and the form token
        assert f'data-key="{key}"' in page.text
        assert f'data-csrf="{form_token(page.text)}"' in page.text
        assert 'id="push-subscribe" hidden>Send alerts to this browser' in page.text
        assert 'id="push-stop" hidden>Stop' in page.text
    assert "Alerts on this browser" not in login.text


def test_a_page_subscribes_its_browser_with_its_session_and_token(app, made):
    client, _ = app
    carol = made.people["carol"]
    phone = subscription("carol-page")
    with TestClient(client.app) as browser:
        signed_in(browser, carol.token)
        token = form_token(browser.get("/me").text)
        form = {"csrf": token, "subscription": json.dumps(phone)}
        refused = browser.post("/push/subscribe", data=form | {"csrf": "0" * 64})
        assert refused.status_code == 403 and "form token" in refused.json()["message"]
        other_site = browser.post(
            "/push/subscribe", data=form, headers={"Origin": "https://evil.example"}
        )
        assert other_site.status_code == 403
        bad = browser.post("/push/subscribe", data={"csrf": token, "subscription": "{"})
        assert bad.status_code == 422 and bad.json()["message"].startswith("subscription")
        local = dict(phone, endpoint="https://127.0.0.1/x")  # the API's own checks apply
        refused_host = browser.post(
            "/push/subscribe", data={"csrf": token, "subscription": json.dumps(local)}
        )
        assert refused_host.status_code == 422 and "host" in refused_host.json()["message"]
        assert (
            client.get("/api/v1/push/subscriptions", headers=carol.secret).json()["subscriptions"]
            == []
        )

        made_ = browser.post("/push/subscribe", data=form)
        assert made_.status_code == 201 and made_.json()["new"] is True
        listed = client.get("/api/v1/push/subscriptions", headers=carol.secret).json()
        assert [s["endpoint"] for s in listed["subscriptions"]] == [phone["endpoint"]]
        # the API still takes a token, never the page's cookie
        assert browser.get("/api/v1/push/subscriptions").status_code == 401

        stopped = browser.post(
            "/push/unsubscribe", data={"csrf": token, "endpoint": phone["endpoint"]}
        )
        assert stopped.status_code == 200 and stopped.json()["n"] == 1
        listed = client.get("/api/v1/push/subscriptions", headers=carol.secret).json()
        assert listed["subscriptions"] == []
    audit = client.get("/api/v1/audit", headers=carol.secret).json()
    actions = [(e["action"], e["actor"]) for e in audit if e["action"].startswith("push_")]
    assert actions == [
        ("push_subscribe", "carol (patient)"),
        ("push_unsubscribe", "carol (patient)"),
    ]
    with TestClient(client.app) as signed_out:  # no session: the sign-in page
        answer = signed_out.post("/push/subscribe", data=form, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/login"
