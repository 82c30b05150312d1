"""An API process decides with onnxruntime and the policy the registry recorded, never with
torch: the ONNX file and policy are made where a model is registered (torch is there), or,
for a model registered before they were, by a process of its own.

The request-path test runs the app as a `serve --workers N` worker builds it
(`app_from_environment`) in a fresh interpreter, serves uploads of two patients with
approved personalized models (one with its ONNX file made at registration, one registered
"before": none recorded), and reports every call into torch's code during start-up and the
requests, and whether torch is imported at all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.service.conftest import Server, free_port, make_service_data, propose_candidate

from tailorml.errors import ModelFileError, TailormlError
from tailorml.models.cnn import load_model
from tailorml.policy import AlertPolicy
from tailorml.registry.models import Registry
from tailorml.service.crypto import write_key_file
from tailorml.service.runtime import Runtimes, prepare_in_subprocess

SCRIPT = textwrap.dedent("""
    import builtins, json, sys, threading, time, traceback

    importers = []  # where torch was first imported from (tailorml frames only)
    real_import = builtins.__import__

    def watch(name, *args, **kwargs):
        if name.split(".")[0] == "torch" and "torch" not in sys.modules and not importers:
            importers.extend(
                f"{f.filename.rsplit('src/', 1)[-1]}:{f.lineno}"
                for f in traceback.extract_stack()[:-1] if "tailorml" in f.filename
            )
        return real_import(name, *args, **kwargs)

    builtins.__import__ = watch
    from fastapi.testclient import TestClient
    from tailorml.cli_service import app_from_environment

    app = app_from_environment()
    torch_calls = []

    def profile(frame, event, arg):
        code = frame.f_code
        # an imported torch replaces inspect.getfile with its own (`_patched_getfile`): a call
        # of inspect's, not torch's work; gone once torch is not imported
        if event == "call" and "/torch/" in code.co_filename and len(torch_calls) < 5:
            if code.co_name != "_patched_getfile":
                torch_calls.append(f"{code.co_filename}:{code.co_name}")

    # from here on: the app's start-up (predefined model) and the requests
    threading.setprofile(profile)
    sys.setprofile(profile)
    now = int(time.time() * 1000)
    decided = {}
    with TestClient(app) as client:
        for secret in sys.argv[1:]:
            headers = {"api-secret": secret}
            batch = [{"type": "sgv", "sgv": 100 + 3 * i, "date": now - (33 - i) * 300_000}
                     for i in range(30)]
            assert client.post("/api/v1/entries", json=batch, headers=headers).status_code == 200
            for i in range(30, 33):  # one reading a request, as an uploader sends them
                one = {"type": "sgv", "sgv": 190 - 5 * i, "date": now - (33 - i) * 300_000}
                answer = client.post("/api/v1/entries", json=[one], headers=headers)
                assert answer.status_code == 200, answer.text
            alerts = client.get("/api/v1/alerts", params={"count": 100}, headers=headers).json()
            decided[secret] = [a["model_kind"] for a in alerts if a["probabilities"] is not None]
    sys.setprofile(None)
    threading.setprofile(None)
    print(json.dumps({
        "torch_calls": torch_calls,
        "torch_imported": "torch" in sys.modules,
        "torch_importers": importers,
        "decided": list(decided.values()),
    }))
