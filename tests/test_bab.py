"""Branch and bound over the input box: sound against the exact MILP minimum at any budget,
exact where a single split makes every ReLU stable, and within 1.1x of the exact range on
the test suite's small networks (where α-CROWN alone stays near 1.26x)."""

import numpy as np
import pytest
import torch
from torch import nn

from tailorml.robust.bab import minimum_bound
from tailorml.robust.bounds import bounds
from tailorml.robust.milp import minimize
from tailorml.robust.perturbation import SensorError


def tiny_relu_net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)
    ).double()


def test_one_split_makes_a_single_relu_exact():
    # f(x) = relu(x) - 0.5 x on [-1, 1], written relu(x) - 0.5 relu(x + 2) + 1 (the second
    # ReLU is always active there): minimum 0 at x = 0. CROWN relaxes the unstable relu(x)
    # by a line through the origin (slope 0 or 1) and gets -0.5; one split at 0 makes it
    # stable on both halves, so both bounds are exact: 0.
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [1.0]]))
        net[0].bias.copy_(torch.tensor([0.0, 2.0]))
        net[2].weight.copy_(torch.tensor([[1.0, -0.5]]))
        net[2].bias.copy_(torch.tensor([1.0]))
    low, high = torch.tensor([[-1.0]]).double(), torch.tensor([[1.0]]).double()
    row = torch.tensor([1.0], dtype=torch.float64)
    crown_lower, _ = bounds(net, torch.zeros(1, 1).double(), 1.0, "crown", lower_only=True)
    assert crown_lower.item() == pytest.approx(-0.5)
    result = minimum_bound(net, low, high, row, max_domains=3)
    assert result.domains == 3 and result.steps == 1
    assert result.lower == pytest.approx(0.0, abs=1e-12)
    assert result.attained == pytest.approx(0.0, abs=1e-12)  # f(0), the root's centre


@pytest.mark.parametrize("budget", [1, 7, 64])
def test_never_above_the_exact_minimum_at_any_budget(budget):
    for seed in range(4):
        net = tiny_relu_net(seed)
        x = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        error = SensorError(0.4)
        exact = minimize(net, x, np.array([1.0, -1.0]), error).value
        low, high = error.box(x)
        result = minimum_bound(net, low, high, torch.tensor([1.0, -1.0]), max_domains=budget)
        assert result.lower <= exact + 1e-9 <= result.attained + 2e-9
        assert result.domains <= budget


def test_range_within_1_1x_of_the_milp_range_where_alpha_crown_is_not():
    # the nets, box and ratio of test_bounds' α-CROWN tightness test (median there 1.26)
    ratios, alpha_ratios = [], []
    for seed in range(8):
        net = tiny_relu_net(seed)
        x = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        error = SensorError(0.4)
        low_exact = minimize(net, x, np.array([1.0, -1.0]), error).value
        high_exact = -minimize(net, x, np.array([-1.0, 1.0]), error).value
        low, high = error.box(x)
        row = torch.tensor([1.0, -1.0], dtype=torch.float64)
        lower = minimum_bound(net, low, high, row, max_domains=256).lower
        upper = -minimum_bound(net, low, high, -row, max_domains=256).lower
        ratios.append((upper - lower) / (high_exact - low_exact))
        spec = row.reshape(1, 1, 2)
        a_low, a_high = bounds(net, x, error, "alpha-crown", spec=spec)
        alpha_ratios.append((a_high.item() - a_low.item()) / (high_exact - low_exact))
    assert min(ratios) >= 1 - 1e-9
    assert np.median(ratios) <= 1.1 < np.median(alpha_ratios)


def test_certification_stops_as_soon_as_the_answer_is_known():
    net = tiny_relu_net(0)
    x = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    low, high = SensorError(0.4).box(x)
    row = torch.tensor([1.0, -1.0], dtype=torch.float64)
    full = minimum_bound(net, low, high, row, max_domains=256)
    # a threshold below the first bound: certified at the root, no split
    easy = minimum_bound(net, low, high, row, certify_above=full.lower - 1.0)
    assert easy.domains == 1 and easy.lower > full.lower - 1.0
    # a threshold above an attained value: provably not certifiable, stop
    hopeless = minimum_bound(net, low, high, row, certify_above=full.attained + 1.0)
    assert hopeless.domains == 1 and hopeless.attained <= full.attained + 1.0


def test_refuses_other_bounds_and_empty_budgets():
    net = tiny_relu_net(0)
    box = torch.zeros(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="crown or alpha-crown, not 'ibp'"):
        minimum_bound(net, *box, torch.tensor([1.0, -1.0]), method="ibp")
    with pytest.raises(ValueError, match="max_domains"):
        minimum_bound(net, *box, torch.tensor([1.0, -1.0]), max_domains=0)


def test_certify_with_bab_proves_a_decision_alpha_crown_cannot():
    from tailorml.policy import AlertPolicy
    from tailorml.robust.certify import certify

    # shift the margin z0 - z1 so that its exact minimum over the box is as far above 0 as
    # α-CROWN's lower bound is below it: true, but beyond α-CROWN
    net = tiny_relu_net(1)
    x = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    error = SensorError(0.4)
    exact = minimize(net, x, np.array([1.0, -1.0]), error).value
    spec = torch.tensor([[[1.0, -1.0]]], dtype=torch.float64)
    alpha_lower = bounds(net, x, error, "alpha-crown", spec=spec, lower_only=True)[0].item()
    assert alpha_lower < exact - 0.02  # α-CROWN is loose here
    with torch.no_grad():
        net[-1].bias[0] -= (exact + alpha_lower) / 2
    policy = AlertPolicy.argmax(["0", "1"])
    label = torch.tensor([0])
    assert not certify(net, x, label, error, policy, "alpha-crown").certified[0]
    assert certify(net, x, label, error, policy, "bab").certified[0]


def test_the_margins_a_certificate_reads():
    from tailorml.robust.certify import _needed_rows

    # pair columns of 3 classes: (0,1) 0, (0,2) 1, (1,0) 2, (1,2) 3, (2,0) 4, (2,1) 5
    assert _needed_rows(0, 3, hypo=0) == {0: False, 1: False}  # P(hypo) >= t: log-sum-exp
    # "not hypo" (log-sum-exp of z_j - z_h) and "1 beats 2" (against 0 on its own)
    assert _needed_rows(1, 3, hypo=0) == {2: False, 4: False, 3: True}
    assert _needed_rows(2, 3, hypo=None) == {4: True, 5: True}  # argmax
