"""Memory of one API process of the cloud service: resident set size (RSS) of a real
`tailorml serve --no-jobs` after start-up and after 1,000 uploads of one patient whose
personalized model (approved in the registry) decides every reading; SQLite data directory.

    .venv/bin/python benchmarks/bench_service_memory.py [--uploads 1000]

Why one process: `serve --workers N` runs N copies of it, so N times this figure (plus the
parent, which only forks) is what a host needs. The data directory is made by a short child
process (it trains nothing: a model of the default architecture with random weights, which
costs what a trained one costs), so that torch is never in the measuring process; at most
two processes run at once (this one and one child), and the whole run stops after
`--timeout` seconds. Readings are synthetic, one per request, 5 minutes apart.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

FIVE_MINUTES = 300_000


def setup(root: Path) -> None:
    """The data directory (child process): a predefined model, a patient and their approved
    personalized model, as `tailorml personalize` and a review would leave them."""
    import torch

    from tailorml.config import ModelConfig
    from tailorml.models.cnn import build_model, model_bytes, save_model
    from tailorml.policy import AlertPolicy
    from tailorml.registry.models import CandidateRecord, Registry
    from tailorml.registry.people import PeopleStore
    from tailorml.service.auth import add_person
    from tailorml.service.crypto import write_key_file

    torch.manual_seed(0)
    model = build_model(ModelConfig(), 1, 24, 3, torch.full((1,), 140.0), torch.full((1,), 50.0))
    model.policy = AlertPolicy()
    data = root / "data"
    data.mkdir()
    save_model(model, root / "predefined.pt")
    registry = Registry(data)
    predefined = registry.register_predefined(root / "predefined.pt", "h", {}, None, "bench")
    store = PeopleStore(data)
    person, token = add_person(store, "patient", "patient", "benchmark")
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    gates = [{"gate": "no_harm", "passed": True, "numbers": {}, "reason": "benchmark"}]
    candidate = CandidateRecord("TL", model_bytes(model), 0.4, True, {}, gates, {})
    session = registry.register_session(person.id, predefined.id, "h", [candidate], 0, {})
    registry.decide(session.proposal_candidate_id, "approve", "bench", "clinician", "benchmark")
    write_key_file(root / "server.key")
    secret = hashlib.sha1(token.encode()).hexdigest()
    (root / "bench.json").write_text(json.dumps({"secret": secret, "person": person.id}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory(pid: int) -> dict[str, float]:
    """RSS now and its peak (VmHWM), in MB, of one process (Linux /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(fields["VmRSS"], 1), "peak_mb": round(fields["VmHWM"], 1)}


def torch_loaded(pid: int) -> bool:
    """Whether the process mapped torch's shared library (it imported torch)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def measure(root: Path, uploads: int, deadline: float) -> dict:
    settings = json.loads((root / "bench.json").read_text())
    port = free_port()
    command = [sys.executable, "-m", "tailorml", "serve", "--data", str(root / "data")]
    command += ["--key-file", str(root / "server.key"), "--port", str(port), "--no-jobs"]
    command += ["--log-level", "warning"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        began = time.monotonic()
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            try:
                if httpx.get(url + "/api/v1/status.json").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        result = {"startup_s": round(time.monotonic() - began, 1)}
        result["after_startup"] = memory(server.pid) | {"torch": torch_loaded(server.pid)}
        start_ms = int(time.time() * 1000) - (uploads + 48) * FIVE_MINUTES
        headers = {"api-secret": settings["secret"]}
        decided = 0
        began = time.monotonic()
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            for index in range(uploads):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"out of time after {index} uploads")
                reading = {
                    "type": "sgv",
                    "sgv": 100 + (index * 7) % 120,
                    "date": start_ms + index * FIVE_MINUTES,
                }
                client.post("/api/v1/entries", json=[reading]).raise_for_status()
            current = client.get("/api/v1/alerts", params={"count": uploads}).json()
            decided = sum(1 for alert in current if alert.get("probabilities") is not None)
        result["uploads_s"] = round(time.monotonic() - began, 1)
        result["after_uploads"] = memory(server.pid) | {"torch": torch_loaded(server.pid)}
        result["decided_by_the_model"] = decided
        return result
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uploads", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the whole run")
    parser.add_argument("--setup", type=Path, help=argparse.SUPPRESS)  # the child's job
    args = parser.parse_args()
    if args.setup is not None:
        setup(args.setup)
        return
    deadline = time.monotonic() + args.timeout
    print(
        f"machine: {os.cpu_count()} cores ({cpu_model()}), python {platform.python_version()}; "
        "one API process (serve --no-jobs), SQLite data directory"
    )
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        subprocess.run(
            [sys.executable, __file__, "--setup", str(root)],
            check=True,
            timeout=max(1.0, deadline - time.monotonic()),
        )
        result = measure(root, args.uploads, deadline)
    print(json.dumps(result, indent=2))
    print(
        f"RSS after start-up {result['after_startup']['rss_mb']:.0f} MB, after "
        f"{args.uploads:,} uploads {result['after_uploads']['rss_mb']:.0f} MB (peak "
        f"{result['after_uploads']['peak_mb']:.0f} MB); torch imported: "
        f"{result['after_uploads']['torch']}"
    )


if __name__ == "__main__":
    main()
