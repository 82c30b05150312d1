"""Bounds on a network's outputs over a box of inputs: IBP, CROWN and CROWN-IBP.

- IBP (Gowal et al. 2018): intervals pushed forward layer by layer; cheap and loose.
- CROWN (Zhang et al. 2018): linear relaxations of every ReLU/max-pool, the output bounded by
  a backward pass; every intermediate layer's bounds come from its own backward pass
  (tight, costly: one spec per neuron).
- CROWN-IBP (Zhang et al. 2020): intermediate bounds from IBP, one backward pass for the
  output; the usual choice for certified training.
- α-CROWN (Xu et al. 2021): CROWN with the lower ReLU slopes optimised (`alpha.py`).

CROWN and α-CROWN run on flat stages (`flat.py`, `crown.py`: affine runs folded into dense
matrices, chunks of windows on worker threads), IBP and CROWN-IBP op by op (differentiable
through the weights, for training); `op_by_op_bounds` keeps CROWN's op-by-op definition as
the reference the fast path is tested against.

For CROWN, each intermediate bound is intersected with the interval one (both are sound), so
CROWN is never looser than IBP. Batch-vectorised; differentiable, so the same code trains.
Layers are taken from any `nn.Sequential` of supported layers, or from a model that declares
its forward as a chain of them (`chain()`, as `SmallCNN` does); anything else is refused by
name rather than bounded unsoundly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from tailorml.models.spec import Standardize
from tailorml.robust import alpha, crown
from tailorml.robust.flat import stages_of
from tailorml.robust.ops import (
    ChannelAffineOp,
    ConvOp,
    LinearOp,
    MaxPoolOp,
    Op,
    ReLUOp,
    ReshapeOp,
    UnsupportedLayerError,
)
from tailorml.robust.parallel import in_chunks
from tailorml.robust.perturbation import SensorError

# Windows per CROWN chunk: bounds the working set (about 25 MiB per worker on the alert
# model), whatever the batch.
CHUNK = 8

Method = Literal["ibp", "crown-ibp", "crown", "alpha-crown"]
METHODS: tuple[str, ...] = ("ibp", "crown-ibp", "crown", "alpha-crown")


def _leaf_layers(model: nn.Module) -> list[nn.Module]:
    """The model's layers in the order its forward applies them: an `nn.Sequential`'s, or
    those a model declares with a `chain()` method (its forward is exactly their
    composition, as `SmallCNN`'s); anything else with children is refused."""
    chain = getattr(model, "chain", None)
    if callable(chain):
        return [leaf for part in chain() for leaf in _leaf_layers(part)]
    if isinstance(model, nn.Sequential):
        return [leaf for child in model for leaf in _leaf_layers(child)]
    if isinstance(model, Standardize) or not list(model.children()):
        return [model]
    raise UnsupportedLayerError(
        f"cannot bound {type(model).__name__}: only nn.Sequential, models whose forward is "
        "the chain of layers they declare (a `chain()` method, as SmallCNN) and single "
        "layers are understood"
    )


def to_ops(model: nn.Module, input_shape: tuple[int, ...]) -> list[Op]:
    """The model as a flat list of ops; refuses, by name, every layer without a sound rule."""
    ops: list[Op] = []
    shape = tuple(input_shape)
    probe = torch.zeros(1, *shape, dtype=next(model.parameters()).dtype)
    for layer in _leaf_layers(model):
        name = type(layer).__name__
        spatial = len(shape) - 1
        if isinstance(layer, Standardize):
            op: Op = ChannelAffineOp(
                1 / layer.scale.flatten(), -layer.mean.flatten() / layer.scale.flatten(), spatial
            )
        elif isinstance(layer, nn.Linear):
            op = LinearOp(layer)
        elif isinstance(layer, nn.Conv1d | nn.Conv2d):
            op = ConvOp(layer, shape)
        elif isinstance(layer, nn.ReLU):
            op = ReLUOp()
        elif isinstance(layer, nn.MaxPool1d | nn.MaxPool2d):
            op = MaxPoolOp(layer, shape)
        elif isinstance(layer, nn.Flatten):
            if layer.start_dim != 1 or layer.end_dim != -1:
                raise UnsupportedLayerError("only Flatten(start_dim=1, end_dim=-1) is supported")
            op = ReshapeOp(shape, flatten=True)
        elif isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
            if layer.training or layer.running_mean is None:
                raise UnsupportedLayerError(
                    f"{name} in training mode normalises with batch statistics, which has no "
                    "per-sample bound; call model.eval() first"
                )
            scale = layer.running_var.add(layer.eps).rsqrt()
            if layer.affine:
                scale = scale * layer.weight
                shift = layer.bias - layer.running_mean * scale
            else:
                shift = -layer.running_mean * scale
            op = ChannelAffineOp(scale, shift, spatial)
        elif isinstance(layer, nn.Dropout | nn.Identity):
            if layer.training and isinstance(layer, nn.Dropout) and layer.p > 0:
                raise UnsupportedLayerError("Dropout in training mode is random; call model.eval()")
            op = ReshapeOp(shape, flatten=False)
        else:
            raise UnsupportedLayerError(
                f"no sound bound rule for layer {name}; supported: Linear, Conv1d, Conv2d, ReLU, "
                "non-overlapping MaxPool1d/2d, Flatten, BatchNorm (eval), Dropout (eval), "
                "and the input normalisation"
            )
        with torch.no_grad():
            probe = op.forward(probe)
        ops.append(op)
        shape = tuple(probe.shape[1:])
    return ops


@dataclass
class Propagation:
    """Bounds of every nonlinear op's input (key: op index), kept for the backward pass."""

    ops: list[Op]
    input_lower: torch.Tensor
    input_upper: torch.Tensor
    intermediate: dict[int, tuple[torch.Tensor, torch.Tensor]]
    output_ibp: tuple[torch.Tensor, torch.Tensor]
    last_input_ibp: tuple[torch.Tensor, torch.Tensor]  # interval of the last op's input


def _backward(
    ops: list[Op],
    last: int,
    spec: torch.Tensor,
    propagation: Propagation,
    need_upper: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Linear bounds of `spec @ output(op last)` concretised on the input box."""
    a_lower = spec
    a_upper = spec if need_upper else None
    bias_lower = spec.new_zeros(spec.shape[:2])
    bias_upper = spec.new_zeros(spec.shape[:2])
    for index in range(last, -1, -1):
        op = ops[index]
        a_lower, a_upper, lower_term, upper_term = op.back(
            a_lower, a_upper, propagation.intermediate.get(index)
        )
        bias_lower = bias_lower + lower_term
        bias_upper = bias_upper + upper_term
    center = ((propagation.input_upper + propagation.input_lower) / 2).flatten(1).unsqueeze(2)
    radius = ((propagation.input_upper - propagation.input_lower) / 2).flatten(1).unsqueeze(2)
    flat_lower = a_lower.flatten(2)
    lower = (flat_lower @ center).squeeze(2) - (flat_lower.abs() @ radius).squeeze(2) + bias_lower
    upper = None
    if a_upper is not None:
        flat_upper = a_upper.flatten(2)
        upper = (flat_upper @ center).squeeze(2) + (flat_upper.abs() @ radius).squeeze(2)
        upper = upper + bias_upper
    return lower, upper


def _identity_spec(reference: torch.Tensor) -> torch.Tensor:
    batch, shape = reference.shape[0], reference.shape[1:]
    n = reference[0].numel()
    eye = torch.eye(n, dtype=reference.dtype, device=reference.device).reshape(n, *shape)
    return eye.unsqueeze(0).expand(batch, n, *shape)


def _tighten(
    ops: list[Op],
    index: int,
    interval: tuple[torch.Tensor, torch.Tensor],
    propagation: Propagation,
    intersect: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN bounds of every neuron of op `index`'s input, intersected with `interval`.

    Every neuron, not only those whose interval straddles zero: tighter bounds of stable
    neurons still tighten max-pooling and the intervals downstream, and a neuron chosen by
    its batch-mates would make a sample's certificate depend on the batch it came in."""
    lower, upper = interval
    crown_lower, crown_upper = _backward(ops, index - 1, _identity_spec(lower), propagation, True)
    crown_lower, crown_upper = crown_lower.reshape(lower.shape), crown_upper.reshape(upper.shape)
    if not intersect:
        return crown_lower, crown_upper
    return torch.maximum(lower, crown_lower), torch.minimum(upper, crown_upper)


def propagate(
    model: nn.Module,
    lower: torch.Tensor,
    upper: torch.Tensor,
    method: Method,
    intersect: bool = True,
) -> Propagation:
    """Interval pass, with CROWN-tightened intermediate bounds when `method == 'crown'`
    (`intersect=False` keeps the pure CROWN bounds: for testing their soundness alone)."""
    ops = to_ops(model, tuple(lower.shape[1:]))
    propagation = Propagation(ops, lower, upper, {}, (lower, upper), (lower, upper))
    current = (lower, upper)
    for index, op in enumerate(ops):
        if op.nonlinear:
            # After a nonlinear op (max-pool after ReLU) the relaxation cannot beat the
            # interval of tightened bounds, so CROWN runs only on affine outputs.
            if method == "crown" and index > 0 and not ops[index - 1].nonlinear:
                current = _tighten(ops, index, current, propagation, intersect)
            propagation.intermediate[index] = current
        propagation.last_input_ibp = current
        current = op.ibp(*current)
    propagation.output_ibp = current
    return propagation


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown bound method {method!r}; choose one of {', '.join(METHODS)}")


def input_box(
    x: torch.Tensor, perturbation: SensorError | float
) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(perturbation, SensorError):
        perturbation = SensorError(eps=float(perturbation))
    return perturbation.box(x)


def bounds(
    model: nn.Module,
    x: torch.Tensor,
    eps: SensorError | float,
    method: Method = "crown",
    spec: torch.Tensor | None = None,
    lower_only: bool = False,
    intersect: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lower/upper bounds of the outputs (or of `spec @ outputs`, spec (batch, specs,
    outputs)) for every input within the perturbation of `x` (a SensorError, or a plain ε
    on every input). Input in the model's raw units: normalisation is the first op.
    CROWN bounds are intersected with interval ones unless `intersect=False`."""
    _check_method(method)
    lower_in, upper_in = input_box(x, eps)
    if method in ("crown", "alpha-crown"):
        return _flat_bounds(model, lower_in, upper_in, spec, lower_only, intersect, method)
    propagation = propagate(model, lower_in, upper_in, method, intersect)
    if method == "ibp":
        return _spec_of_interval(propagation.ops, propagation, spec, lower_only)
    return _backward_spec(propagation, spec, lower_only, intersect)


def _backward_spec(propagation, spec, lower_only: bool, intersect: bool):
    """The op-by-op backward pass of `spec @ outputs` (identity by default), intersected
    with the interval bounds of the same spec unless `intersect=False`."""
    ops = propagation.ops
    if spec is None:
        spec = _identity_spec(propagation.output_ibp[0])
    lower, upper = _backward(ops, len(ops) - 1, spec, propagation, not lower_only)
    if not intersect:
        return lower, upper
    interval_lower, interval_upper = _spec_of_interval(ops, propagation, spec, lower_only)
    lower = torch.maximum(lower, interval_lower)
    if upper is not None:
        upper = torch.minimum(upper, interval_upper)
    return lower, upper


def op_by_op_bounds(
    model: nn.Module,
    x: torch.Tensor,
    eps: SensorError | float,
    spec: torch.Tensor | None = None,
    lower_only: bool = False,
    intersect: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """CROWN by its definition, op by op (each op's own backward rule; convolutions as
    transposed convolutions). Slow; kept as the independent reference that the fast flat
    CROWN of `bounds` is tested (to 1e-9) and benchmarked against."""
    lower_in, upper_in = input_box(x, eps)
    propagation = propagate(model, lower_in, upper_in, "crown", intersect)
    return _backward_spec(propagation, spec, lower_only, intersect)


def _flat_bounds(
    model: nn.Module,
    lower_in: torch.Tensor,
    upper_in: torch.Tensor,
    spec: torch.Tensor | None,
    lower_only: bool,
    intersect: bool,
    method: str = "crown",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """CROWN (or α-CROWN) on flat stages, CHUNK windows at a time. Every window's bounds
    are its own, so chunking changes no bound; it keeps the working set small and memory
    flat in the batch size. Chunks run on `torch.get_num_threads()` worker threads
    with one-thread kernels: the kernels here are small, and torch's own threads wait on
    each other at every op (10x slower when another process holds a core; BENCHMARKS.md)."""
    ops = to_ops(model, tuple(lower_in.shape[1:]))
    stages = stages_of(ops, tuple(lower_in.shape[1:]), lower_in.dtype)

    def chunk(start: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        part = slice(start, start + CHUNK)
        part_spec = None if spec is None else spec[part]
        if method == "alpha-crown":  # upper bounds: lower bounds of the negated rows
            if part_spec is None:
                with torch.no_grad():
                    n_out = model(lower_in[:1]).shape[1]
                part_spec = _identity_spec(lower_in[part, :1].new_zeros(1, n_out)).flatten(2)
                part_spec = part_spec.expand(len(lower_in[part]), -1, -1)
            rows = part_spec.shape[1]
            both = part_spec if lower_only else torch.cat((part_spec, -part_spec), 1)
            lower, propagation = alpha.optimized_lower(
                ops, stages, lower_in[part], upper_in[part], both, intersect
            )
            upper = None if lower_only else -lower[:, rows:]
            lower = lower[:, :rows]
        else:
            propagation = crown.propagate(ops, stages, lower_in[part], upper_in[part], intersect)
            if part_spec is None:
                part_spec = _identity_spec(propagation.output_ibp[0]).flatten(2)
            lower, upper = crown.backward(propagation, len(stages) - 1, part_spec, not lower_only)
        if intersect:
            interval = Propagation(
                ops,
                lower_in[part],
                upper_in[part],
                {},
                propagation.output_ibp,
                propagation.last_input_ibp,
            )
            interval_lower, interval_upper = _spec_of_interval(ops, interval, part_spec, lower_only)
            lower = torch.maximum(lower, interval_lower)
            if upper is not None:
                upper = torch.minimum(upper, interval_upper)
        return lower, upper

    results = in_chunks(chunk, range(0, len(lower_in), CHUNK))
    lower = torch.cat([lower for lower, _ in results])
    return lower, None if lower_only else torch.cat([upper for _, upper in results])


def _spec_of_interval(
    ops: list[Op], propagation: Propagation, spec: torch.Tensor | None, lower_only: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """IBP bounds of `spec @ output`; folds the spec into a final linear layer (tighter)."""
    lower, upper = propagation.output_ibp
    if spec is None:
        return lower, None if lower_only else upper
    last = ops[-1]
    if isinstance(last, LinearOp):
        hidden = propagation.last_input_ibp
        weight = spec @ last.weight  # (batch, specs, in)
        bias = spec @ last.bias if last.bias is not None else 0.0
        center = ((hidden[0] + hidden[1]) / 2).unsqueeze(2)
        radius = ((hidden[1] - hidden[0]) / 2).unsqueeze(2)
        mid = (weight @ center).squeeze(2) + bias
        spread = (weight.abs() @ radius).squeeze(2)
        return mid - spread, None if lower_only else mid + spread
    mid = (spec @ ((upper + lower) / 2).unsqueeze(2)).squeeze(2)
    spread = (spec.abs() @ ((upper - lower) / 2).unsqueeze(2)).squeeze(2)
    return mid - spread, None if lower_only else mid + spread


def margin_spec(labels: torch.Tensor, n_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Rows e_y - e_j for every j != y: (batch, n_classes - 1, n_classes)."""
    eye = torch.eye(n_classes, dtype=dtype, device=labels.device)
    rows = eye[labels].unsqueeze(1) - eye.unsqueeze(0)  # (batch, K, K)
    keep = ~torch.nn.functional.one_hot(labels, n_classes).bool()
    return rows[keep].reshape(len(labels), n_classes - 1, n_classes)


def pairwise_spec(batch: int, n_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Rows e_i - e_j for every ordered pair i != j, in row-major (i, j) order."""
    eye = torch.eye(n_classes, dtype=dtype)
    rows = [eye[i] - eye[j] for i in range(n_classes) for j in range(n_classes) if i != j]
    return torch.stack(rows).unsqueeze(0).expand(batch, -1, -1)


def margin_bounds(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: SensorError | float,
    method: Method = "crown",
) -> torch.Tensor:
    """Lower bounds of logit_y - logit_j, j != y: (batch, n_classes - 1). All > 0 means the
    argmax prediction is y for every input in the box."""
    n_classes = _n_outputs(model, x)
    spec = margin_spec(labels, n_classes, x.dtype)
    lower, _ = bounds(model, x, eps, method, spec=spec, lower_only=True)
    return lower


def _n_outputs(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])
