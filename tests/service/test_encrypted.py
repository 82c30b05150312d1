"""Encrypted alerts through the service: the client keeps the keys, the server computes on
ciphertext and keeps nothing of it (a real server with an HE-friendly model)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.privacy.conftest import glucose_windows, he_model
from tests.service.conftest import Server, make_service_data

from tailorml.models.cnn import save_model
from tailorml.policy import AlertPolicy
from tailorml.privacy.client import KEYS_MAGIC, ServiceAlerts
from tailorml.privacy.context import load_public, secret_context
from tailorml.privacy.params import THREE_LEVELS, CKKSParameters, PrivacyError
from tailorml.privacy.wire import CONTEXT_HEADER, MODEL_HEADER
from tailorml.registry.models import Registry


# one input channel (CGM) and three (CGM, IOB, COB: experiments/he_friendly_iob_cob.toml)
@pytest.fixture(scope="module", params=[1, 3], ids=["cgm", "cgm-iob-cob"])
def he_server(request, tmp_path_factory, trained):
    root = tmp_path_factory.mktemp("encrypted")
    service = make_service_data(root, trained)
    model = he_model(channels=request.param)
    save_model(model, root / "he.pt")
    server = Server(service, extra=["--he-model", str(root / "he.pt")]).start()
    yield server, service, model
    server.kill()


def _stored_context(service, account, sha256: str) -> Path:
    """Where the server keeps a device's context of the depth-3 chain."""
    return service.data / "he-contexts" / account.id / THREE_LEVELS.tag / f"{sha256}.ctx"


