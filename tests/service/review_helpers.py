"""Shared by the review page tests: a session with the predefined model and one proposal
of known held-out figures, a signed-in TestClient, and readings of a known trace."""

from __future__ import annotations

import copy
import re
import uuid

import numpy as np
import pandas as pd
import torch
from fastapi.testclient import TestClient

from tailorml.models.cnn import model_bytes
from tailorml.registry.models import CandidateRecord, Registry
from tailorml.service.artifacts import seal_session
from tailorml.service.core import Service

#: The predefined model as deployed, and the proposal, on the same 7 held-out days with 10
#: lows: the proposal catches every low (9 → 10), warns 2 more 15 min ahead (6 → 8, i.e.
#: 6.0 → 8.0 a week), and doubles the false alarms (0.84 → 1.68 a day).
CURRENT = {
    "hypo_sensitivity": 0.9,
    "hypo_sensitivity_early": 0.6,
    "held_out_hypo_events": 10,
    "false_alerts_per_day": 0.84,
    "median_lead_minutes": 20.0,
    "balanced_accuracy": 0.8,
    "acc_general": 0.9,
    "agreement_in_range": 1.0,
    "stress_alerted": 24,
    "stress_traces": 24,
}
PROPOSED = CURRENT | {
    "hypo_sensitivity": 1.0,
    "hypo_sensitivity_early": 0.8,
    "false_alerts_per_day": 1.68,
    "median_lead_minutes": 25.0,
}
HELD_OUT_DAYS = 7


def register(service: Service, individual: str, trained, shift: float = 0.01) -> int:
    """A session of `individual` with the predefined candidate and a proposal; its held-out
    tables (7 days) sealed with the person's key, as the service's worker leaves them.
    Returns the proposal's id."""
    registry: Registry = service.registry
    predefined = registry.predefined()
    model = copy.deepcopy(trained.model)
    with torch.no_grad():
        next(model.parameters()).add_(shift)
    gates = [{"gate": "no_harm", "passed": True, "numbers": {}, "reason": "fine"}]
    records = [
        CandidateRecord("predefined", b"", 0.7, False, CURRENT, gates, {}, predefined.id),
        CandidateRecord("TL(n=300)", model_bytes(model), 0.6, True, PROPOSED, gates, {}),
    ]
    data_gate = {
        "gate": "data_sufficiency",
        "passed": True,
        "reason": "9.0 days of data",
        "numbers": {"days": 9.0, "hypo_events": 4, "hyper_events": 3, "missing_fraction": 0.0}
        | {"low_mgdl": 70.0, "high_mgdl": 180.0}
        | {"fraction_low": 0.1, "fraction_in_range": 0.8, "fraction_high": 0.1},
    }
    key = uuid.uuid4().hex
    summary = {
        "synthetic": True,
        "data_gate": data_gate,
        "policy": trained.model.policy.to_dict(),
        "artifacts": key,
    }
    folder = registry.root / "artifacts" / key
    folder.mkdir(parents=True)
    windows = HELD_OUT_DAYS * 288
    times = pd.date_range("2026-01-01", periods=windows, freq="5min")
    cgm = 140 + 60 * np.sin(np.arange(windows) / 30)
    pd.DataFrame({"time": times, "cgm": cgm}).to_parquet(folder / "readings.parquet")
    pd.DataFrame(
        {
            "time": times,
            "label_is_hypo": cgm < 90,
            "current_cgm": cgm,
            "previous_cgm": cgm,
            "p_hypo::predefined": (cgm < 90).astype(float),
            "p_hypo::TL(n=300)": (cgm < 95).astype(float),
        }
    ).to_parquet(folder / "predictions.parquet")
    session = registry.register_session(
        individual, predefined.id, "hash", records, 1, summary, actor="t"
    )
    seal_session(registry, session.id, service.keyring.cipher(individual))
    return session.proposal_candidate_id


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, "the page carries no form token"
    return found.group(1)


def signed_in(client: TestClient, token: str) -> TestClient:
    """Sign `client` (a fresh cookie jar) in with `token`."""
    form = client.get("/login")
    answer = client.post(
        "/login", data={"token": token, "csrf": form_token(form.text)}, follow_redirects=False
    )
    assert answer.status_code == 303
    return client
