"""The service's store of public contexts, in-process: one per device under its fingerprint,
the least recently used one replaced, a bad copy refused, erasure removing all."""

from __future__ import annotations

import hashlib
import os

import pytest
from tests.privacy.conftest import glucose_windows, he_model

from tailorml.errors import TailormlError
from tailorml.models.cnn import save_model
from tailorml.privacy.client import EncryptedAlertClient
from tailorml.service import encrypted
from tailorml.service.auth import AuthError
from tailorml.service.encrypted import ConflictError, EncryptedAlerts

PERSON = "p-0123456789ab"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("he")
    save_model(he_model(), folder / "he.pt")
    model_sha = hashlib.sha256((folder / "he.pt").read_bytes()).hexdigest()
    spec = EncryptedAlerts(folder, folder / "he.pt").spec()
    devices = [EncryptedAlertClient.from_spec(spec) for _ in range(3)]
    return folder / "he.pt", model_sha, devices, [d.public_context() for d in devices]


def test_the_least_recently_used_device_is_replaced(served, tmp_path, monkeypatch):
    model_file, model_sha, devices, publics = served
    monkeypatch.setattr(encrypted, "MAX_DEVICES", 2)
    alerts = EncryptedAlerts(tmp_path, model_file)
    names = [hashlib.sha256(p).hexdigest() for p in publics]
    assert alerts.register(PERSON, publics[0])["replaced"] == []
    assert alerts.register(PERSON, publics[1])["replaced"] == []
    folder = tmp_path / "he-contexts" / PERSON / alerts.model.plan.parameters.tag
    os.utime(folder / f"{names[0]}.ctx", (1, 1))  # device 0 long unused, device 1 recent
    os.utime(folder / f"{names[1]}.ctx", (2, 2))
    window = devices[1].encrypt(glucose_windows(1))
    alerts.evaluate(PERSON, window, names[1], model_sha)  # using device 1 keeps it fresh
    answer = alerts.register(PERSON, publics[2])
    assert answer == {"context_sha256": names[2], "bytes": len(publics[2]), "replaced": [names[0]]}
    assert sorted(p.stem for p in folder.iterdir()) == sorted(names[1:])
    with pytest.raises(ConflictError, match=r"no public context .* registered for you") as error:
        alerts.evaluate(PERSON, devices[0].encrypt(glucose_windows(1)), names[0], model_sha)
    assert error.value.reason == "context_unknown"


def test_a_damaged_stored_context_is_refused_as_unreadable(served, tmp_path):
    model_file, model_sha, devices, publics = served
    name = hashlib.sha256(publics[0]).hexdigest()
    alerts = EncryptedAlerts(tmp_path, model_file)
    alerts.register(PERSON, publics[0])
    stored = tmp_path / "he-contexts" / PERSON / alerts.model.plan.parameters.tag / f"{name}.ctx"
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte deep inside the keys
    stored.write_bytes(bytes(damaged))
    fresh = EncryptedAlerts(tmp_path, model_file)  # a restarted server: nothing cached
    window = devices[0].encrypt(glucose_windows(1))
    with pytest.raises(
        ConflictError, match="stored on the server is unreadable or made for another"
    ) as error:
        fresh.evaluate(PERSON, window, name, model_sha)
    assert error.value.reason == "context_unknown"
    fresh.register(PERSON, publics[0])  # registering again heals it
    assert fresh.evaluate(PERSON, window, name, model_sha).startswith(b"TMLHE1")


def test_erasure_removes_every_device_s_context_and_refuses_new_ones(served, tmp_path):
    model_file, _, _, publics = served
    alerts = EncryptedAlerts(tmp_path, model_file)
    alerts.register(PERSON, publics[0])
    alerts.register(PERSON, publics[1])
    assert alerts.forget(PERSON) is True
    assert list((tmp_path / "he-contexts").iterdir()) == []
    # a registration that authenticated before the erasure must not bring a context back
    with pytest.raises(AuthError, match="this account was erased"):
        alerts.register(PERSON, publics[2])
    assert list((tmp_path / "he-contexts").iterdir()) == []
    assert alerts.forget(PERSON) is False


def test_contexts_no_request_can_use_are_removed_at_start(served, tmp_path):
    model_file, _, _, publics = served
    alerts = EncryptedAlerts(tmp_path, model_file)
    alerts.register(PERSON, publics[0])
    chain = alerts.model.plan.parameters.tag
    assert chain == "n8192-q50-35-35-35-50-s35"
    kept = (
        tmp_path / "he-contexts" / PERSON / chain / f"{hashlib.sha256(publics[0]).hexdigest()}.ctx"
    )
    person = tmp_path / "he-contexts" / PERSON
    unusable = [
        tmp_path / "he-contexts" / f"{PERSON}.ctx",  # one per person, named by nobody
        person / f"{'a' * 64}.ctx",  # per device, but stored without its chain
        person / "n16384-q60-40-40-40-40-40-60-s40" / f"{'b' * 64}.ctx",  # another chain
    ]
    for path in unusable:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(publics[1])
    interrupted = kept.parent / f".{kept.name}.x1y2.tmp"  # a write a crash cut short
    interrupted.write_bytes(publics[1][:1000])
    EncryptedAlerts(tmp_path, None)  # started without --he-model: the next chain is unknown
    assert [path.exists() for path in unusable] == [False, False, True]
    EncryptedAlerts(tmp_path, model_file)  # the server starts again with its model
    assert [path.exists() for path in unusable] == [False, False, False]
    assert sorted(p.name for p in person.iterdir()) == [chain]  # the old chain's folder too
    assert kept.exists() and not interrupted.exists()
    alerts.forget(PERSON)
    (tmp_path / "he-contexts" / PERSON / "n16384-q60-40-s40").mkdir(parents=True)
    EncryptedAlerts(tmp_path, model_file)
    assert list((tmp_path / "he-contexts").iterdir()) == []  # no empty folder left behind


def test_he_model_errors_name_the_option_and_the_path(tmp_path):
    (tmp_path / "run").mkdir()
    save_model(he_model(), tmp_path / "run" / "model.pt")
    with pytest.raises(TailormlError, match=r"--he-model .*/run is a folder.*pass .*/run/model.pt"):
        EncryptedAlerts(tmp_path, tmp_path / "run")
    with pytest.raises(TailormlError, match=r"--he-model .*/missing.pt: no such model file; pass"):
        EncryptedAlerts(tmp_path, tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(TailormlError, match=r"^--he-model .*/junk.pt: "):
        EncryptedAlerts(tmp_path, tmp_path / "junk.pt")


def test_the_context_limit_is_a_fresh_context_plus_ten_percent(served, tmp_path):
    model_file, _, _, publics = served
    limit = EncryptedAlerts(tmp_path, model_file).context_limit()
    # keys are random bytes: another device's context has the same size within a little
    assert abs(limit - 1.1 * len(publics[0])) < 0.01 * len(publics[0])
    assert limit < encrypted.MAX_CONTEXT_BYTES