def test_the_service_computes_alerts_on_windows_it_cannot_read(he_server):
    server, service, model = he_server
    alice = service.people["alice"]
    windows = glucose_windows(3, channels=model.spec.in_channels)
    alerts = ServiceAlerts(server.url, alice.token)
    logits = alerts.logits(windows)
    with torch.no_grad():
        plain = model(torch.as_tensor(windows, dtype=torch.float32)).numpy()
    assert np.abs(logits - plain).max() < 1e-2  # CKKS tolerance stated in docs/privacy.md
    assert (alerts.client.decide(logits) == model.policy.decide(alerts_softmax(plain))).all()

    stored = _stored_context(service, alice, alerts.context_sha256)
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == alerts.context_sha256
    context = load_public(stored.read_bytes())  # refuses a context with a secret key
    assert not context.has_secret_key()
    audit = [e for e in Registry(service.data).audit(alice.id) if e.action == "encrypted_inference"]
    assert len(audit) == 1 and audit[0].details["bytes_in"] > 100_000  # one request so far
    assert set(audit[0].details) == {"bytes_in", "bytes_out", "model_sha256"}  # no content
    sent = alerts.client.encrypt(windows[:1])
    with server.client(alice.bearer | headers_of(alerts)) as client:
        answer = client.post("/api/v1/encrypted/alert", content=sent)
    assert answer.status_code == 200
    assert answer.headers[MODEL_HEADER] == alerts.spec["model_sha256"]
    pieces = [sent[i : i + 64] for i in range(1_000, len(sent), len(sent) // 8)]
    for path in (p for p in service.data.rglob("*") if p.is_file()):
        content = path.read_bytes()  # the database, its WAL, contexts, logs
        assert not any(piece in content for piece in pieces), path  # ciphertext never kept


def headers_of(alerts: ServiceAlerts) -> dict:
    return {CONTEXT_HEADER: alerts.context_sha256, MODEL_HEADER: alerts.spec["model_sha256"]}


def alerts_softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_without_a_registered_context_or_an_he_model_the_answer_says_what_to_do(
    he_server, server, service_data
):
    he, service, _ = he_server
    with he.client(service.people["carol"].bearer) as client:
        spec = client.get("/api/v1/encrypted/spec").json()
        headers = {CONTEXT_HEADER: "ab" * 32, MODEL_HEADER: spec["model_sha256"]}
        answer = client.post("/api/v1/encrypted/alert", content=b"x", headers=headers)
    assert answer.status_code == 409 and answer.json()["reason"] == "context_unknown"
    assert "PUT /api/v1/encrypted/context again" in answer.json()["message"]
    with pytest.raises(PrivacyError, match="offers no encrypted alerts"):
        ServiceAlerts(server.url, service_data.people["carol"].token)


def test_each_device_of_a_person_keeps_its_own_keys(he_server):
    """A second device registering must not make the first one's answers noise (CKKS
    evaluates a ciphertext under any keys of the right size without an error)."""
    server, service, model = he_server
    alice = service.people["alice"]
    windows = glucose_windows(4, channels=model.spec.in_channels, seed=3)
    with torch.no_grad():
        truth = model.policy.decide(alerts_softmax(model(torch.as_tensor(windows).float()).numpy()))
    phone = ServiceAlerts(server.url, alice.token)
    tablet = ServiceAlerts(server.url, alice.token)
    assert phone.context_sha256 != tablet.context_sha256
    assert (phone.decide(windows) == truth).all() and (tablet.decide(windows) == truth).all()

    # the server lost the phone's context (replaced by a later device): 409, re-register, answer
    stored = _stored_context(service, alice, phone.context_sha256)
    lost_name = phone.context_sha256
    phone.context_sha256 = "0" * 64
    assert (phone.decide(windows) == truth).all()
    assert phone.context_sha256 == lost_name and stored.is_file()


@pytest.mark.parametrize(
    ("headers", "status", "match"),
    [
        ({}, 400, "header X-Context-SHA256 is missing"),
        ({CONTEXT_HEADER: "../../etc/passwd"}, 400, "X-Context-SHA256 must be 64 hex digits"),
        ({CONTEXT_HEADER: "a" * 64}, 400, "header X-Model-SHA256 is missing"),
        ({CONTEXT_HEADER: "a" * 64, MODEL_HEADER: "b" * 64}, 409, "model changed"),
    ],
)
def test_an_alert_request_names_its_context_and_model(he_server, headers, status, match):
    server, service, _ = he_server
    with server.client(service.people["alice"].bearer) as client:
        answer = client.post("/api/v1/encrypted/alert", content=b"x", headers=headers)
    assert answer.status_code == status and match in answer.json()["message"]
    if status == 409:
        assert answer.json()["reason"] == "model_changed"


def test_clinicians_and_wrong_methods_get_clear_answers(he_server):
    server, service, _ = he_server
    with server.client(service.people["bob"].bearer) as client:
        answer = client.put("/api/v1/encrypted/context", content=b"x")
        assert answer.status_code == 403 and "patient's token" in answer.json()["message"]
        wrong = client.get("/api/v1/encrypted/alert")
    assert wrong.status_code == 405
    assert wrong.json() == {"status": 405, "message": "Method Not Allowed"}
    assert wrong.headers["allow"] == "POST"


@pytest.mark.parametrize("width", [4, 8], ids=["same-keys", "new-keys"])
def test_the_client_follows_a_new_model_s_policy(tmp_path, trained, width):
    """The operator swaps the HE model: the phone's next request is refused with 409, it
    re-reads the spec (new keys when the packing changed: 8 channels fit 16 windows per
    ciphertext, 4 fit 32) and decides with the new model's policy."""
    service = make_service_data(tmp_path, trained)
    first, second = he_model(seed=0), he_model(seed=1, width=width)
    second.policy = AlertPolicy(threshold=0.99)  # almost no window alerts
    save_model(first, tmp_path / "first.pt")
    save_model(second, tmp_path / "second.pt")
    server = Server(service, extra=["--he-model", str(tmp_path / "first.pt")]).start()
    phone = ServiceAlerts(server.url, service.people["alice"].token)
    first_keys = phone.context_sha256
    server.kill()
    server = Server(service, server.port, ["--he-model", str(tmp_path / "second.pt")]).start()
    try:
        windows = glucose_windows(6, seed=9)
        decided = phone.decide(windows)
    finally:
        server.kill()
    with torch.no_grad():
        probabilities = alerts_softmax(second(torch.as_tensor(windows).float()).numpy())
    assert phone.client.policy.threshold == 0.99
    second_sha = hashlib.sha256((tmp_path / "second.pt").read_bytes()).hexdigest()
    assert phone.spec["model_sha256"] == second_sha
    assert (phone.context_sha256 == first_keys) == (width == 4)
    assert (decided == second.policy.decide(probabilities)).all()
    assert (decided != first.policy.decide(probabilities)).any()  # the old threshold differs


def test_a_device_that_keeps_its_keys_registers_once(he_server, tmp_path):
    server, service, model = he_server
    carol = service.people["carol"]
    windows = glucose_windows(3, channels=model.spec.in_channels, seed=5)
    with torch.no_grad():
        truth = model.policy.decide(alerts_softmax(model(torch.as_tensor(windows).float()).numpy()))

    def registrations() -> int:
        audit = Registry(service.data).audit(carol.id)
        return sum(e.action == "register_he_context" for e in audit)

    keys = tmp_path / "keys"
    first = ServiceAlerts(server.url, carol.token, keys=keys)
    assert keys.stat().st_mode & 0o777 == 0o600 and keys.stat().st_size < 1_000_000
    assert (first.decide(windows) == truth).all()
    before = registrations()
    again = ServiceAlerts(server.url, carol.token, keys=keys)  # the app restarted
    assert again.context_sha256 == first.context_sha256
    assert (again.decide(windows) == truth).all() and registrations() == before

    # kept keys the service does not know (it lost them): a 409, one registration, kept anew
    secret = again.client.secret_bytes()
    keys.write_bytes(kept_keys(b"0" * 64, secret, again._owner()))
    restored = ServiceAlerts(server.url, carol.token, keys=keys)
    assert restored.context_sha256 == "0" * 64
    assert (restored.decide(windows) == truth).all() and registrations() == before + 1
    assert keys.read_bytes().split(b"\n")[1].decode() == restored.context_sha256 != "0" * 64


def test_kept_keys_of_another_chain_are_replaced_and_garbage_is_refused(he_server, tmp_path):
    server, service, _ = he_server
    carol = service.people["carol"]
    other = secret_context(CKKSParameters(8192, (50, 35, 50), 35))  # the model changed chain
    keys = tmp_path / "keys"
    owner = f"{server.url} {carol.id}"
    keys.write_bytes(kept_keys(b"a" * 64, other.serialize(save_secret_key=True), owner))
    alerts = ServiceAlerts(server.url, carol.token, keys=keys)
    assert alerts.client.parameters.coeff_mod_bit_sizes == (50, 35, 35, 35, 50)
    assert keys.read_bytes().split(b"\n")[1].decode() == alerts.context_sha256
    keys.write_bytes(b"my notes")
    with pytest.raises(PrivacyError, match=r"keys file .*/keys is not a tailorml keys file"):
        ServiceAlerts(server.url, carol.token, keys=keys)
    damaged = bytearray(kept_keys(b"a" * 64, alerts.client.secret_bytes(), owner))
    damaged[-5000] ^= 0x01  # one bit of the secret key
    keys.write_bytes(bytes(damaged))
    with pytest.raises(PrivacyError, match=r"keys file .*/keys is damaged"):
        ServiceAlerts(server.url, carol.token, keys=keys)
    ServiceAlerts(server.url, carol.token, keys=keys.with_name("carol"))
    with pytest.raises(PrivacyError, match=rf"belongs to {server.url} {carol.id}, not .* p-"):
        ServiceAlerts(server.url, service.people["alice"].token, keys=keys.with_name("carol"))


def kept_keys(name: bytes, secret: bytes, owner: str) -> bytes:
    """A keys file as `ServiceAlerts` writes it."""
    checksum = hashlib.sha256(secret).hexdigest().encode()
    return b"\n".join([KEYS_MAGIC, name, checksum, owner.encode(), secret])


def test_an_implausible_reading_is_refused_before_any_window_is_sent(he_server):
    server, service, model = he_server
    alice = service.people["alice"]
    alerts = ServiceAlerts(server.url, alice.token)
    windows = glucose_windows(40, channels=model.spec.in_channels, seed=2)  # two ciphertexts
    windows[35, 0, 5] = 5000.0
    audit = Registry(service.data).audit
    before = sum(e.action == "encrypted_inference" for e in audit(alice.id))
    with pytest.raises(PrivacyError, match="window 35: CGM reading 5 is 5000, outside"):
        alerts.decide(windows)
    assert sum(e.action == "encrypted_inference" for e in audit(alice.id)) == before


def test_the_server_log_says_which_contexts_it_removed(tmp_path, trained):
    """At start, contexts of a chain the served model does not use are deleted (they would
    hold device slots), and `serve` logs it at its default level, info."""
    service = make_service_data(tmp_path, trained)
    save_model(he_model(), tmp_path / "he.pt")
    stale = service.data / "he-contexts" / service.people["alice"].id / "n16384-q60-40-s40"
    stale.mkdir(parents=True)
    (stale / f"{'c' * 64}.ctx").write_bytes(b"keys of a deeper model served before")
    server = Server(service, extra=["--he-model", str(tmp_path / "he.pt")]).start()
    server.kill()
    assert not stale.exists()
    log = (tmp_path / f"server-{server.port}.log").read_text()
    assert re.search(
        r"^\S+ \S+ INFO tailorml.service: removed 1 public context\(s\) made for another "
        r"CKKS chain than the served model's, or stored in an earlier layout; their devices",
        log,
        re.MULTILINE,
    ), log


def test_a_gap_gives_no_decision_and_an_urgent_low_needs_no_model(he_server):
    """The device's stateless rules on the phone: a window with a dropped reading is not
    sent and gets no decision; one ending 60 -> 50 mg/dL is an urgent low without asking
    the model; only the complete, ordinary window is encrypted and decided."""
    server, service, model = he_server
    alice = service.people["alice"]
    alerts = ServiceAlerts(server.url, alice.token)
    windows = glucose_windows(3, channels=model.spec.in_channels, seed=4)
    windows[0, 0, 7] = np.nan
    windows[1, 0, -2:] = [60.0, 50.0]
    windows[2, 0, -2:] = [120.0, 121.0]
    asked = []  # the windows each request carried, in the clear on the phone
    ask = alerts._ask
    alerts._ask = lambda chunk: asked.append(chunk.copy()) or ask(chunk)
    result = alerts.alerts(windows)
    assert result.status.tolist() == ["no_decision", "urgent", "decided"]
    with torch.no_grad():
        plain = model(torch.as_tensor(windows[2:], dtype=torch.float32)).numpy()
    expected = model.policy.decide(alerts_softmax(plain))[0]
    assert result.decided.tolist() == [-1, model.policy.alert_index, expected]
    assert len(asked) == 1 and np.array_equal(asked[0], windows[2:])
    # nothing to ask: no request at all
    assert alerts.decide(windows[:2]).tolist() == [-1, model.policy.alert_index]
    assert len(asked) == 1
