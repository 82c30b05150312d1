"""CROWN over flat stages (`tailorml.robust.flat`): the intermediate bounds of every neuron
before a ReLU and the backward pass of the output specification.

Same relaxations and the same intersections as the op-by-op definition in `bounds.py`
(chord above an unstable ReLU, slope 0/1 below; max pooling by its dominant or best-lower
entry; every CROWN bound intersected with the interval one, IBP run op by op), so the
bounds agree to rounding; only the arithmetic is arranged for speed: coefficient rows stay
flat (batch, rows, features), affine runs are one matrix product, and passes that start
from the identity begin at the folded matrix itself and cross their first ReLU with it
shared by every window (`_shared_start`). Where a pass has more rows than the affine run
below a ReLU has inputs, the ReLU's lines scale that run's rows instead of the pass's
coefficients (`_relaxed_affine_back`), and a product leaves out the columns the next ReLU
sends to 0. Each step that changes the arithmetic changes only rounding (about 1e-13 on
the alert model's logits), never a relaxation.

The lower ReLU slope of unstable neurons can be given (`slopes`, op index -> (batch, rows
or 1, features) in [0, 1]): any value there is sound, which α-CROWN optimises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tailorml.robust.flat import (
    AffineStage,
    PoolStage,
    ReLUPoolStage,
    ReLUStage,
    Stage,
    scatter_columns,
)
from tailorml.robust.ops import Op, relu_relaxation

Slopes = dict[int, torch.Tensor]
SlopeSource = Callable[[int, "FlatPropagation", int], Slopes]


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
    # CROWN's own (not α) lines of each ReLU stage: every later pass crosses it again
    lines: dict[int, _Lines] = field(default_factory=dict)


def _signed_back(
    a: torch.Tensor, low: torch.Tensor, high: torch.Tensor, intercept: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A relaxation low·x <= f(x) <= high·x + intercept, applied to coefficient rows a
    (batch, directions, rows, n): direction 0 bounds from below (positive coefficients take
    the low line, negative ones the high line and its intercept), direction 1 from above
    (the other way round). Slopes (batch, 1 or rows, n), intercept (batch, n)."""
    directions = a.shape[1]
    low, high = torch.broadcast_tensors(low, high)
    if directions == 1:
        positive, negative = low.unsqueeze(1), high.unsqueeze(1)
    else:
        positive, negative = torch.stack((low, high), 1), torch.stack((high, low), 1)
    # each entry is in exactly one signed part (the other is an exact 0), so this is
    # a * (positive or negative slope) without an elementwise select (3x slower here)
    a_negative, a_positive = a.clamp_max(0), a.clamp_min(0)
    coefficients = a_positive * positive + a_negative * negative
    column = intercept.unsqueeze(1).unsqueeze(3)  # (batch, 1, n, 1)
    below = (a_negative @ column).squeeze(3)  # negative parts x intercept
    if directions == 1:
        return coefficients, below
    above = (a_positive[:, 1:] @ column).squeeze(3)  # positive parts x intercept
    return coefficients, torch.cat((below[:, :1], above), 1)


@dataclass
class _Lines:
    """A ReLU stage's relaxation: lower slopes (batch, 1, n; rows for α), upper slopes
    (batch, 1, n), upper intercepts (batch, n), and the features they belong to (batch, n):
    the chosen entries after pooling, None for the stage's own n features in order."""

    low: torch.Tensor
    high: torch.Tensor
    intercept: torch.Tensor
    columns: torch.Tensor | None

    def needed(self) -> torch.Tensor:
        """(batch, n) bool: the features whose coefficient the lines do not send to 0."""
        return ((self.low != 0) | (self.high != 0)).any(1) | (self.intercept != 0)

    def restricted(self, kept: torch.Tensor) -> _Lines:
        """The lines of the features at `kept` (batch, k) only."""
        columns = kept if self.columns is None else self.columns.gather(1, kept)
        return _Lines(
            self.low.gather(2, kept.unsqueeze(1).expand(-1, self.low.shape[1], -1)),
            self.high.gather(2, kept.unsqueeze(1)),
            self.intercept.gather(1, kept),
            columns,
        )


