"""train.checkpoint_by = "alerts": the checkpoint score is the early sensitivity of the
operating point chosen on the validation parts, on a hand-made cohort with one low."""

import numpy as np
import pytest
import torch
from torch import nn

from conftest import cohort_frame
from tailorml.config import config_from_dict
from tailorml.data.glucose import HYPO
from tailorml.data.prepared import prepare
from tailorml.pipeline import alert_score
from tailorml.policy import AlertPolicy

N_READINGS = 600  # 50 h at 5 min


class AlertBelow(nn.Module):
    """Alerts (P(hypo) ≈ 1) when the window's last reading is at or below `level` mg/dL."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 3)
        logits[:, HYPO] = torch.clamp(40.0 * (self.level + 0.5 - x[:, 0, -1]), -40.0, 40.0)
        return logits


@pytest.fixture
def validation(tmp_path):
    """One patient at 120 mg/dL; in the validation part glucose falls from 115 by 5 mg/dL
    per reading (5 min) to 75, then a 20-min low of 60 follows."""
    path = tmp_path / "flat.csv"
    cohort_frame({"p1": [120.0] * N_READINGS}, sample_minutes=5).to_csv(path, index=False)
    config = config_from_dict({"cohort": {"path": str(path)}})
    val_start, _ = prepare(config).splits.boundaries["p1"]["val"]
    values = [120.0] * N_READINGS
    low_at = val_start + 60
    values[low_at - 9 : low_at] = [115.0 - 5.0 * k for k in range(9)]  # 115 ... 75
    values[low_at : low_at + 4] = [60.0] * 4
    cohort_frame({"p1": values}, sample_minutes=5).to_csv(path, index=False)
    prepared = prepare(config)
    return config, prepared, AlertPolicy.from_config(config, 5)


def test_alert_score_is_the_early_sensitivity_at_the_budget(validation):
    _, prepared, policy = validation
    score = alert_score(prepared, policy, prepared.splits.pooled("val"), 1.0)
    # ≤ 100 mg/dL is first read at 100 (reading 3 of the fall), 30 min before the low
    # (useful lead 15 min): early; 0 false alerts, so within the 1/day budget
    assert score(AlertBelow(100.0)) == 1.0
    # ≤ 65 mg/dL alerts only once the low has begun: caught, but not early
    assert score(AlertBelow(65.0)) == 0.0
    # ≤ 80 mg/dL: reading 8 (75) is 5 min before the low: not early either
    assert score(AlertBelow(80.0)) == 0.0
    # the same scorer twice gives the same answer (people are re-scored, not accumulated)
    assert score(AlertBelow(100.0)) == 1.0


def test_alert_score_is_minus_one_when_no_threshold_meets_the_budget(validation):
    _, prepared, policy = validation
    score = alert_score(prepared, policy, prepared.splits.pooled("val"), 1.0)
    # alerting on every window (≤ 200 mg/dL): a false alert every 30 min of snooze, far over
    # 1/day at every threshold
    assert score(AlertBelow(200.0)) == -1.0
    assert np.isfinite(score(AlertBelow(100.0)))
