"""int8 post-training quantization of an alert CNN and its integer-only reference.

The scheme is TFLite Micro's / CMSIS-NN's, so an MCU engineer can check it against what they
know: per-output-channel symmetric int8 weights, int32 biases (scale = input scale x weight
scale), int8 activations with an asymmetric scale and zero point calibrated (min/max) on
general training windows, ReLU fused into the layer as a clamp, requantization with Q31
multipliers and shifts (`tailorml.deploy.int8.fixed_point`). Two choices are ours and stated:

- The device reads CGM as int16 mg/dL. The input normalization is folded into the first
  layer: readings become int8 as round((x - centre) / s) per channel, with the centre the
  rounded training mean, so the int8 zero stands for the same "mean reading" the float
  model pads with; scales s and 1/scale are folded into the first layer's weights.
- The last layer writes int16 logits (as TFLite's 16x8 mode does for outputs): an int8
  logit step is too coarse for a 0.96 probability threshold. The decision (alert class when
  its probability reaches the threshold, else the likelier other class) is taken on those
  int16 logits with a fixed-point log-sum-exp and a 257-entry table — no floating point
  anywhere on the device.

`QuantizedModel.logits` is the ground truth the C code must reproduce bit for bit. It runs
in numpy: the int8 x int8 products are summed in float64, which is exact because every
accumulator stays far below 2**53 (checked when quantizing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tailorml.deploy.int8.fixed_point import multiply_by_quantized_multiplier, quantize_multiplier
from tailorml.errors import DeployError
from tailorml.models.cnn import SmallCNN
from tailorml.policy import AlertPolicy

DECISION_FRACTION_BITS = 8  # the log-sum-exp runs in logit steps / 256
DECISION_TABLE_SIZE = 256  # softplus table entries (plus one for interpolation)
DECISION_TABLE_SPAN = 20.0  # nats covered by the table; beyond, log(1 + e^-x) < 2e-9
SUPPORTED = "Conv1d (stride 1, 'same' padding), ReLU, MaxPool1d(2), Flatten, Linear"


@dataclass
class QuantizedInput:
    """int16 readings -> int8: q = clamp(round((x - centre) * multiplier), -128, 127)."""

    centre: np.ndarray  # (channels,) int, reading units (mg/dL)
    scale: np.ndarray  # (channels,) float: reading units per int8 step
    multiplier: np.ndarray  # (channels,) Q31
    shift: np.ndarray  # (channels,)


@dataclass
class QuantizedLayer:
    """One conv1d or linear layer with its fused activation (and a max-pool after it)."""

    name: str  # the float model's module name, e.g. "features.0"
    kind: str  # "conv1d" | "linear"
    weight: np.ndarray  # int8: conv (out, in, kernel); linear (out, in) in torch order
    bias: np.ndarray  # (out,) int32 in accumulator units
    multiplier: np.ndarray  # (out,) Q31
    shift: np.ndarray  # (out,)
    input_zero_point: int
    output_zero_point: int
    output_min: int  # clamp: a fused ReLU clamps at the zero point
    output_max: int
    output_bits: int  # 8, or 16 for the logits
    padding: int = 0
    pool: int = 1  # max-pool window after the activation (1 = none)
    input_scale: float = 1.0
    output_scale: float = 1.0
    weight_scale: np.ndarray = field(default_factory=lambda: np.ones(1))

    @property
    def kernel(self) -> int:
        return self.weight.shape[2] if self.kind == "conv1d" else 1


@dataclass
class DecisionRule:
    """The policy on int16 logits: alert when LSE_j (l_j - l_alert) <= log((1 - t) / t),
    all in logit steps scaled by 2**DECISION_FRACTION_BITS."""

    alert_index: int
    limit: int  # floor(log((1 - t) / t) / logit_scale * 2**F)
    step_bits: int  # the table's spacing is 2**step_bits scaled logit steps (a shift, no divide)
    softplus: np.ndarray  # (SIZE + 1,) int: log(1 + e^-x) / logit_scale * 2**F at x = i*step


@dataclass
class QuantizedModel:
    spec: dict
    policy: AlertPolicy
    input: QuantizedInput
    layers: list[QuantizedLayer]
    decision: DecisionRule
    logit_scale: float  # real logit per int16 step
    calibration_windows: int

    @property
    def window(self) -> int:
        return int(self.spec["length"])

    @property
    def channels(self) -> int:
        return int(self.spec["in_channels"])

    def readings(self, windows: np.ndarray) -> np.ndarray:
        """What the device is given: readings rounded to whole units, as int16."""
        windows = np.asarray(windows, dtype=np.float64)
        if windows.ndim != 3 or windows.shape[1:] != (self.channels, self.window):
            raise DeployError(
                f"windows of shape {windows.shape[1:]} given to a model that reads "
                f"({self.channels}, {self.window})"
            )
        return np.clip(np.rint(windows), -32768, 32767).astype(np.int16)

    def logits(self, windows: np.ndarray) -> np.ndarray:
        """int16 logits (n, classes) of the integer-only reference for raw windows."""
        x = _quantize_input(self.input, self.readings(windows))
        for layer in self.layers:
            x = _run_layer(layer, x)
        return x.astype(np.int16)

    def features(self, windows: np.ndarray) -> np.ndarray:
        """The last layer's inputs (n, features) as the device holds them: int8 codes minus
        their zero point (real value = code x layers[-1].input_scale)."""
        x = _quantize_input(self.input, self.readings(windows))
        for layer in self.layers[:-1]:
            x = _run_layer(layer, x)
        return _flat(x) - self.layers[-1].input_zero_point

    def head_logits(self, features: np.ndarray) -> np.ndarray:
        """int16 logits of the int8 last layer on `features` as `features` returns them
        (what the device's `tailorml_head` computes)."""
        codes = np.asarray(features, dtype=np.int64) + self.layers[-1].input_zero_point
        return _run_layer(self.layers[-1], codes).astype(np.int16)

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """Class per row from int16 logits, in integers (what the device decides)."""
        return decide_fixed_point(self.decision, np.asarray(logits, dtype=np.int64))

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Softmax of the dequantized logits (for metrics and plots on the host only)."""
        real = np.asarray(logits, dtype=np.float64) * self.logit_scale
        real -= real.max(axis=1, keepdims=True)
        exp = np.exp(real)
        return exp / exp.sum(axis=1, keepdims=True)

    def n_weight_bytes(self) -> int:
        """int8 weights plus int32 biases and per-channel multipliers and shifts."""
        return sum(
            layer.weight.size + 4 * (layer.bias.size + layer.multiplier.size + layer.shift.size)
            for layer in self.layers
        )

    def n_macs(self) -> int:
        """Multiply-accumulates of one inference."""
        total, length = 0, self.window
        for layer in self.layers:
            if layer.kind == "conv1d":
                total += layer.weight.size * length
                length //= layer.pool
            else:
                total += layer.weight.size
        return total


# -- the float model as a list of operations --------------------------------------------


def _operations(model: SmallCNN) -> list[tuple[str, nn.Module]]:
    """(name, module) in forward order; refuses by name anything the export cannot run."""
    if getattr(getattr(model, "spec", None), "architecture", "cnn") == "he_friendly":
        raise DeployError(
            "an he_friendly model (x² activations) is for encrypted inference in the cloud "
            "(tailorml privacy); export a model.architecture = 'cnn' model to a device"
        )
    if not isinstance(model, SmallCNN) or model.spec.dims != 1:
        raise DeployError(
            "only 1-D alert models (conv1d over CGM windows) can be exported to a device; "
            "this model is not one"
        )
    operations = []
    for prefix, block in (("features", model.features), ("head", model.head)):
        for index, module in enumerate(block):
            name = f"{prefix}.{index}"
            _check_supported(name, module)
            operations.append((name, module))
    return operations


def _check_supported(name: str, module: nn.Module) -> None:
    if isinstance(module, nn.Conv1d):
        kernel = module.kernel_size[0]
        if (
            module.stride != (1,)
            or module.dilation != (1,)
            or module.groups != 1
            or module.padding != (kernel // 2,)
            or kernel % 2 == 0
            or module.bias is None
            or module.padding_mode != "zeros"
        ):
            raise DeployError(f"layer {name} ({module}) is not supported; supported: {SUPPORTED}")
    elif isinstance(module, nn.MaxPool1d):
        if _pair(module.kernel_size) != 2 or _pair(module.stride) != 2 or module.padding != 0:
            raise DeployError(f"layer {name} ({module}) is not supported; supported: {SUPPORTED}")
        if module.ceil_mode or _pair(module.dilation) != 1:
            raise DeployError(f"layer {name} ({module}) is not supported; supported: {SUPPORTED}")
    elif isinstance(module, nn.Linear):
        if module.bias is None:
            raise DeployError(f"layer {name} has no bias; supported: {SUPPORTED}")
    elif not isinstance(module, nn.ReLU | nn.Flatten):
        raise DeployError(
            f"layer {name} ({type(module).__name__}) is not supported by the int8 export; "
            f"supported: {SUPPORTED}"
        )


def _pair(value) -> int:
    return value[0] if isinstance(value, tuple) else int(value)


# -- calibration --------------------------------------------------------------------------


def _activation_ranges(model: SmallCNN, windows: np.ndarray) -> dict[str, tuple[float, float]]:
    """min/max of each layer's output (after its ReLU, if any) over the windows."""
    ranges: dict[str, list[float]] = {}
    operations = _operations(model)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(windows), 4096):
            x = model.normalize(torch.as_tensor(windows[start : start + 4096], dtype=torch.float32))
            batch: dict[str, tuple[float, float]] = {}
            owner = None
            for name, module in operations:
                x = module(x)
                if isinstance(module, nn.Conv1d | nn.Linear):
                    owner = name
                if owner is not None and isinstance(module, nn.Conv1d | nn.Linear | nn.ReLU):
                    batch[owner] = (float(x.min()), float(x.max()))  # after its ReLU, if any
            for name, (low, high) in batch.items():
                old = ranges.get(name, [low, high])
                ranges[name] = [min(old[0], low), max(old[1], high)]
    return {name: (low, high) for name, (low, high) in ranges.items()}


