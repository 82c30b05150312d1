"""CROWN over flat stages (`tailorml.robust.flat`): the intermediate bounds of every neuron
before a ReLU and the backward pass of the output specification.

Same relaxations and the same intersections as the op-by-op definition in `bounds.py`
(chord above an unstable ReLU, slope 0/1 below; max pooling by its dominant or best-lower
entry; every CROWN bound intersected with the interval one, IBP run op by op), so the
bounds agree to rounding; only the arithmetic is arranged for speed: coefficient rows stay
flat (batch, rows, features), affine runs are one matrix product, and passes that start
from the identity begin at the folded matrix itself.

The lower ReLU slope of unstable neurons can be given (`slopes`, op index -> (batch, rows
or 1, features) in [0, 1]): any value there is sound, which α-CROWN optimises.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tailorml.robust.flat import AffineStage, PoolStage, ReLUStage, Stage
from tailorml.robust.ops import Op, relu_relaxation

Slopes = dict[int, torch.Tensor]


@dataclass
class FlatPropagation:
    """Input box and the bounds of every nonlinear op's input, flattened (batch, n)."""

    ops: list[Op]
    stages: list[Stage]
    center: torch.Tensor  # (batch, n_input, 1)
    radius: torch.Tensor
    intermediate: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    output_ibp: tuple[torch.Tensor, torch.Tensor] | None = None
    last_input_ibp: tuple[torch.Tensor, torch.Tensor] | None = None


