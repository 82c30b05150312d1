"""The fast identity passes of CROWN (`crown._shared_start`: products with the folded
matrix shared by every window, zero-slope columns skipped) against the flat CROWN without
them and the op-by-op definition: the same bounds to 1e-9."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tailorml.models.cnn import CNNSpec, SmallCNN
from tailorml.robust import bounds as bounds_module
from tailorml.robust import crown
from tailorml.robust.bounds import bounds, op_by_op_bounds, pairwise_spec
from tailorml.robust.perturbation import cgm_error


def small_cnn(dims: int, seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    length = 40 if dims == 1 else 8
    spec = CNNSpec(1, length, 3, conv_channels=[4, 6, 6], hidden=8, dims=dims)
    return SmallCNN(spec, torch.tensor([140.0]), torch.tensor([50.0])).double().eval()


def inputs(dims: int, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (n, 1, 40) if dims == 1 else (n, 1, 8, 8)
    return 140 + 50 * torch.randn(shape, generator=generator, dtype=torch.float64)


def flat_bounds(model, x, error, spec, shared, intersect=True):
    """`bounds(..., "crown")` with the shared first steps on or off; counts their uses."""
    original = crown.backward
    start = crown._shared_start
    used = []

    def backward(*args, **kwargs):
        return original(*args, **kwargs, shared=shared)

    def counted(*args):
        result = start(*args)
        used.append(result is not None)
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(crown, "backward", backward)
        patch.setattr(crown, "_shared_start", counted)
        result = bounds(model, x, error, "crown", spec=spec, intersect=intersect)
    return result, sum(used)


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("eps", [0.001, 2.0, 8.0, 40.0, 400.0])
@pytest.mark.parametrize("live_share", [0.0, 0.85, 1.0])
def test_shared_first_steps_give_the_flat_crown_bounds(dims, eps, live_share, monkeypatch):
    # 0.001: every neuron stable; 400: nearly all unstable. live_share 1.0 compacts every
    # pass, 0.0 only passes with no live column at all
    monkeypatch.setattr(crown, "LIVE_SHARE", live_share)
    model, x = small_cnn(dims), inputs(dims, n=20)
    error = cgm_error(eps)
    with torch.no_grad():
        for spec in (None, pairwise_spec(20, 3, torch.float64)):
            for intersect in (True, False):
                want, unused = flat_bounds(model, x, error, spec, False, intersect)
                got, used = flat_bounds(model, x, error, spec, True, intersect)
                assert unused == 0 and used > 0  # the comparison is between the two paths
                for a, b in zip(want, got, strict=True):
                    assert torch.allclose(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("eps", [0.5, 10.0, 60.0])
def test_fast_crown_equals_the_op_by_op_definition(eps):
    model, x = small_cnn(1, seed=3), inputs(1, n=12, seed=3)
    error = cgm_error(eps)
    spec = pairwise_spec(12, 3, torch.float64)
    with torch.no_grad():
        want = op_by_op_bounds(model, x, error, spec)
        got = bounds(model, x, error, "crown", spec=spec)
    for a, b in zip(want, got, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-9)


def test_shared_step_through_a_relu_by_hand(monkeypatch):
    # z = relu(x) - relu(-x) = x exactly, x in [-1, 3]: both ReLUs unstable. relu(x):
    # chord 0.75 x + 0.75, lower slope 1 (3 > 1); relu(-x) on [-3, 1]: chord
    # 0.25 (-x) + 0.75, lower slope 0. CROWN's bounds on z (the second ReLU's input):
    # x - (0.25 (-x) + 0.75) = 1.25 x - 0.75 >= -2; 0.75 x + 0.75 - 0 <= 3.
    first, second = nn.Linear(1, 2), nn.Linear(2, 1)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        second.weight.copy_(torch.tensor([[1.0, -1.0]]))
        first.bias.zero_()
        second.bias.zero_()
    net = nn.Sequential(first, nn.ReLU(), second, nn.ReLU(), nn.Linear(1, 1)).double()
    ops = bounds_module.to_ops(net, (1,))
    stages = bounds_module.stages_of(ops, (1,), torch.float64)
    start = crown._shared_start
    used = []

    def spy(*args):
        result = start(*args)
        used.append((args[1], result is not None))
        return result

    monkeypatch.setattr(crown, "_shared_start", spy)
    x = torch.tensor([[1.0]], dtype=torch.float64)
    with torch.no_grad():
        propagation = crown.propagate(ops, stages, x - 2, x + 2, intersect=False)
    lower, upper = propagation.intermediate[3]
    # the first ReLU's pass has no stage below to share; the second's starts shared
    assert used == [(0, False), (2, True)]
    assert lower.item() == pytest.approx(-2.0) and upper.item() == pytest.approx(3.0)


def test_relaxed_affine_step_by_hand():
    # features z0 = x0 (active: both lines are z0) and z1 = 2 x1 + 1 (lines 0 below,
    # 0.5 z1 + 1 above). The row 2 relu(z0) - relu(z1): from below, the negative
    # coefficient takes the upper line: 2 x0 - (0.5 (2 x1 + 1) + 1) = 2 x0 - x1 - 1.5;
    # from above it takes the lower line: 2 x0 - 0.
    from tailorml.robust.flat import AffineStage

    matrix = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    below = AffineStage(0, 0, [], (2,), (2,), matrix, torch.tensor([0.0, 1.0]).double())
    a = torch.tensor([2.0, -1.0], dtype=torch.float64).view(1, 1, 1, 2)
    low = torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 1, 2)
    high = torch.tensor([1.0, 0.5], dtype=torch.float64).view(1, 1, 2)
    intercept = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    coefficients, constant = crown._relaxed_affine_back(a, 2, low, high, intercept, None, below)
    assert coefficients.tolist() == [[[[2.0, -1.0]], [[2.0, 0.0]]]]
    assert constant.tolist() == [[[-1.5], [0.0]]]


@pytest.mark.parametrize("eps", [2.0, 10.0, 40.0])
def test_every_fast_step_is_used_and_matches_the_definition(eps, monkeypatch):
    # the small CNN takes each fast step at least once: the rows-scaled start (conv2's
    # pass: conv1 has 40 inputs, conv2 120 outputs), the matrix-scaled start with the next
    # ReLU's columns restricted (conv3's pass), and a ReLU fused with the run below it
    monkeypatch.setattr(crown, "LIVE_SHARE", 1.0)  # restrict whenever any column is dead
    used = {"rows": 0, "restricted": 0, "fused": 0}

    def spy(name, function):
        def counted(*args, **kwargs):
            used[name] += 1
            return function(*args, **kwargs)

        return counted

    monkeypatch.setattr(crown, "_scaled_rows_start", spy("rows", crown._scaled_rows_start))
    monkeypatch.setattr(crown._Lines, "restricted", spy("restricted", crown._Lines.restricted))
    monkeypatch.setattr(crown, "_relaxed_affine_back", spy("fused", crown._relaxed_affine_back))
    model, x = small_cnn(1, seed=5), inputs(1, n=10, seed=5)
    spec = pairwise_spec(10, 3, torch.float64)
    with torch.no_grad():
        want = op_by_op_bounds(model, x, cgm_error(eps), spec)
        got = bounds(model, x, cgm_error(eps), "crown", spec=spec)
    assert all(count > 0 for count in used.values()), used
    for a, b in zip(want, got, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-9)
