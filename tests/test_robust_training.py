"""Certification of the alert decision, robust objectives and their ramps, PGD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tailorml.models.schedule import epochs
from tailorml.models.train import LabeledData, train
from tailorml.policy import AlertPolicy
from tailorml.robust.attack import pgd
from tailorml.robust.bounds import bounds, margin_bounds
from tailorml.robust.certify import certified_decisions, certify, pair_index
from tailorml.robust.perturbation import SensorError
from tailorml.robust.training import Ramp, RobustTraining, worst_case_logits

HYPO = 1


def pair_lower(margins: dict[tuple[int, int], float], n_classes: int = 3) -> torch.Tensor:
    index = pair_index(n_classes)
    row = torch.full((len(index),), -10.0, dtype=torch.float64)
    for pair, value in margins.items():
        row[index[pair]] = value
    return row.unsqueeze(0)


def test_alert_rule_certificate_by_hand():
    # threshold 0.5: hypo needs exp(-m_h0) + exp(-m_h2) <= 1
    sure = pair_lower({(HYPO, 0): 1.0, (HYPO, 2): 2.0})  # e^-1 + e^-2 = 0.503
    unsure = pair_lower({(HYPO, 0): 0.1, (HYPO, 2): 0.1})  # 2 e^-0.1 = 1.81
    label = torch.tensor([HYPO])
    assert bool(certified_decisions(sure, label, HYPO, 0.5))
    assert not bool(certified_decisions(unsure, label, HYPO, 0.5))
    # at threshold 0.3 the bar is (1 - 0.3) / 0.3 = 2.33: the unsure margins now suffice
    assert bool(certified_decisions(unsure, label, HYPO, 0.3))
    # in range (0): P(hypo) < t needs exp(lb(z0 - zh)) + exp(lb(z2 - zh)) > 1, and 0 beats 2
    in_range = torch.tensor([0])
    never_hypo = {(0, HYPO): 0.5, (2, HYPO): -3.0}  # e^0.5 + e^-3 = 1.70 > 1
    assert bool(certified_decisions(pair_lower(never_hypo | {(0, 2): 0.2}), in_range, HYPO, 0.5))
    assert not bool(
        certified_decisions(pair_lower(never_hypo | {(0, 2): -0.2}), in_range, HYPO, 0.5)
    )
    maybe_hypo = {(0, HYPO): -1.0, (2, HYPO): -1.0, (0, 2): 5.0}  # 2 e^-1 = 0.74 <= 1
    assert not bool(certified_decisions(pair_lower(maybe_hypo), in_range, HYPO, 0.5))


def test_argmax_certificate_needs_every_margin_positive():
    lower = pair_lower({(2, 0): 0.3, (2, 1): 0.01})
    assert bool(certified_decisions(lower, torch.tensor([2]), None, 0.5))
    lower = pair_lower({(2, 0): 0.3, (2, 1): -0.01})
    assert not bool(certified_decisions(lower, torch.tensor([2]), None, 0.5))


def test_certify_a_one_input_alert_model_by_hand():
    # logits (0, -(x - 100) / 10, 0): P(hypo) >= 0.5 iff e^z_h >= 2, i.e. x <= 100 - 10 ln 2
    net = nn.Sequential(nn.Linear(1, 3)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.0], [-0.1], [0.0]]))
        net[0].bias.copy_(torch.tensor([0.0, 10.0, 0.0]))
    cut = 100 - 10 * math.log(2)  # 93.07
    x = np.array([[80.0], [91.0], [120.0]])
    assert 80 + 5 < cut < 91 + 5
    y = np.array([HYPO, HYPO, 0])
    certificate = certify(net, x, y, SensorError(5.0), AlertPolicy(threshold=0.5), "crown")
    # 80 + 5 = 85 < cut: certified; 91 + 5 crosses the cut; 120 - 5 = 115 never alerts, and
    # class 0 ties class 2 (argmax picks 0 but the tie is not a strict margin): not certified
    assert certificate.correct.tolist() == [True, True, True]
    assert certificate.certified.tolist() == [True, False, False]
    assert certificate.verified_accuracy == pytest.approx(1 / 3)


def test_alpha_crown_certifies_every_window_crown_does_and_no_wrong_decision():
    # certify runs CROWN first and α-CROWN only where it fell short: a superset by design,
    # and windows whose clean decision is wrong are never bounded nor certified
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    net = net.double()
    x = np.random.default_rng(0).normal(size=(40, 4))
    with torch.no_grad():
        y = net(torch.as_tensor(x)).argmax(1).numpy()
    y[:5] = (y[:5] + 1) % 3  # five wrong labels
    argmax = AlertPolicy.argmax(["a", "b", "c"])
    error = SensorError(0.2)
    crown = certify(net, x, y, error, argmax, "crown")
    alpha = certify(net, x, y, error, argmax, "alpha-crown")
    assert not crown.certified[:5].any() and not alpha.certified[:5].any()
    assert bool((alpha.certified >= crown.certified).all())
    assert alpha.certified.sum() >= crown.certified.sum() > 0


def test_ramp_by_hand():
    ramp = Ramp(total_steps=100, warmup_fraction=0.1, ramp_fraction=0.5)
    assert [ramp(s) for s in (0, 10, 35, 60, 100)] == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_worst_case_logits_are_minus_the_margin_bounds():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    worst = worst_case_logits(net, x, y, SensorError(0.1), "ibp")
    margins = margin_bounds(net, x, y, 0.1, "ibp")
    assert torch.allclose(worst[torch.arange(5), y], torch.zeros(5))
    others = ~F.one_hot(y, 3).bool()
    assert torch.allclose(worst[others].reshape(5, 2), -margins)
    # the worst-case loss bounds the loss of every input in the box from above
    with torch.no_grad():
        for _ in range(20):
            shifted = x + 0.1 * (2 * torch.rand_like(x) - 1)
            per_sample = F.cross_entropy(net(shifted), y, reduction="none")
            assert bool((per_sample <= F.cross_entropy(worst, y, reduction="none") + 1e-5).all())


def toy_problem(n: int = 400, seed: int = 0):
    """A robust feature (wide margin, ~98 % separable) and a brittle one (perfectly
    separable, but only 0.1 from the boundary): standard training leans on the brittle one,
    which an error of 0.3 flips; robust training has to use the robust one."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=generator)
    sign = 2 * y.float() - 1
    robust = 2.0 * sign + torch.randn(n, generator=generator)
    brittle = 0.1 * sign + 0.01 * torch.randn(n, generator=generator)
    return torch.stack([robust, brittle], 1), y


