"""The last layer as the device trains it: float32, op for op as the generated C computes it.

Why float and not int8 for the personalized head: it has (features + 1) x classes = 99
parameters and one inference costs 96 multiply-adds, nothing next to the 70k of the int8
backbone; the Cortex-M4F's FPU does a float multiply-add in one or two cycles (the M3 has no
FPU: compiler-rt's soft-float routines cost tens of cycles each, still small next to an
inference). Requantizing the head after every update would add a second rounding of the
learned weights, a per-channel scale search and Q31 multipliers computed on the device, all
for no memory that matters. The *decision* stays the integer one: float logits are rounded
to int16 at the factory logit scale and go through the model's own fixed-point threshold
rule (`tailorml_decide`), so threshold and policy are those of the exported model.

Every function here mirrors the C in `tailorml.deploy.learner.c` operation for operation:
each product and each sum is rounded to float32 in the same order (the C is compiled with
FP_CONTRACT OFF, so no fused multiply-add), exp is the same Cody-Waite reduction and
polynomial, and rounding to int16 is the same half-away-from-zero. On IEEE-754 hardware the
two agree bit for bit; the tests hold them to the stated tolerance (`WEIGHT_TOLERANCE`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tailorml.deploy.int8.quantize import QuantizedModel

F32 = np.float32
WEIGHT_TOLERANCE = 1e-4  # host C vs this reference: max |difference| / max |weight|

LOG2E = F32(1.4426950408889634)
LN2_HI = F32(0.693145751953125)  # ln 2 split so that n * LN2_HI is exact (Cody-Waite)
LN2_LO = F32(1.4286068203094173e-06)
EXP_FLOOR = F32(-80.0)  # e^-80 < 2e-35: nothing in a softmax
# Taylor coefficients of e^r, highest first; |r| <= ln(2)/2 + rounding, error ~1e-7
EXP_POLYNOMIAL = tuple(F32(1.0 / factorial) for factorial in (720, 120, 24, 6, 2, 1, 1))
INT16_MAX, INT16_MIN = 32767, -32768


@dataclass
class FloatHead:
    """Weights (classes, features) and biases (classes,) in float32, in real units: real
    logit = bias + sum_j weight_j x real feature_j."""

    weight: np.ndarray
    bias: np.ndarray

    def copy(self) -> FloatHead:
        return FloatHead(self.weight.copy(), self.bias.copy())

    def flat(self) -> np.ndarray:
        """Weights then biases, as the C struct lays them out."""
        return np.concatenate([self.weight.ravel(), self.bias])


def factory_head(quantized: QuantizedModel) -> FloatHead:
    """The exported int8 last layer, dequantized exactly into float32: where training starts
    and what the L2 pull holds it to."""
    layer = quantized.layers[-1]
    scale = layer.weight_scale.astype(np.float64)
    weight = layer.weight.astype(np.float64) * scale[:, None]
    bias = layer.bias.astype(np.float64) * layer.input_scale * scale
    return FloatHead(weight.astype(F32), bias.astype(F32))


def feature_scale(quantized: QuantizedModel) -> np.float32:
    """Real value of one feature step (the last layer's input scale)."""
    return F32(quantized.layers[-1].input_scale)


def logit_inverse(quantized: QuantizedModel) -> np.float32:
    """int16 logit steps per real logit (the factory's logit scale, inverted)."""
    return F32(1.0 / quantized.logit_scale)


def real_features(features: np.ndarray, scale: np.float32) -> np.ndarray:
    """int16 features (q - z) -> float32 real values, (float)feature * scale."""
    return np.asarray(features).astype(F32) * scale


def real_logits(head: FloatHead, x: np.ndarray) -> np.ndarray:
    """(n, classes) float32: bias, then + w_j * x_j for j in order (as the C loop)."""
    x = np.asarray(x, dtype=F32)
    acc = np.broadcast_to(head.bias, (len(x), len(head.bias))).copy()
    for j in range(x.shape[1]):
        acc = acc + head.weight[:, j][None, :] * x[:, j][:, None]
    return acc


def int16_logits(real: np.ndarray, inverse: np.float32) -> np.ndarray:
    """Real logits -> int16 steps: saturating, rounded half away from zero (NaN -> 0)."""
    v = np.asarray(real, dtype=F32) * inverse
    with np.errstate(invalid="ignore"):
        rounded = np.where(v >= 0, np.trunc(v + F32(0.5)), -np.trunc(-v + F32(0.5)))
        out = np.where(v >= F32(INT16_MAX), INT16_MAX, rounded)
        out = np.where(v <= F32(INT16_MIN), INT16_MIN, out)
    return np.where(np.isnan(v), 0, out).astype(np.int16)


def exp_nonpositive(x: np.ndarray) -> np.ndarray:
    """e^x for float32 x <= 0: x = n ln2 + r, e^r by Horner, times 2^n built from bits."""
    x = np.asarray(x, dtype=F32)
    clipped = np.maximum(x, EXP_FLOOR)
    n = np.trunc(clipped * LOG2E - F32(0.5)).astype(np.int32)
    nf = n.astype(F32)
    r = clipped - nf * LN2_HI
    r = r - nf * LN2_LO
    p = EXP_POLYNOMIAL[0]
    for coefficient in EXP_POLYNOMIAL[1:]:
        p = p * r + coefficient
    power = ((n + 127).astype(np.uint32) << np.uint32(23)).view(F32)
    return np.where(x < EXP_FLOOR, F32(0.0), p * power).astype(F32)


def softmax(real: np.ndarray) -> np.ndarray:
    """Row softmax in float32: e_o = exp(z_o - max), sum in class order, p_o = e_o / sum.

    Deliberately not `AlertPolicy.probabilities` (float64, numpy's exp): this is the
    softmax inside the device's training step (the cross-entropy gradient of `train_head`),
    which must match the C in `tailorml.deploy.learner.c` bit for bit (float32, its own exp,
    its own summation order). No decision is taken from it: the device decides with the
    fixed-point rule of the exported model (`tailorml_decide`)."""
    real = np.asarray(real, dtype=F32)
    e = exp_nonpositive(real - real.max(axis=1, keepdims=True))
    total = e[:, 0].copy()
    for o in range(1, e.shape[1]):
        total = total + e[:, o]
    return e / total[:, None]


def class_weights(counts: np.ndarray) -> np.ndarray:
    """Balanced weights from the buffer's counts: total / (classes present x count)."""
    counts = np.asarray(counts, dtype=np.int64)
    total, present = F32(counts.sum()), F32((counts > 0).sum())
    safe = np.maximum(counts, 1).astype(F32)
    return np.where(counts > 0, total / (present * safe), F32(0.0)).astype(F32)


def alert_offset(threshold: float, settings) -> np.float32:
    """log(t / (1 - t)) for the alert threshold t when training is threshold-aware, else 0:
    with the alert logit lowered by it, softmax 1/2 is the rule's P(alert) = t (logit
    adjustment, Menon et al. 2021)."""
    if not settings.threshold_aware:
        return F32(0.0)
    return F32(np.log(threshold / (1.0 - threshold)))


def shuffle(order: np.ndarray, rng) -> None:
    """Fisher-Yates in place, from the last position down (the device's loop)."""
    for i in range(len(order) - 1, 0, -1):
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]