def _int8_scale(low: float, high: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero point) covering [low, high] and 0 (TFLite's rule)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255.0 if high > low else 1.0
    zero_point = int(np.clip(round(-128 - low / scale), -128, 127))
    return scale, zero_point


# -- quantization ------------------------------------------------------------------------


def quantize(model: SmallCNN, calibration: np.ndarray) -> QuantizedModel:
    """The int8 model of `model`, activations calibrated on `calibration` windows (general
    training windows in raw units, shape (n, channels, length))."""
    operations = _operations(model)
    if model.policy is None or not model.policy.is_alert:
        raise DeployError("the model has no alert policy; only alert models can be exported")
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 3 or len(calibration) == 0:
        raise DeployError("calibration needs at least one window of shape (channels, length)")
    if not np.isfinite(calibration).all():
        raise DeployError("calibration windows hold non-finite readings; drop them first")
    ranges = _activation_ranges(model, calibration)
    quantized_input = _quantize_input_stage(model, calibration)

    layers: list[QuantizedLayer] = []
    input_scale, input_zero_point = 1.0, 0  # the int8 input stands for itself (see folding)
    linear_names = [name for name, module in operations if isinstance(module, nn.Linear)]
    for position, (name, module) in enumerate(operations):
        if isinstance(module, nn.MaxPool1d):
            layers[-1].pool = 2
            continue
        if not isinstance(module, nn.Conv1d | nn.Linear):
            continue
        weight = module.weight.detach().double().numpy()
        bias = module.bias.detach().double().numpy()
        if not layers:  # fold the normalization and the input scale into the first layer
            weight, bias = _fold_input(model, quantized_input, weight, bias)
        last = name == linear_names[-1]
        followed_by_relu = position + 1 < len(operations) and isinstance(
            operations[position + 1][1], nn.ReLU
        )
        low, high = ranges[name]
        if last:
            output_scale = max(abs(low), abs(high)) / 32767.0 or 1.0
            output_zero_point, output_min, output_max, bits = 0, -32768, 32767, 16
        else:
            output_scale, output_zero_point = _int8_scale(low, high)
            output_min = output_zero_point if followed_by_relu else -128
            output_max, bits = 127, 8
        layer = _quantize_layer(
            name,
            module,
            weight,
            bias,
            input_scale,
            input_zero_point,
            output_scale,
            output_zero_point,
            (output_min, output_max, bits),
        )
        layers.append(layer)
        input_scale, input_zero_point = output_scale, output_zero_point
    logit_scale = layers[-1].output_scale
    return QuantizedModel(
        spec=model.spec.to_dict(),
        policy=model.policy,
        input=quantized_input,
        layers=layers,
        decision=decision_rule(model.policy, logit_scale),
        logit_scale=logit_scale,
        calibration_windows=len(calibration),
    )


def _quantize_input_stage(model: SmallCNN, calibration: np.ndarray) -> QuantizedInput:
    mean = model.normalize.mean.flatten().double().numpy()
    centre = np.rint(mean).astype(np.int64)
    readings = np.rint(calibration.astype(np.float64))
    spread = np.abs(readings - centre[None, :, None]).max(axis=(0, 2))
    scale = np.maximum(spread, 1.0) / 127.0
    factors = [quantize_multiplier(1.0 / s) for s in scale]
    return QuantizedInput(
        centre=centre,
        scale=scale,
        multiplier=np.array([m for m, _ in factors], dtype=np.int64),
        shift=np.array([s for _, s in factors], dtype=np.int64),
    )


def _fold_input(
    model: SmallCNN, stage: QuantizedInput, weight: np.ndarray, bias: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """First-layer weights and bias that take the int8 input q = (x - centre) / s directly:
    (x - mean) / norm = (s q + centre - mean) / norm."""
    mean = model.normalize.mean.flatten().double().numpy()
    norm = model.normalize.scale.flatten().double().numpy()
    folded = weight * (stage.scale / norm)[None, :, None]
    offset = (stage.centre - mean) / norm
    return folded, bias + (weight * offset[None, :, None]).sum(axis=(1, 2))


def _quantize_layer(
    name: str,
    module: nn.Module,
    weight: np.ndarray,
    bias: np.ndarray,
    input_scale: float,
    input_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    output_range: tuple[int, int, int],
) -> QuantizedLayer:
    out_channels = weight.shape[0]
    peak = np.abs(weight.reshape(out_channels, -1)).max(axis=1)
    # a (nearly) dead channel must still leave its bias room in int32: floor its scale
    weight_scale = np.maximum(peak / 127.0, np.abs(bias) / (input_scale * 2**30))
    weight_scale = np.where(weight_scale > 0, weight_scale, 1.0)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    q_weight = np.clip(np.rint(weight / weight_scale.reshape(shape)), -127, 127).astype(np.int8)
    q_bias = np.rint(bias / (input_scale * weight_scale))
    if np.abs(q_bias).max(initial=0) >= 2**31:
        raise DeployError(f"layer {name}: a bias does not fit int32 at this input scale")
    factors = [quantize_multiplier(input_scale * s / output_scale) for s in weight_scale]
    # the device's high multiply relies on non-negative multipliers (see deploy.c)
    assert all(0 <= multiplier < 2**31 for multiplier, _ in factors)
    reach = np.abs(q_weight.reshape(out_channels, -1).astype(np.int64)).sum(axis=1) * 255
    if (reach + np.abs(q_bias)).max() >= 2**31:
        raise DeployError(f"layer {name}: its int32 accumulator could overflow")
    output_min, output_max, bits = output_range
    return QuantizedLayer(
        name=name,
        kind="conv1d" if isinstance(module, nn.Conv1d) else "linear",
        weight=q_weight,
        bias=q_bias.astype(np.int64),
        multiplier=np.array([m for m, _ in factors], dtype=np.int64),
        shift=np.array([s for _, s in factors], dtype=np.int64),
        input_zero_point=input_zero_point,
        output_zero_point=output_zero_point,
        output_min=output_min,
        output_max=output_max,
        output_bits=bits,
        padding=int(module.padding[0]) if isinstance(module, nn.Conv1d) else 0,
        input_scale=input_scale,
        output_scale=output_scale,
        weight_scale=weight_scale,
    )


# -- the decision in fixed point ----------------------------------------------------------


def decision_rule(policy: AlertPolicy, logit_scale: float) -> DecisionRule:
    """Integer constants of the policy's threshold rule on int16 logits of `logit_scale`."""
    unit = 2**DECISION_FRACTION_BITS
    threshold = policy.threshold
    limit = math.floor(math.log((1.0 - threshold) / threshold) / logit_scale * unit)
    span = DECISION_TABLE_SPAN / logit_scale * unit  # the table's reach in scaled steps
    step_bits = max(0, math.ceil(math.log2(span / DECISION_TABLE_SIZE)))
    points = np.arange(DECISION_TABLE_SIZE + 1) * 2**step_bits * logit_scale / unit
    softplus = np.rint(np.log1p(np.exp(-points)) / logit_scale * unit).astype(np.int64)
    softplus[-1] = 0
    return DecisionRule(
        alert_index=int(policy.alert_index),
        limit=int(limit),
        step_bits=int(step_bits),
        softplus=softplus,
    )


def _softplus_scaled(rule: DecisionRule, gap: np.ndarray) -> np.ndarray:
    """log(1 + e^-gap) in scaled steps for gap >= 0, linearly interpolated in integers
    (the product is int64 on the device too; every operand is non-negative)."""
    index = gap >> rule.step_bits
    beyond = index >= DECISION_TABLE_SIZE
    index = np.minimum(index, DECISION_TABLE_SIZE - 1)
    rest = gap - (index << rule.step_bits)
    low, high = rule.softplus[index], rule.softplus[index + 1]
    value = low - (((low - high) * rest) >> rule.step_bits)
    return np.where(beyond, 0, value)


def alert_total_fixed_point(rule: DecisionRule, logits: np.ndarray):
    """log sum_j exp(l_j - l_alert) over the other classes in scaled steps, and the likelier
    other class (first on ties), per row — the two things the decision reads."""
    unit_shift = DECISION_FRACTION_BITS
    alert = logits[:, rule.alert_index]
    others = [j for j in range(logits.shape[1]) if j != rule.alert_index]
    total = (logits[:, others[0]] - alert) << unit_shift
    best = np.full(len(logits), others[0])
    best_value = logits[:, others[0]]
    for j in others[1:]:
        gap_value = (logits[:, j] - alert) << unit_shift
        larger = np.maximum(total, gap_value)
        total = larger + _softplus_scaled(rule, np.abs(total - gap_value))
        better = logits[:, j] > best_value
        best = np.where(better, j, best)
        best_value = np.where(better, logits[:, j], best_value)
    return total, best


def decide_fixed_point(rule: DecisionRule, logits: np.ndarray) -> np.ndarray:
    """Alert class when log sum_j exp(l_j - l_alert) over the other classes stays within
    the limit (P(alert) >= threshold); else the likelier other class (first on ties)."""
    total, best = alert_total_fixed_point(rule, logits)
    return np.where(total <= rule.limit, rule.alert_index, best)


# -- the integer reference ----------------------------------------------------------------


def _quantize_input(stage: QuantizedInput, readings: np.ndarray) -> np.ndarray:
    """int16 readings (n, channels, length) -> int8 values (as int64)."""
    centred = readings.astype(np.int64) - stage.centre[None, :, None]
    q = multiply_by_quantized_multiplier(
        centred, stage.multiplier[None, :, None], stage.shift[None, :, None]
    )
    return np.clip(q, -128, 127)


def _flat(x: np.ndarray) -> np.ndarray:
    """(n, ...) as (n, features); also for n = 0 (numpy cannot infer a -1 from no rows)."""
    return x.reshape(len(x), int(np.prod(x.shape[1:], dtype=np.int64)))


def _run_layer(layer: QuantizedLayer, x: np.ndarray) -> np.ndarray:
    """One quantized layer on int values (n, channels, length) or (n, features)."""
    weight = layer.weight.astype(np.float64)
    shifted = (x - layer.input_zero_point).astype(np.float64)
    if layer.kind == "conv1d":
        length = shifted.shape[2]
        padded = np.pad(shifted, ((0, 0), (0, 0), (layer.padding, layer.padding)))
        columns = np.stack(
            [padded[:, :, j : j + length] for j in range(layer.kernel)], axis=-1
        )  # (n, channels, length, kernel)
        acc = np.einsum("nclk,ock->nol", columns, weight, optimize=True)
        bias = layer.bias[None, :, None]
        per_channel = (layer.multiplier[None, :, None], layer.shift[None, :, None])
    else:
        acc = _flat(shifted) @ weight.T
        bias = layer.bias[None, :]
        per_channel = (layer.multiplier[None, :], layer.shift[None, :])
    acc = np.rint(acc).astype(np.int64) + bias
    out = multiply_by_quantized_multiplier(acc, *per_channel) + layer.output_zero_point
    out = np.clip(out, layer.output_min, layer.output_max)
    if layer.pool == 2:
        usable = out.shape[2] // 2 * 2
        out = out[:, :, :usable].reshape(out.shape[0], out.shape[1], usable // 2, 2).max(axis=3)
    return out
