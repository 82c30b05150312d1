"""A service data directory with a predefined model and four people, and a real server
process on 127.0.0.1 (tests talk to it over HTTP like an uploader would)."""

from __future__ import annotations

import copy
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

from tailorml.cli_service import register_predefined_run
from tailorml.config import config_from_dict, to_toml
from tailorml.models.cnn import model_bytes, save_model
from tailorml.registry.models import CandidateRecord, Registry
from tailorml.registry.people import PeopleStore
from tailorml.service.auth import add_person
from tailorml.service.crypto import write_key_file

PATIENTS = ["adolescent-003", "adult-008", "child-004"]


@dataclass
class Account:
    id: str
    name: str
    token: str

    @property
    def secret(self) -> dict[str, str]:
        """The header a Nightscout uploader sends."""
        return {"api-secret": hashlib.sha1(self.token.encode()).hexdigest()}

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class ServiceData:
    data: Path
    key_file: Path
    run: Path
    config: Path  # personalization jobs: the three patients' first three days as D_G
    people: dict[str, Account]
    database: str | None = None  # a PostgreSQL URL holding the tables (`serve --database`)


def make_service_data(root: Path, trained, database: str | None = None) -> ServiceData:
    """`database`: a PostgreSQL URL holding the tables (`tailorml serve --database`), the
    data directory then keeps the model files."""
    data, run = root / "data", root / "run"
    run.mkdir(parents=True)
    save_model(trained.model, run / "model.pt")
    config = config_from_dict(
        {"cohort": {"path": "synthetic", "individuals": PATIENTS, "max_days": 3.0}}
    )
    (run / "config.toml").write_text(to_toml(config))
    (root / "jobs.toml").write_text(to_toml(config))
    key_file = write_key_file(root / "server.key")
    data.mkdir()
    register_predefined_run(data, run, database)
    store = PeopleStore(database or data)
    people = {}
    for name, role in (
        ("alice", "patient"),
        ("carol", "patient"),
        ("bob", "clinician"),
        ("mallory", "clinician"),
    ):
        person, token = add_person(store, name, role, "test")
        people[name] = Account(person.id, name, token)
    store.assign(people["bob"].id, people["alice"].id, "test")
    return ServiceData(data, key_file, run, root / "jobs.toml", people, database)


def propose_candidate(
    data: Path | ServiceData, individual: str, trained, shift: float = 0.01, tables: bool = False
) -> int:
    """Register a session for `individual` whose proposal (a slightly moved copy of the
    predefined model) awaits review; returns the candidate id. With `tables`, the session
    also stores a day of held-out readings and predictions, as `tailorml personalize` does.
    `data`: a data directory, or a `ServiceData` (whose tables may be in PostgreSQL)."""
    if not isinstance(data, str | Path):  # a ServiceData (of either import of this module)
        registry = Registry(data.data, data.database)
        data = data.data
    else:
        registry = Registry(data)
    model = copy.deepcopy(trained.model)
    with torch.no_grad():
        next(model.parameters()).add_(shift)
    record = CandidateRecord(
        name="TL(n=300)",
        model_bytes=model_bytes(model),
        threshold=0.6,
        passed_gates=True,
        metrics={
            "hypo_sensitivity": 0.9,
            "hypo_sensitivity_early": 0.8,
            "held_out_hypo_events": 10,
            "false_alerts_per_day": 0.5,
            "median_lead_minutes": 20.0,
            "balanced_accuracy": 0.8,
            "acc_general": 0.9,
            "agreement_in_range": 0.97,
            "stress_alerted": 24,
            "stress_traces": 24,
        },
        gates=[{"gate": "no_harm", "passed": True, "numbers": {}, "reason": "fine"}],
        config={},
    )
    data_gate = {
        "gate": "data_sufficiency",
        "passed": True,
        "reason": "9.0 days of data",
        "numbers": {"days": 9.0, "hypo_events": 4, "hyper_events": 3, "missing_fraction": 0.0}
        | {"low_mgdl": 70.0, "high_mgdl": 180.0}
        | {"fraction_low": 0.1, "fraction_in_range": 0.8, "fraction_high": 0.1},
    }
    summary = {"synthetic": True, "data_gate": data_gate, "policy": trained.model.policy.to_dict()}
    if tables:
        summary["artifacts"] = "0123456789abcdef"
        folder = data / "artifacts" / summary["artifacts"]
        folder.mkdir(parents=True)
        times = pd.date_range("2026-01-01", periods=288, freq="5min")
        cgm = 140 + 60 * np.sin(np.arange(288) / 30)
        pd.DataFrame({"time": times, "cgm": cgm}).to_parquet(folder / "readings.parquet")
        pd.DataFrame(
            {
                "time": times,
                "label_is_hypo": cgm < 90,
                "current_cgm": cgm,
                "p_hypo::TL(n=300)": (cgm < 95).astype(float),
            }
        ).to_parquet(folder / "predictions.parquet")
    session = registry.register_session(
        individual, registry.predefined().id, "hash", [record], 0, summary, actor="t"
    )
    from tailorml.soft.card import render_card

    render_card(registry, session.id)  # as a personalization session writes it
    return session.proposal_candidate_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`tailorml serve` in its own process."""

    def __init__(self, service: ServiceData, port: int | None = None, extra=()) -> None:
        self.service = service
        self.extra = list(extra)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 300.0) -> Server:
        command = [sys.executable, "-m", "tailorml", "serve", "--data", str(self.service.data)]
        command += ["--key-file", str(self.service.key_file), "--port", str(self.port)]
        command += ["--config", str(self.service.config), *self.extra]
        if self.service.database is not None and "--database" not in self.extra:
            command += ["--database", self.service.database]
        self.log = open(self.service.data.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=os.environ.copy()
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.returncode}")
            try:
                if httpx.get(self.url + "/api/v1/status.json", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.log.close()

    def client(self, headers: dict | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers or {}, timeout=30.0)


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained) -> ServiceData:
    """A data directory of this test module's own (a module may define its own `made`)."""
    return make_service_data(tmp_path_factory.mktemp("service"), trained)


@pytest.fixture(scope="module")
def app(made):
    """(client, service): the app in this process on `made`, without the job runner; a
    server error is an answer (not raised) and a redirect is not followed, so tests see
    exactly what an uploader would."""
    from fastapi.testclient import TestClient

    from tailorml.service.app import create_app
    from tailorml.service.core import Service
    from tailorml.service.crypto import ServerKey

    service = Service(made.data, ServerKey.load(made.key_file, made.data), database=made.database)
    with TestClient(
        create_app(service, run_jobs=False), raise_server_exceptions=False, follow_redirects=False
    ) as client:
        yield client, service


@pytest.fixture(scope="session")
def service_data(tmp_path_factory, trained) -> ServiceData:
    return make_service_data(tmp_path_factory.mktemp("service"), trained)


@pytest.fixture(scope="session")
def server(service_data):
    running = Server(service_data).start()
    yield running
    running.kill(signal.SIGTERM)
