"""Web Push (issue 36, item 2): an alert reaches the subscribed browsers of the patient and of
the clinicians the patient consents to, encrypted for each (RFC 8291) and signed with the
service's VAPID key (RFC 8292), after the upload committed and without slowing it; a gone
endpoint is forgotten, a slow one times out, and the API keeps the history.

The "browsers" are a local HTTP server that decrypts what it receives with each
subscription's private key, as a browser's push service would hand it over."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import http_ece
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey
from tailorml.service.push import TTL_SECONDS


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Browser:
    """One subscription's keys, as a browser makes them."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)

    def subscription(self, base: str) -> dict:
        point = self.private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": base + self.path,
            "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)},
        }

    def open(self, body: bytes) -> dict:
        plain = http_ece.decrypt(
            body, private_key=self.private, auth_secret=self.auth, version="aes128gcm"
        )
        return json.loads(plain)


class PushService(BaseHTTPRequestHandler):
    """Receives pushes: /gone answers 410, /slow holds the request 3 s, others 201."""

    received: ClassVar[list[tuple[str, dict, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.path.startswith("/slow"):
            time.sleep(3)
        self.send_response(410 if self.path.startswith("/gone") else 201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), PushService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def pushing(app, endpoint):
    client, service = app
    service.push.local_hosts = frozenset({"127.0.0.1"})  # the test's push service, over http
    return client, service


def reading(minutes_ago: float, sgv: float) -> dict:
    return {"type": "sgv", "sgv": sgv, "date": int((time.time() - 60 * minutes_ago) * 1000)}


def pushes_to(path: str) -> list[tuple[dict, bytes]]:
    return [(headers, body) for p, headers, body in PushService.received if p == path]


def test_an_urgent_low_reaches_the_patient_and_her_clinician(pushing, made, endpoint):
    client, service = pushing
    alice = made.people["alice"]
    phones = {name: Browser(f"/{name}") for name in ("alice", "bob", "mallory")}
    for name, phone in phones.items():
        answer = client.post(
            "/api/v1/push/subscriptions",
            headers=made.people[name].secret,
            json=phone.subscription(endpoint),
        )
        assert answer.status_code == 201 and answer.json()["new"] is True, answer.text
    low = reading(1, 50)  # ≤ 55 mg/dL: urgent, whatever the model says
    started = time.monotonic()
    assert client.post("/api/v1/entries", headers=alice.secret, json=[low]).status_code == 200
    assert service.push.wait_idle(20)

    shown = client.get("/api/v1/alerts/current", headers=alice.secret).json()
    assert shown["decision"] == "urgent" and shown["reading_ms"] == low["date"]
    key = client.get("/api/v1/push/subscriptions", headers=alice.secret).json()["vapid_public_key"]
    for name in ("alice", "bob"):
        ((headers, body),) = pushes_to(f"/{name}")
        message = phones[name].open(body)
        assert message["patient"] == alice.id and message["name"] == "alice"
        # what the service worker shows, and the page a click opens (static/push-sw.js)
        assert message["title"] == "Urgent low alert: alice"
        assert message["body"].startswith("50 mg/dL. ") and shown["reason"] in message["body"]
        assert message["url"] == {"alice": "/me", "bob": f"/review/patients/{alice.id}"}[name]
        decision = message["decision"]
        assert decision["decision"] == "urgent" and decision["reading_ms"] == low["date"]
        assert decision["cgm"] == 50.0 and decision["reason"] == shown["reason"]
        assert headers["content-encoding"] == "aes128gcm"
        assert headers["ttl"] == str(TTL_SECONDS) and headers["urgency"] == "high"
        assert headers["authorization"].startswith("vapid t=")
        assert headers["authorization"].endswith(f"k={key}")
    assert pushes_to("/mallory") == []  # not assigned to alice
    assert time.monotonic() - started < 20
    audit = [e["action"] for e in client.get("/api/v1/audit", headers=alice.secret).json()]
    assert "push_subscribe" in audit


def test_a_withdrawn_clinician_gets_no_push_and_an_old_low_rings_no_one(pushing, made, endpoint):
    client, service = pushing
    alice, bob = made.people["alice"], made.people["bob"]
    before = len(PushService.received)
    client.put(
        "/api/v1/people/me/consent", headers=alice.secret, json={"clinicians": {bob.id: False}}
    )
    client.post("/api/v1/entries", headers=alice.secret, json=[reading(0.5, 52)])
    assert service.push.wait_idle(20)
    assert [p for p, _, _ in PushService.received[before:]] == ["/alice"]
    client.put(
        "/api/v1/people/me/consent", headers=alice.secret, json={"clinicians": {bob.id: True}}
    )
    carol = made.people["carol"]
    phone = Browser("/carol")
    client.post(
        "/api/v1/push/subscriptions", headers=carol.secret, json=phone.subscription(endpoint)
    )
    old = reading(60, 48)  # decided urgent, but an hour old: the history has it, no push
    client.post("/api/v1/entries", headers=carol.secret, json=[old])
    assert service.push.wait_idle(20)
    history = client.get("/api/v1/alerts", headers=carol.secret).json()
    assert history[0]["decision"] == "urgent" and history[0]["reading_ms"] == old["date"]
    assert pushes_to("/carol") == []


def test_a_gone_endpoint_is_removed_and_a_slow_one_never_slows_the_upload(pushing, made, endpoint):
    client, service = pushing
    alice = made.people["alice"]
    gone, slow = Browser("/gone"), Browser("/slow")
    for phone in (gone, slow):
        client.post(
            "/api/v1/push/subscriptions", headers=alice.secret, json=phone.subscription(endpoint)
        )
    service.push.timeout = 1.0
    started = time.monotonic()
    answer = client.post("/api/v1/entries", headers=alice.secret, json=[reading(0.2, 51)])
    took = time.monotonic() - started
    assert answer.status_code == 200 and took < 3.0  # the slow endpoint holds 3 s
    assert service.push.wait_idle(20)
    outcome = service.push.delivered[-1]
    assert outcome.removed == 1  # /gone answered 410
    assert len(outcome.failed) == 1 and "Timeout" in outcome.failed[0]  # /slow, after 1 s
    assert outcome.sent == 2  # alice's and bob's first phones
    listed = client.get("/api/v1/push/subscriptions", headers=alice.secret).json()
    endpoints = [s["endpoint"] for s in listed["subscriptions"]]
    assert endpoint + "/gone" not in endpoints and endpoint + "/slow" in endpoints
    audit = client.get("/api/v1/audit", headers=alice.secret).json()
    assert any(
        e["action"] == "push_unsubscribe" and e["actor"] == "service (push endpoint gone)"
        for e in audit
    )
    slow_id = next(s["id"] for s in listed["subscriptions"] if s["endpoint"].endswith("/slow"))
    deleted = client.delete(f"/api/v1/push/subscriptions/{slow_id}", headers=alice.secret)
    assert deleted.json() == {"n": 1, "ok": 1}
    other = client.delete(f"/api/v1/push/subscriptions/{slow_id}", headers=alice.secret)
    assert other.json() == {"n": 0, "ok": 1}


@pytest.mark.parametrize(
    ("endpoint_url", "keys", "message"),
    [
        ("http://push.example.com/x", None, "subscription.endpoint: must be an https URL"),
        ("https://10.0.0.7/x", None, "subscription.endpoint: must name a host, not an IP"),
        ("https://localhost/x", None, "subscription.endpoint: must name a push service"),
        ("https://u:p@push.example.com/x", None, "subscription.endpoint: must be an https"),
        ("https://push.example.com/x", {"p256dh": "AAAA", "auth": "AAAA"}, "keys.p256dh: must"),
        ("https://push.example.com/x", {"p256dh": "!!", "auth": "x"}, "subscription.keys.p256"),
    ],
)
def test_a_subscription_the_server_should_not_post_to_is_refused(
    pushing, made, endpoint_url, keys, message
):
    client, _ = pushing
    good = Browser("/x").subscription("https://push.example.com")["keys"]
    answer = client.post(
        "/api/v1/push/subscriptions",
        headers=made.people["carol"].secret,
        json={"endpoint": endpoint_url, "keys": keys or good},
    )
    assert answer.status_code == 422 and message in answer.json()["message"], answer.text


def test_the_vapid_key_is_made_once_and_kept_wrapped(pushing, made):
    _, service = pushing
    key = service.push.public_key()
    again = Service(made.data, ServerKey.load(made.key_file, made.data), database=made.database)
    assert again.push.public_key() == key  # another process of the data directory
    wrapped, key_id, public = service.store.service_key("vapid")
    assert public == key and key_id == service.server_key.key_id
    assert b"PRIVATE" not in wrapped and len(wrapped) > 100
    assert not list(made.data.glob("**/*vapid*"))  # no key file in the data directory
