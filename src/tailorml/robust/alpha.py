"""α-CROWN (Xu et al. 2021): CROWN with its lower-ReLU slopes optimised.

Below an unstable ReLU (l < 0 < u), every line αx with α in [0, 1] is a sound lower bound,
so CROWN's bounds are valid for *every* α; CROWN's fixed choice (0 or 1) is one of them.
Each backward pass (the one of every intermediate layer and the output's) gets its own α
per bounded row, ReLU neuron and window; a few projected Adam steps on the output's lower
bound raise them all at once (intermediate bounds are recomputed, differentiably, at every
step). Sound at every step: every bound of a step is valid for the α it used (clamped to
[0, 1] before use), and we return, per window and row, the best step, starting from
CROWN's own α, so never looser than CROWN.
"""

from __future__ import annotations

import torch

from tailorml.robust import crown
from tailorml.robust.flat import ReLUPoolStage, ReLUStage, Stage
from tailorml.robust.ops import Op, relu_relaxation

STEPS = 20
LEARNING_RATE = 0.25
OUTPUT = -1  # key of the output pass


class SlopeBank:
    """The α of every pass, created on first use at CROWN's own lower slope."""

    def __init__(self) -> None:
        self.slopes: dict[tuple[int, int], torch.Tensor] = {}

    def __call__(self, target: int, propagation: crown.FlatPropagation, rows: int) -> crown.Slopes:
        chosen = {}
        for stage in propagation.stages:
            if not isinstance(stage, ReLUStage | ReLUPoolStage):
                continue
            if target != OUTPUT and stage.index >= target:
                break
            key = (target, stage.index)
            if key not in self.slopes:
                lower_slope, _, _ = relu_relaxation(*propagation.intermediate[stage.index])
                initial = lower_slope.detach().unsqueeze(1).expand(-1, rows, -1).clone()
                self.slopes[key] = initial.requires_grad_(True)
            chosen[stage.index] = self.slopes[key]
        return chosen


def optimized_lower(
    ops: list[Op],
    stages: list[Stage],
    lower_in: torch.Tensor,
    upper_in: torch.Tensor,
    spec: torch.Tensor,
    intersect: bool,
    steps: int | None = None,
    learning_rate: float | None = None,
) -> tuple[torch.Tensor, crown.FlatPropagation]:
    """Best lower bound of `spec @ output` (spec (batch, rows, outputs)) over the steps,
    and the propagation of the first step (CROWN's, for the interval intersection)."""
    steps = STEPS if steps is None else steps
    learning_rate = LEARNING_RATE if learning_rate is None else learning_rate
    bank = SlopeBank()
    lower_in, upper_in, spec = lower_in.detach(), upper_in.detach(), spec.detach()
    best, first, optimizer = None, None, None
    for step in range(steps + 1):
        with torch.enable_grad():  # every α here lies in [0, 1]: these bounds are sound
            propagation = crown.propagate(ops, stages, lower_in, upper_in, intersect, bank)
            output_slopes = bank(OUTPUT, propagation, spec.shape[1])
            lower, _ = crown.backward(propagation, len(stages) - 1, spec, False, output_slopes)
        first = propagation if first is None else first
        best = lower.detach() if best is None else torch.maximum(best, lower.detach())
        if step == steps or not bank.slopes:
            break
        parameters = list(bank.slopes.values())
        optimizer = optimizer or torch.optim.Adam(parameters, lr=learning_rate)
        # gradients to α only: the model's own parameters are left untouched
        with torch.enable_grad():
            gradients = torch.autograd.grad(-lower.sum(), parameters, allow_unused=True)
        for parameter, gradient in zip(parameters, gradients, strict=True):
            parameter.grad = gradient
        optimizer.step()
        with torch.no_grad():
            for parameter in parameters:
                parameter.clamp_(0.0, 1.0)  # projected back into the sound range
    return best, first