def _next_lines(
    propagation: FlatPropagation, position: int, slopes: Slopes | None
) -> _Lines | None:
    """CROWN's own lines of the ReLU stage at `position`; None for any other stage or
    one with α slopes."""
    stage = propagation.stages[position] if position >= 0 else None
    if not isinstance(stage, ReLUStage | ReLUPoolStage):
        return None
    if slopes is not None and slopes.get(stage.index) is not None:
        return None
    return _stage_lines(propagation, stage, None)


def _stage_lines(
    propagation: FlatPropagation, stage: ReLUStage | ReLUPoolStage, slope: torch.Tensor | None
) -> _Lines:
    """A ReLU stage's lines; CROWN's own (`slope` None) once per propagation."""
    cached = propagation.lines.get(stage.index) if slope is None else None
    if cached is not None:
        return cached
    if isinstance(stage, ReLUStage):
        lines = _Lines(*_relu_lines(propagation.intermediate[stage.index], slope), None)
    else:
        lines = _Lines(*_relu_pool_lines(stage, propagation, slope))
    if slope is None:
        propagation.lines[stage.index] = lines
    return lines


def _fuses(stage: Stage, below: Stage | None, a: torch.Tensor, low: torch.Tensor) -> bool:
    """Whether a ReLU step and the dense affine run below it go as one step
    (`_relaxed_affine_back`): when the run has fewer inputs than the pass has rows, scaling
    its rows by the slopes is cheaper than the elementwise passes over the coefficients;
    not with per-row (α) slopes."""
    return (
        isinstance(stage, ReLUStage | ReLUPoolStage)
        and isinstance(below, AffineStage)
        and below.matrix is not None
        and below.matrix.shape[1] < a.shape[2]
        and low.shape[1] == 1
    )


def _with_offset(below: AffineStage, columns: torch.Tensor | None) -> torch.Tensor:
    """The run's rows [R | b] with the offset as one more column, at each window's
    `columns` (batch, k, n + 1), or all of them shared (1, out, n + 1)."""
    if columns is None:
        rows, offset = below.matrix.unsqueeze(0), below.offset.unsqueeze(0)
    else:
        rows, offset = below.rows_at(columns)
    return torch.cat((rows, offset.unsqueeze(2)), 2)


