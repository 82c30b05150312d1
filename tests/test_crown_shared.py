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