def train_head(
    anchor: FloatHead,
    features: np.ndarray,
    labels: np.ndarray,
    scale: np.float32,
    rng,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    l2_pull: float,
    train_bias: bool,
    alert: int,
    offset: np.float32,
    factors: np.ndarray | None = None,
) -> FloatHead:
    """SGD from `anchor` (the factory head) over the buffer: `epochs` passes in a reshuffled
    order, mini-batches of `batch_size`, class-weighted cross-entropy, and an L2 pull of
    strength `l2_pull` back to `anchor` (L2-SP): each step is
    w <- w - lr * (mean over the batch of dL/dw + l2_pull * (w - w_anchor)).
    `features` are int16 (q - z) rows, `labels` their classes; a sample's loss weight is
    its class's balanced weight times its entry of `factors` (1 if None). The loss sees the
    alert
    class's logit lowered by `offset` (`alert_offset`): its softmax then reaches 1/2 where
    the deployed rule alerts, so the gradients act at the decision the device takes, not
    at a boundary of p = 1/2 the threshold never uses."""
    n_classes = len(anchor.bias)
    head = anchor.copy()
    lr, l2 = F32(learning_rate), F32(l2_pull)
    weights = class_weights(np.bincount(labels, minlength=n_classes))
    factors = np.ones(len(labels), F32) if factors is None else np.asarray(factors, F32)
    x_all = real_features(features, scale)
    order = np.arange(len(labels))
    for _ in range(epochs):
        shuffle(order, rng)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            x, y = x_all[batch], labels[batch]
            z = real_logits(head, x)
            z[:, alert] = z[:, alert] - offset  # the deployed threshold at p = 1/2
            p = softmax(z)
            target = (np.arange(n_classes)[None, :] == y[:, None]).astype(F32)
            g = (weights[y] * factors[batch])[:, None] * (p - target)
            grad_w = np.zeros_like(head.weight)
            grad_b = np.zeros_like(head.bias)
            for k in range(len(batch)):  # summed sample by sample, as the device does
                grad_w = grad_w + g[k][:, None] * x[k][None, :]
                grad_b = grad_b + g[k]
            inverse = F32(1.0) / F32(len(batch))
            head.weight = head.weight - lr * (grad_w * inverse + l2 * (head.weight - anchor.weight))
            if train_bias:
                head.bias = head.bias - lr * (grad_b * inverse + l2 * (head.bias - anchor.bias))
    return head