def _relaxed_affine_back(
    a: torch.Tensor,
    directions: int,
    low: torch.Tensor,
    high: torch.Tensor,
    intercept: torch.Tensor,
    columns: torch.Tensor | None,
    below: AffineStage,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`_signed_back` and `below.back` in one step, without the relaxed coefficients.

    With the run's rows R and offset b (at `columns` after pooling), feature j's lines
    scale R's row j: low_j [R_j, b_j] below, high_j [R_j, b_j] + [0, intercept_j] above.
    The signed parts of a (each entry in exactly one) take one or the other: lower rows
    a+ L + a- H, upper rows a+ H + a- L, the last column the constant. Rows a (batch,
    directions or 1, rows, k); slopes (batch, 1, k); returns the coefficients over the
    run's input (batch, directions, rows, n) and the constants (batch, directions, rows)."""
    augmented = _with_offset(below, columns)  # (batch or 1, k, n + 1)
    lines_low = low.transpose(1, 2) * augmented  # (batch, k, n + 1)
    lines_high = high.transpose(1, 2) * augmented
    lines_high[:, :, -1] += intercept
    a = a.expand(-1, directions, -1, -1).flatten(0, 1)  # (batch * directions, rows, k)
    # per direction, the lines the positive and the negative parts take; the products run
    # transposed, (n + 1, k) x (k, rows): 20 % faster here than with the narrow side last
    both = (lines_low, lines_high)
    plus = torch.stack(both[:directions], 1).transpose(2, 3).flatten(0, 1)
    minus = torch.stack(both[::-1][:directions], 1).transpose(2, 3).flatten(0, 1)
    out = torch.baddbmm(
        minus @ a.clamp_max(0).transpose(1, 2), plus, a.clamp_min(0).transpose(1, 2)
    )  # (batch * directions, n + 1, rows)
    out = out.view(-1, directions, *out.shape[1:]).transpose(2, 3)
    return out[..., :-1], out[..., -1]


def _relu_lines(
    bounds_in: tuple[torch.Tensor, torch.Tensor], slope: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lower slope (batch, 1 or rows, n), upper slope (batch, 1, n), upper intercept
    (batch, n)): CROWN's lines, with the lower slope of unstable neurons replaced by
    `slope` (α) when given."""
    lower_slope, upper_slope, upper_intercept = relu_relaxation(*bounds_in)
    lower_slope = lower_slope.unsqueeze(1)
    if slope is not None:  # any slope in [0, 1] is a sound lower line of an unstable ReLU
        lower_in, upper_in = bounds_in
        unstable = ((lower_in < 0) & (upper_in > 0)).unsqueeze(1)
        lower_slope = torch.where(unstable, slope, lower_slope)
    return lower_slope, upper_slope.unsqueeze(1), upper_intercept


def _gather(t: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """t (batch, [rows,] n) at columns (batch, k) of its last dimension."""
    if t.dim() == 2:
        return t.gather(1, columns)
    return t.gather(2, columns.unsqueeze(1).expand(*t.shape[:2], -1))


@dataclass
class _PoolChoice:
    """Per window of a max pooling: the chosen entry (largest lower bound), whether it
    dominates its window (then max = that entry), and the ceiling max of upper bounds."""

    chosen: torch.Tensor  # (batch, out): flat input index
    dominant: torch.Tensor  # (batch, out) bool
    ceiling: torch.Tensor  # (batch, out)


def _pool_choice(windows: torch.Tensor, bounds_in: tuple[torch.Tensor, torch.Tensor]):
    lower, upper = (t[:, windows] for t in bounds_in)  # (batch, out, entries)
    best = lower.argmax(dim=-1, keepdim=True)
    best_lower = lower.gather(-1, best).squeeze(-1)
    is_best = torch.zeros_like(lower, dtype=torch.bool).scatter_(-1, best, True)
    others_upper = upper.masked_fill(is_best, float("-inf")).amax(dim=-1)
    chosen = windows.unsqueeze(0).expand(len(lower), -1, -1).gather(-1, best).squeeze(-1)
    return _PoolChoice(chosen, best_lower >= others_upper, upper.amax(dim=-1))


def _relu_pool_lines(
    stage: ReLUPoolStage, propagation: FlatPropagation, slope: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lines of max pooling over ReLU outputs, on the chosen entry x_j of each window (the
    largest lower bound): below, max >= relu(x_j) >= its lower line; above, relu(x_j)'s
    chord when j dominates its window (max = that entry), else the constant ceiling.
    Returns (low slope, high slope, intercept, chosen columns)."""
    choice = _pool_choice(stage.windows, propagation.intermediate[stage.pool_index])
    lower_slope, upper_slope, upper_intercept = _relu_lines(
        propagation.intermediate[stage.index], slope
    )
    low = _gather(lower_slope, choice.chosen)
    high = _gather(upper_slope, choice.chosen) * choice.dominant.unsqueeze(1)
    intercept = torch.where(
        choice.dominant, _gather(upper_intercept, choice.chosen), choice.ceiling
    )
    return low, high, intercept, choice.chosen


def _pool_lines(
    stage: PoolStage, bounds_in: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Max pooling not after a ReLU: the same lines without the ReLU's."""
    choice = _pool_choice(stage.windows, bounds_in)
    low = torch.ones_like(choice.ceiling).unsqueeze(1)
    high = choice.dominant.unsqueeze(1).to(low.dtype)
    intercept = torch.where(choice.dominant, torch.zeros_like(choice.ceiling), choice.ceiling)
    return low, high, intercept, choice.chosen


def backward(
    propagation: FlatPropagation,
    last: int,
    spec: torch.Tensor | None,
    need_upper: bool,
    slopes: Slopes | None = None,
    shared: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lower (and upper) bounds of `spec @ output of stage last` over the input box; spec
    (batch, rows, features), or None for the identity (one row per neuron). The rows that
    bound from below and from above travel as one tensor (batch, directions, rows, n).
    `shared=False` turns off the shared first steps of identity passes (`_shared_start`),
    for comparison: the bounds are the same to rounding."""
    stages = propagation.stages
    batch = propagation.center.shape[0]
    directions = 2 if need_upper else 1
    position = last
    if spec is None:
        stage = stages[position]
        if not isinstance(stage, AffineStage):
            raise ValueError("identity passes start at an affine stage")
        start = _shared_start(propagation, position, need_upper, slopes) if shared else None
        if start is not None:
            a, bias, lines = start
            return _finish(propagation, position - 3, a, bias, directions, slopes, lines)
        matrix, offset = stage.identity_back(batch)
        a = matrix.unsqueeze(1)  # shared by both directions until the first nonlinearity
        bias = offset.unsqueeze(1).expand(batch, directions, -1)
        position -= 1
    else:
        a = spec.unsqueeze(1).expand(-1, directions, -1, -1)
        bias = spec.new_zeros(batch, directions, spec.shape[1])
    return _finish(propagation, position, a, bias, directions, slopes)


def _finish(
    propagation: FlatPropagation,
    position: int,
    a: torch.Tensor,
    bias: torch.Tensor,
    directions: int,
    slopes: Slopes | None,
    lines: _Lines | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rest of `backward`: rows a (batch, directions or 1, rows, n) of the output of
    stage `position` pushed back through it and every stage before it, then concretised.
    `lines`: the first nonlinear stage's relaxation when the caller has it already, with
    a covering only `lines.columns` of that stage's features."""
    stages = propagation.stages
    batch = propagation.center.shape[0]
    need_upper = directions == 2
    columns: torch.Tensor | None = None  # a covers only these features (after pooling)
    while position >= 0:
        stage = stages[position]
        position -= 1
        if isinstance(stage, AffineStage):
            a = a.expand(-1, directions, -1, -1)
            rows = a.reshape(batch, -1, a.shape[3])
            rows, constant = stage.back(rows, columns)
            a = rows.view(batch, directions, -1, rows.shape[2])
            bias = bias + constant.view(batch, directions, -1)
            columns = None
            continue
        if columns is not None:  # nonlinear right after nonlinear: not in our nets
            n = propagation.intermediate[stage.index][0].shape[1]
            a = scatter_columns(a.flatten(1, 2), columns, n).view(batch, directions, -1, n)
            columns = None
        slope = None if slopes is None else slopes.get(stage.index)
        if isinstance(stage, ReLUStage | ReLUPoolStage):
            lines = lines or _stage_lines(propagation, stage, slope)
            low, high, intercept, columns = lines.low, lines.high, lines.intercept, lines.columns
            lines = None
        else:
            low, high, intercept, chosen = _pool_lines(stage, propagation.intermediate[stage.index])
        below = stages[position] if position >= 0 else None
        if _fuses(stage, below, a, low):
            a, constant = _relaxed_affine_back(a, directions, low, high, intercept, columns, below)
            bias = bias + constant
            columns, position = None, position - 1
            continue
        a, constant = _signed_back(a.expand(-1, directions, -1, -1), low, high, intercept)
        bias = bias + constant
        if isinstance(stage, PoolStage):
            n = stage.n_in
            a = scatter_columns(a.flatten(1, 2), chosen, n).view(batch, directions, -1, n)
    center, radius = propagation.center, propagation.radius  # (batch, n, 1)
    if columns is not None:
        center = _gather(center.squeeze(2), columns).unsqueeze(2)
        radius = _gather(radius.squeeze(2), columns).unsqueeze(2)
    a = a.expand(-1, directions, -1, -1)
    mid = (a @ center.unsqueeze(1)).squeeze(3)
    spread = (a.abs() @ radius.unsqueeze(1)).squeeze(3)
    lower = mid[:, 0] - spread[:, 0] + bias[:, 0]
    upper = mid[:, 1] + spread[:, 1] + bias[:, 1] if need_upper else None
    return lower, upper


def propagate(
    ops: list[Op],
    stages: list[Stage],
    lower: torch.Tensor,
    upper: torch.Tensor,
    intersect: bool = True,
    slopes: SlopeSource | None = None,
) -> FlatPropagation:
    """Interval pass op by op, each ReLU's input tightened by its own identity CROWN pass
    (intersected with the interval unless `intersect=False`). `slopes(target, propagation,
    rows)` gives the lower ReLU slopes of the pass that bounds op `target`'s input (α)."""
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
                rows = current[0][0].numel()
                chosen = None if slopes is None else slopes(index, propagation, rows)
                crown_lower, crown_upper = backward(
                    propagation, ends[index - 1], None, True, chosen
                )
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


def _shared_start(
    propagation: FlatPropagation, position: int, need_upper: bool, slopes: Slopes | None
) -> tuple[torch.Tensor, torch.Tensor, _Lines | None] | None:
    """An identity pass's first three stages (affine `position`, the ReLU below it, the
    affine run below that) as products whose left factor is shared by every window.

    Why: the pass starts at the folded matrix M (rows x k), the same for every window, so
    the relaxation's sign choice is the same too. With the ReLU's slopes L, H (per window
    and feature) the lower rows are M+ L + M- H and the upper ones M+ H + M- L, i.e.
    (M (L + H) +- |M| (L - H)) / 2: two matrix products with M and |M| on the left, with no
    elementwise pass over the (directions x rows x k) coefficients of every window. A
    feature whose two slopes are 0 (inactive, or a pooling window's non-dominant entry with
    slope 0 below) adds exactly nothing: each window's product skips those columns.
    Likewise the result needs no column that the next ReLU's lines send to 0 (both slopes
    and the intercept 0): the product leaves those out, and the next ReLU's lines come
    back restricted to the columns computed. Returns (coefficients, bias, those lines or
    None), or None where this does not apply (α slopes, pooling without a ReLU,
    structured stages)."""
    stages = propagation.stages
    if position < 2 or not need_upper:
        return None
    top, relu, below = stages[position], stages[position - 1], stages[position - 2]
    if not (
        isinstance(top, AffineStage)
        and top.matrix is not None
        and isinstance(relu, ReLUStage | ReLUPoolStage)
        and isinstance(below, AffineStage)
        and below.matrix is not None
    ):
        return None
    if slopes is not None and slopes.get(relu.index) is not None:
        return None
    matrix = top.matrix
    # after pooling, each window's coefficient passes to its chosen entry's row (features)
    crossed = _stage_lines(propagation, relu, None)
    low, high, intercept, features = crossed.low, crossed.high, crossed.intercept, crossed.columns
    low, high = torch.broadcast_tensors(low.squeeze(1), high.squeeze(1))  # (batch, k)
    # constants: negative coefficients take the upper line's intercept from below, positive
    # ones from above
    lower = intercept @ matrix.clamp_max(0).T
    upper = intercept @ matrix.clamp_min(0).T
    total, gap = (low + high) * 0.5, (low - high) * 0.5  # halves: exact in binary
    if features is not None and 2 * below.matrix.shape[1] <= matrix.shape[0]:
        a, through = _scaled_rows_start(matrix, total, gap, below, features)
        lines = None
    else:
        a, through, lines = _scaled_matrix_start(
            matrix, total, gap, below, features, _next_lines(propagation, position - 3, slopes)
        )
    bias = torch.stack((lower, upper), 1) + through + top.offset
    return a, bias, lines


def _scaled_rows_start(
    matrix: torch.Tensor,
    total: torch.Tensor,
    gap: torch.Tensor,
    below: AffineStage,
    features: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`_shared_start`'s products when the run below is narrow (n inputs, at most half of
    M's rows): the slopes scale each window's rows below (k x n, with the offset as one
    more column), and M and |M| multiply every window's at once, two matrix products with
    the chunk's windows side by side (no per-window copy of M's columns)."""
    batch, k = features.shape
    augmented = _with_offset(below, features)  # (batch, k, n + 1)
    n = augmented.shape[2]

    def side_by_side(scale: torch.Tensor) -> torch.Tensor:  # (k, batch * n)
        return (scale.unsqueeze(2) * augmented).transpose(0, 1).reshape(k, batch * n)

    mid = (matrix @ side_by_side(total)).view(-1, batch, n)
    spread = (matrix.abs() @ side_by_side(gap)).view(-1, batch, n)
    out = torch.stack((mid + spread, mid - spread), 0).permute(2, 0, 1, 3)  # (batch, 2, rows, n)
    return out[..., :-1], out[..., -1]


def _scaled_matrix_start(
    matrix: torch.Tensor,
    total: torch.Tensor,
    gap: torch.Tensor,
    below: AffineStage,
    features: torch.Tensor | None,
    lines: _Lines | None,
) -> tuple[torch.Tensor, torch.Tensor, _Lines | None]:
    """`_shared_start`'s products with the slopes scaling M's columns, those with a zero
    slope left out (per window after pooling), and the columns of the result restricted to
    those the next ReLU's `lines` need (returned restricted, or None)."""
    kept = _live_columns(total != 0, shared=features is None)
    if kept is not None and kept.dim() == 1:  # the same columns for every window
        total, gap, matrix = total[:, kept], gap[:, kept], matrix[:, kept]
        rows, offset = below.matrix[kept].unsqueeze(0), below.offset[kept].unsqueeze(0)
    elif kept is not None:  # M's columns per window: (batch, rows, kept)
        total, gap = total.gather(1, kept), gap.gather(1, kept)
        features = features.gather(1, kept)
        matrix = matrix.T.index_select(0, kept.flatten()).view(*kept.shape, -1).transpose(1, 2)
    if kept is None and features is None:
        rows, offset = below.matrix.unsqueeze(0), below.offset.unsqueeze(0)
    elif features is not None:
        rows, offset = below.rows_at(features)
    if lines is not None:
        needed = _live_columns(lines.needed(), shared=False)
        if needed is None:
            lines = None
        else:
            lines = lines.restricted(needed)
            rows = rows.expand(len(needed), -1, -1)
            rows = rows.gather(2, needed.unsqueeze(1).expand(-1, rows.shape[1], -1))
    # both directions' left factors stacked: one product, its result already the (batch,
    # directions, rows, in) coefficients; the lower run's offset through them
    mid, spread = matrix * total.unsqueeze(1), matrix.abs() * gap.unsqueeze(1)
    stacked = torch.cat((mid + spread, mid - spread), 1)
    a = (stacked @ rows).unflatten(1, (2, -1))
    through = (stacked @ offset.unsqueeze(-1)).view(a.shape[:3])
    return a, through, lines


# Compact a window's columns when at most this share of them carries a nonzero slope.
LIVE_SHARE = 0.85


def _live_columns(live: torch.Tensor, shared: bool) -> torch.Tensor | None:
    """Indices of the live features (live: (batch, n) bool): (batch, kept), padded per
    window with dead ones to the chunk's largest count (they add exact zeros), or with
    `shared` one (kept,) set live in any window (a shared matrix below stays one product);
    None when compacting would not save enough."""
    if shared:
        live = live.any(0)
        kept = int(live.sum())
        return live.nonzero().squeeze(1) if kept <= LIVE_SHARE * live.shape[0] else None
    kept = int(live.sum(1).max())
    if kept > LIVE_SHARE * live.shape[1]:
        return None
    order = torch.argsort((~live).to(torch.int8), dim=1, stable=True)
    return order[:, : max(kept, 1)]
