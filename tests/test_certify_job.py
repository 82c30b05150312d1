"""The certify job's ε sweep on a one-input alert model whose certificates follow by hand."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from tailorml.config import Config
from tailorml.data.glucose import HYPO
from tailorml.policy import AlertPolicy
from tailorml.robust.evaluate import evenly_spaced
from tailorml.robust.individual import sweep_verified


class Counter:
    def __init__(self) -> None:
        self.total = 0

    def advance(self, amount: int = 1) -> None:
        self.total += amount


def alert_model() -> nn.Module:
    """Logits (0, -(x - 100) / 10, 0): P(hypo) >= 0.5 iff x <= 100 - 10 ln 2 = 93.07."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(1, 3))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[0.0], [-0.1], [0.0]]))
        net[1].bias.copy_(torch.tensor([0.0, 10.0, 0.0]))
    net.policy = AlertPolicy(channels=("cgm",))
    return net


def test_sweep_verifies_each_window_up_to_its_distance_from_the_cut():
    cut = 100 - 10 * math.log(2)
    # hypo windows at 80 and 90 mg/dL: provably alerting while x + eps <= cut, i.e. up to
    # eps 13.07 and 3.07
    x = np.array([[[80.0]], [[90.0]]], dtype=np.float32)
    y = np.array([HYPO, HYPO])
    config = Config()
    config.robust.eps_grid = [0.0, 2.5, 5.0, 10.0, 15.0]
    counter = Counter()
    points = sweep_verified(config, alert_model(), x, y, counter)
    assert [p["eps"] for p in points] == [0.0, 2.5, 5.0, 10.0, 15.0]
    assert [p["verified_acc"] for p in points] == [1.0, 1.0, 0.5, 0.5, 0.0]
    assert 90 + 2.5 < cut < 90 + 5 and 80 + 10 < cut < 80 + 15
    # progress counts every window at every ε, whether or not it was re-certified
    assert counter.total == 2 * 5


def test_evenly_spaced_keeps_the_ends_and_all_when_few():
    indices = np.arange(100, 200)
    chosen = evenly_spaced(indices, 5)
    assert chosen.tolist() == [100, 125, 150, 174, 199]
    assert evenly_spaced(indices, 0).tolist() == indices.tolist()
    assert evenly_spaced(indices[:3], 5).tolist() == [100, 101, 102]


@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_sweep_certifies_the_model_policy_threshold(threshold):
    """The sweep certifies the decision at the model's own threshold: P(hypo) >= t iff
    x <= 100 - 10 ln(2 t / (1 - t)) for this model."""
    model = alert_model()
    model.policy = model.policy.with_threshold(threshold)
    cut = 100 - 10 * math.log(2 * threshold / (1 - threshold))
    x = np.array([[[cut - 4.0]]], dtype=np.float32)
    config = Config()
    config.robust.eps_grid = [3.0, 5.0]
    points = sweep_verified(config, model, x, np.array([HYPO]), Counter())
    assert [p["verified_acc"] for p in points] == [1.0, 0.0]


def test_reproduce_command_names_every_certify_option(tmp_path):
    from tailorml.robust.report import reproduce_command

    robust = {
        "eps": 7.5,
        "relative_percent": 10.0,
        "method": "ibp",
        "max_windows": 0,
        "sweep_windows": 20,
    }
    run = tmp_path / "my run"
    assert reproduce_command(run, robust) == (
        f"tailorml certify --run '{run}' --eps 7.5 --relative 10 --method ibp "
        "--max-windows 0 --sweep-windows 20"
    )
    assert reproduce_command(run, robust, tmp_path / "m.pt").endswith(
        f"--sweep-windows 20 --model {tmp_path / 'm.pt'}"
    )