@pytest.mark.parametrize("kind", ["ibp", "crown-ibp", "pgd"])
def test_robust_training_raises_verified_accuracy(kind):
    x, y = toy_problem()
    error = SensorError(0.3)

    def fit(objective_kind: str | None) -> nn.Module:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
        schedule = epochs("d", len(y), 32, 30, seed=0)
        plugins = (
            [RobustTraining(objective_kind, error).plugin(len(schedule), None)]
            if objective_kind
            else []
        )
        train(net, {"d": LabeledData(x, y)}, schedule, learning_rate=1e-2, plugins=plugins)
        return net

    argmax = AlertPolicy.argmax(["a", "b"])
    standard = certify(fit(None), x.numpy(), y.numpy(), error, argmax, "crown")
    robust = certify(fit(kind), x.numpy(), y.numpy(), error, argmax, "crown")
    assert standard.clean_accuracy == 1.0 and standard.verified_accuracy < 0.5
    assert robust.verified_accuracy > 0.9


def test_pgd_finds_the_worst_corner_of_a_linear_model():
    net = nn.Sequential(nn.Linear(3, 2)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]]))
        net[0].bias.zero_()
    x = torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64)
    attacked = pgd(net, x, torch.tensor([0]), SensorError(0.25), steps=10)
    # lowering logit 0 = x0 - 2 x1 + 0.5 x2: x0 down, x1 up, x2 down, all to the box edge
    assert attacked.tolist() == [[0.75, 1.25, 0.75]]
    lower, _ = bounds(net, x, 0.25, "crown")
    with torch.no_grad():
        assert net(attacked)[0, 0].item() == pytest.approx(lower[0, 0].item())


def test_unknown_robust_training_is_an_error():
    with pytest.raises(ValueError, match="unknown robust training 'fgsm'"):
        RobustTraining("fgsm", SensorError(1.0))
