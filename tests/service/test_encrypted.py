"""Encrypted alerts through the service: the client keeps the keys, the server computes on
ciphertext and keeps nothing of it (a real server with an HE-friendly model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.privacy.conftest import glucose_windows, he_model
from tests.service.conftest import Server, make_service_data

from tailorml.client import ServiceAlerts
from tailorml.models.cnn import save_model
from tailorml.privacy.context import load_public
from tailorml.privacy.params import PrivacyError
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

    stored = service.data / "he-contexts" / f"{alice.id}.ctx"
    context = load_public(stored.read_bytes())  # refuses a context with a secret key
    assert not context.has_secret_key()
    audit = [e for e in Registry(service.data).audit(alice.id) if e.action == "encrypted_inference"]
    assert len(audit) == 1 and audit[0].details["bytes_in"] > 100_000  # one request so far
    assert set(audit[0].details) == {"bytes_in", "bytes_out", "model_sha256"}  # no content
    sent = alerts.client.encrypt(windows[:1])
    with server.client(alice.bearer) as client:
        answer = client.post("/api/v1/encrypted/alert", content=sent)
    assert answer.status_code == 200
    pieces = [sent[i : i + 64] for i in range(1_000, len(sent), len(sent) // 8)]
    for path in (p for p in service.data.rglob("*") if p.is_file()):
        content = path.read_bytes()  # the database, its WAL, contexts, logs
        assert not any(piece in content for piece in pieces), path  # ciphertext never kept


def alerts_softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_without_a_registered_context_or_an_he_model_the_answer_says_what_to_do(
    he_server, server, service_data
):
    he, service, _ = he_server
    with he.client(service.people["carol"].bearer) as client:
        answer = client.post("/api/v1/encrypted/alert", content=b"x")
    assert answer.status_code == 400 and "PUT /api/v1/encrypted/context" in answer.json()["message"]
    with pytest.raises(PrivacyError, match="offers no encrypted alerts"):
        ServiceAlerts(server.url, service_data.people["carol"].token)