""")


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained):
    return make_service_data(tmp_path_factory.mktemp("no-torch"), trained)


def approve(registry: Registry, candidate: int) -> None:
    registry.decide(candidate, "approve", "bob", "clinician", "test")


@pytest.fixture(scope="module")
def request_path(made, trained):
    """Alice's approved model got its ONNX file at registration; carol's was registered as
    before this change (none recorded): the API process has it made by another process."""
    registry = Registry(made.data)
    alice, carol = made.people["alice"], made.people["carol"]
    approve(registry, propose_candidate(made.data, alice.id, trained, shift=0.02))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Registry, "_servable", lambda *_: None)  # an older registry
        old = propose_candidate(made.data, carol.id, trained, shift=0.04)
    old_model = registry.model(registry.candidate(old).model_id)
    assert registry.serving(old_model) is None
    approve(registry, old)
    settings = {
        "data": str(made.data),
        "key_file": str(made.key_file),
        "config": None,
        "durability": "normal",
        "he_model": None,
        "jobs": False,
        "log_level": "WARNING",
    }
    env = os.environ | {"TAILORML_SERVE": json.dumps(settings)}
    secrets = [alice.secret["api-secret"], carol.secret["api-secret"]]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *secrets],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), registry.serving(old_model)


def test_the_request_path_runs_no_torch_code(request_path):
    report, prepared = request_path
    assert report["torch_calls"] == []
    # each patient's readings with a full 2 h window (7 of the batch, then the 3 single ones)
    # were decided by their personalized models
    assert [len(kinds) for kinds in report["decided"]] == [10, 10]
    assert {kind for kinds in report["decided"] for kind in kinds} == {"personalized"}
    assert prepared is not None and prepared.onnx_path.is_file()  # made by another process


def test_an_api_process_never_imports_torch(request_path):
    report, _ = request_path
    assert not report["torch_imported"], report["torch_importers"]


def test_registration_records_the_onnx_file_and_the_policy(made, trained):
    registry = Registry(made.data)
    alice = made.people["alice"]
    candidate = propose_candidate(made.data, alice.id, trained, shift=0.05)
    for record in (registry.predefined(), registry.model(registry.candidate(candidate).model_id)):
        serving = registry.serving(record)
        assert serving is not None
        assert serving.onnx_path == record.path.with_name(f"{serving.onnx_sha256}.onnx")
        assert serving.policy == load_model(record.path).policy
        assert registry.policy(record) == serving.policy


def test_a_served_model_decides_as_its_model_file_without_preparing(made, trained):
    """The policy (at the active threshold) and the logits are the model file's."""
    registry = Registry(made.data)
    person = "p-runtime-000"
    approve(registry, propose_candidate(made.data, person, trained, shift=0.01))

    def refuse(*_):
        raise AssertionError("a registered model needs no preparation")

    runtime = Runtimes(registry, prepare=refuse).for_person(person)
    active = registry.active_model(person)
    model = active.load()
    assert runtime.policy == model.policy and runtime.kind == "personalized"
    windows = trained.test[:64].astype(np.float32)
    with torch.no_grad():
        expected = AlertPolicy.probabilities(model(torch.from_numpy(windows)).numpy())
    np.testing.assert_allclose(runtime.proba(windows), expected, atol=1e-5)


def test_an_onnx_file_that_does_not_match_its_hash_is_refused(tmp_path, trained):
    from tailorml.models.cnn import save_model

    save_model(trained.model, tmp_path / "model.pt")
    registry = Registry(tmp_path / "registry")
    record = registry.register_predefined(tmp_path / "model.pt", "h", {}, None, "test")
    serving = registry.serving(record)
    serving.onnx_path.write_bytes(serving.onnx_path.read_bytes() + b"\0")
    with pytest.raises(TailormlError, match="does not match its sha256"):
        Runtimes(registry).session(record)


def test_a_file_that_is_no_model_gets_no_onnx_file_and_a_clear_error(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    registry = Registry(tmp_path / "registry")
    record = registry.register_predefined(tmp_path / "junk.pt", "h", {}, None, "test")
    assert registry.serving(record) is None  # registered as before; refused where served
    with pytest.raises(ModelFileError, match="not a tailorml model file"):
        prepare_in_subprocess(registry, record)


def test_the_parent_of_several_workers_builds_no_service(made):
    """`serve --workers 2` only forks: no torch, no Service in it; the workers answer."""
    server = Server(made, extra=["--workers", "2", "--no-jobs"]).start()
    try:
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "libtorch" not in maps and "onnxruntime" not in maps
    finally:
        server.kill(signal.SIGTERM)


def test_several_workers_that_could_not_start_fail_once_with_the_reason(tmp_path):
    """A setting every worker would refuse is found by one child before any worker starts."""
    data, key = tmp_path / "data", write_key_file(tmp_path / "server.key")
    command = [sys.executable, "-m", "tailorml", "serve", "--data", str(data), "--key-file"]
    command += [str(key), "--workers", "2", "--port", str(free_port())]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2  # the CLI's exit for a refused setting, as with one process
    assert "has no predefined model" in done.stdout + done.stderr


def test_erasure_deletes_the_onnx_files_of_the_retired_models(made, trained):
    registry = Registry(made.data)
    candidate = propose_candidate(made.data, "p-erased-000", trained, shift=0.06)
    retired = registry.serving(registry.model(registry.candidate(candidate).model_id))
    kept = registry.serving(registry.predefined())
    assert registry.retire("p-erased-000", "test", "t") == [registry.candidate(candidate).model_id]
    assert not retired.onnx_path.exists() and kept.onnx_path.is_file()
