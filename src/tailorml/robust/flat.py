"""The network as a short list of *flat* stages for fast backward (CROWN) passes.

Why: CROWN bounds every neuron before a ReLU with its own backward pass, so a pass carries
hundreds of coefficient rows per window. Pushing them through each op on its own (a
transposed convolution over batch x rows small images, a reshape, a per-channel scale)
spends the time in slow small-image kernels and in copies. Here every run of consecutive
affine ops (normalisation, convolution, BatchNorm, flatten, linear) is folded into one dense
matrix `M` (out x in) and offset `b`, read off the ops once per call, so a backward step
through it is one large matrix product on rows of shape (batch * rows, features); ReLU and
max pooling act on the same flat rows. The first step of a pass that starts from the
identity (one row per neuron) needs no arithmetic at all: its result is `M` itself, shared
by every window.

A group whose dense matrix would be too large (big images) keeps the ops' own structured
`transpose` instead, so the stages work for every model `to_ops` accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tailorml.robust.ops import AffineOp, MaxPoolOp, Op, ReLUOp

# Dense folding is used while out x in stays below this many entries (8 MiB in float64).
DENSE_LIMIT = 1 << 20


@dataclass
class AffineStage:
    """Ops `first..last` (all affine) as y = M x + b on flattened vectors."""

    first: int
    last: int
    ops: list[AffineOp]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    matrix: torch.Tensor | None  # (out, in), or None: use the ops' structured transposes
    offset: torch.Tensor  # (out,)

    def back(
        self, a: torch.Tensor, columns: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(a M, a b) for coefficient rows a (batch, rows, out); with `columns` (batch, k),
        a holds only those output columns (the others are 0): then the matching rows of M
        are gathered per window, which halves the work after max pooling."""
        if columns is not None:
            if self.matrix is not None:
                rows, offset = self.rows_at(columns)
                return a @ rows, (a @ offset.unsqueeze(2)).squeeze(2)
            a = scatter_columns(a, columns, self.offset.numel())
        bias = a @ self.offset
        if self.matrix is not None:
            return a @ self.matrix, bias
        batch, rows = a.shape[:2]
        coefficients = a.reshape(batch, rows, *self.out_shape)
        for op in reversed(self.ops):
            coefficients = op.transpose(coefficients)
        return coefficients.reshape(batch, rows, -1), bias

    def rows_at(self, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each window's rows of M (batch, k, in) and of b (batch, k) at its output
        `columns` (batch, k); dense stages only."""
        flat = columns.flatten()
        rows = self.matrix.index_select(0, flat).view(*columns.shape, -1)
        return rows, self.offset.index_select(0, flat).view(columns.shape)

    def identity_back(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`back` of the identity rows (one per output neuron), without multiplying by it."""
        n = self.offset.numel()
        if self.matrix is not None:
            matrix = self.matrix.unsqueeze(0).expand(batch, -1, -1)
        else:
            eye = torch.eye(n, dtype=self.offset.dtype, device=self.offset.device)
            matrix, _ = self.back(eye.unsqueeze(0))
            matrix = matrix.expand(batch, -1, -1)
        return matrix, self.offset.unsqueeze(0).expand(batch, n)


@dataclass
class ReLUStage:
    index: int


@dataclass
class ReLUPoolStage:
    """A ReLU followed by non-overlapping max pooling, bounded backward as one step: the
    pooling passes each window's coefficient to a single entry, so the ReLU only ever sees
    that entry (half the features, no scattered zeros)."""

    index: int  # the ReLU's op index
    pool_index: int
    windows: torch.Tensor  # (out, entries), long: ReLU features pooled into each output


@dataclass
class PoolStage:
    """Non-overlapping max pooling as flat indices: `windows[o]` lists the input positions
    pooled into output position o, in the order `MaxPoolOp` reads them."""

    index: int
    windows: torch.Tensor  # (out, entries), long
    n_in: int


Stage = AffineStage | ReLUStage | ReLUPoolStage | PoolStage


def scatter_columns(a: torch.Tensor, columns: torch.Tensor, n: int) -> torch.Tensor:
    """Rows over `columns` (batch, k) written into full rows of n features (zeros else)."""
    full = a.new_zeros(*a.shape[:2], n)
    return full.scatter_(2, columns.unsqueeze(1).expand_as(a), a)


def _probe_dense(
    ops: list[AffineOp], shape: tuple[int, ...], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """(M, b, output shape) of a chain of affine ops, read off a basis. Exact: every
    column is one op application to a unit vector."""
    n = math.prod(shape)
    zero = torch.zeros(1, *shape, dtype=dtype)
    basis = torch.eye(n, dtype=dtype).reshape(n, *shape)
    for op in ops:
        zero, basis = op.forward(zero), op.forward(basis)
    out_shape = tuple(zero.shape[1:])
    offset = zero.flatten()
    matrix = (basis.flatten(1) - offset).T.contiguous()  # (out, in)
    return matrix, offset, out_shape


def _at_zero(ops: list[Op], shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The ops applied to one all-zero input: its shape is their output shape, its value
    an affine run's offset."""
    probe = torch.zeros(1, *shape, dtype=dtype)
    for op in ops:
        probe = op.forward(probe)
    return probe


def _out_shape(ops: list[Op], shape: tuple[int, ...], dtype: torch.dtype) -> tuple[int, ...]:
    return tuple(_at_zero(ops, shape, dtype).shape[1:])


def _pool_windows(op: MaxPoolOp) -> torch.Tensor:
    """Flat input index of every window entry, in `MaxPoolOp._windows` order."""
    n_in = math.prod(op.input_shape)
    positions = torch.arange(n_in, dtype=torch.float64).reshape(1, *op.input_shape)
    windows = op._windows(positions)  # (1, C, *out_spatial, entries)
    return windows.reshape(-1, windows.shape[-1]).round().long()


def stages_of(ops: list[Op], input_shape: tuple[int, ...], dtype: torch.dtype) -> list[Stage]:
    """The ops grouped into stages (affine runs folded), in forward order."""
    stages: list[Stage] = []
    shape = tuple(input_shape)
    index = 0
    while index < len(ops):
        op = ops[index]
        if isinstance(op, ReLUOp):
            following = ops[index + 1] if index + 1 < len(ops) else None
            if isinstance(following, MaxPoolOp):
                stages.append(ReLUPoolStage(index, index + 1, _pool_windows(following)))
                shape = _out_shape([following], shape, dtype)
                index += 2
            else:
                stages.append(ReLUStage(index))
                index += 1
            continue
        if isinstance(op, MaxPoolOp):
            stages.append(PoolStage(index, _pool_windows(op), math.prod(shape)))
            shape = _out_shape([op], shape, dtype)
            index += 1
            continue
        if not isinstance(op, AffineOp):  # to_ops only builds these three kinds
            raise TypeError(f"no flat stage for {type(op).__name__}")
        last = index
        while last + 1 < len(ops) and isinstance(ops[last + 1], AffineOp):
            last += 1
        group = [ops[i] for i in range(index, last + 1)]
        out_shape = _out_shape(group, shape, dtype)
        # under autograd the probe keeps the weights' graph: the bounds stay differentiable
        if math.prod(shape) * math.prod(out_shape) <= DENSE_LIMIT:
            matrix, offset, _ = _probe_dense(group, shape, dtype)
        else:
            matrix, offset = None, _at_zero(group, shape, dtype).flatten()
        stages.append(AffineStage(index, last, group, shape, out_shape, matrix, offset))
        shape = out_shape
        index = last + 1
    return stages