def _relu_back(
    a: torch.Tensor,
    bounds_in: tuple[torch.Tensor, torch.Tensor],
    from_below: bool,
    slope: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients through a ReLU and the constant picked up; `from_below`: this row bounds
    its function from below (positive coefficients take the lower relaxation)."""
    lower_slope, upper_slope, upper_intercept = relu_relaxation(*bounds_in)
    if slope is not None:  # α: any slope in [0, 1] is a sound lower line of an unstable ReLU
        lower_in, upper_in = bounds_in
        unstable = (lower_in < 0) & (upper_in > 0)
        lower_slope = torch.where(unstable.unsqueeze(1), slope, lower_slope.unsqueeze(1))
    else:
        lower_slope = lower_slope.unsqueeze(1)
    upper_slope, upper_intercept = upper_slope.unsqueeze(1), upper_intercept.unsqueeze(1)
    positive, negative = a.clamp_min(0), a.clamp_max(0)
    if from_below:
        coefficients = positive * lower_slope + negative * upper_slope
        constant = (negative * upper_intercept).sum(dim=2)
    else:
        coefficients = positive * upper_slope + negative * lower_slope
        constant = (positive * upper_intercept).sum(dim=2)
    return coefficients, constant


def _pool_back(
    a: torch.Tensor, stage: PoolStage, bounds_in: tuple[torch.Tensor, torch.Tensor], from_below
) -> tuple[torch.Tensor, torch.Tensor]:
    """Max pooling: below, max >= x_j (j = entry with the largest lower bound); above,
    max <= x_j when j dominates its window, else the constant max of the upper bounds."""
    lower, upper = (t[:, stage.windows] for t in bounds_in)  # (batch, out, entries)
    best = lower.argmax(dim=-1, keepdim=True)
    best_lower = lower.gather(-1, best).squeeze(-1)
    is_best = torch.zeros_like(lower, dtype=torch.bool).scatter_(-1, best, True)
    others_upper = upper.masked_fill(is_best, float("-inf")).amax(dim=-1)
    dominant = (best_lower >= others_upper).unsqueeze(1)
    ceiling = upper.amax(dim=-1).unsqueeze(2)  # (batch, out, 1)
    chosen = stage.windows.unsqueeze(0).expand(len(lower), -1, -1).gather(-1, best).squeeze(-1)
    towards_lower = a.clamp_min(0) if from_below else a.clamp_max(0)
    towards_upper = a - towards_lower
    coefficient = towards_lower + towards_upper * dominant
    constant = (towards_upper * ~dominant) @ ceiling
    full = a.new_zeros(*a.shape[:2], stage.n_in)
    full.scatter_(2, chosen.unsqueeze(1).expand_as(coefficient), coefficient)
    return full, constant.squeeze(2)


def backward(
    propagation: FlatPropagation,
    last: int,
    spec: torch.Tensor | None,
    need_upper: bool,
    slopes: Slopes | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lower (and upper) bounds of `spec @ output of stage last` over the input box; spec
    (batch, rows, features), or None for the identity (one row per neuron)."""
    stages = propagation.stages
    batch = propagation.center.shape[0]
    position = last
    stage = stages[position]
    if spec is None:
        if not isinstance(stage, AffineStage):
            raise ValueError("identity passes start at an affine stage")
        matrix, offset = stage.identity_back(batch)
        a_lower, bias_lower = matrix, offset
        a_upper, bias_upper = (matrix, offset) if need_upper else (None, None)
        position -= 1
    else:
        a_lower, bias_lower = spec, spec.new_zeros(spec.shape[:2])
        a_upper, bias_upper = (spec, bias_lower) if need_upper else (None, None)
    for stage in reversed(stages[: position + 1]):
        rows = []
        for a, bias, from_below in ((a_lower, bias_lower, True), (a_upper, bias_upper, False)):
            if a is None:
                rows.append((None, None))
                continue
            if isinstance(stage, AffineStage):
                a, constant = stage.back(a)
            elif isinstance(stage, ReLUStage):
                slope = None if slopes is None else slopes.get(stage.index)
                bounds_in = propagation.intermediate[stage.index]
                a, constant = _relu_back(a, bounds_in, from_below, slope)
            else:
                bounds_in = propagation.intermediate[stage.index]
                a, constant = _pool_back(a, stage, bounds_in, from_below)
            rows.append((a, bias + constant))
        (a_lower, bias_lower), (a_upper, bias_upper) = rows
    center, radius = propagation.center, propagation.radius
    lower = (a_lower @ center).squeeze(2) - (a_lower.abs() @ radius).squeeze(2) + bias_lower
    upper = None
    if a_upper is not None:
        upper = (a_upper @ center).squeeze(2) + (a_upper.abs() @ radius).squeeze(2) + bias_upper
    return lower, upper


def propagate(
    ops: list[Op],
    stages: list[Stage],
    lower: torch.Tensor,
    upper: torch.Tensor,
    intersect: bool = True,
) -> FlatPropagation:
    """Interval pass op by op, each ReLU's input tightened by its own identity CROWN pass
    (intersected with the interval unless `intersect=False`)."""
    center = ((upper + lower) / 2).flatten(1).unsqueeze(2)
    radius = ((upper - lower) / 2).flatten(1).unsqueeze(2)
    propagation = FlatPropagation(ops, stages, center, radius)
    ends = {stage.last: position for position, stage in enumerate(stages) if _affine(stage)}
    current = (lower, upper)
    propagation.last_input_ibp = current
    for index, op in enumerate(ops):
        if op.nonlinear:
            if index > 0 and not ops[index - 1].nonlinear:
                shape = current[0].shape
                crown_lower, crown_upper = backward(propagation, ends[index - 1], None, True)
                crown_lower = crown_lower.reshape(shape)
                crown_upper = crown_upper.reshape(shape)
                if intersect:
                    current = (
                        torch.maximum(current[0], crown_lower),
                        torch.minimum(current[1], crown_upper),
                    )
                else:
                    current = (crown_lower, crown_upper)
            propagation.intermediate[index] = (current[0].flatten(1), current[1].flatten(1))
        propagation.last_input_ibp = current
        current = op.ibp(*current)
    propagation.output_ibp = current
    return propagation


def _affine(stage: Stage) -> bool:
    return isinstance(stage, AffineStage)


def last_stage(stages: list[Stage]) -> int:
    return len(stages) - 1
