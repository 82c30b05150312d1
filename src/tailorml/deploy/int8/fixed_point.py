"""Fixed-point requantization exactly as TFLite Micro's reference kernels do it.

An int8 layer accumulates in int32 and must rescale the sum by a real factor
`input_scale * weight_scale / output_scale`. TFLite writes that factor as a Q31 multiplier
and a power-of-two shift (`QuantizeMultiplier`) and applies it with
`SaturatingRoundingDoublingHighMul` then `RoundingDivideByPOT` (gemmlowp's double rounding).
Every MCU engineer knows these functions; we implement the same arithmetic so that the
device's numbers are the industry's, not a variant of ours. This module is the numpy side;
`tailorml.deploy.int8.c` emits the same three functions in C, and the parity tests hold the two
bit for bit.

Own code rather than a dependency: the only packages that carry these kernels are
TensorFlow and its runtimes (hundreds of MB, no integer reference callable from numpy).
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(Q31 multiplier, shift) with real = multiplier / 2**31 * 2**shift — TFLite's
    `QuantizeMultiplier`. A positive shift is a left shift."""
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"a requantization factor must be finite and >= 0, got {real}")
    if real == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real)  # real = fraction * 2**shift, fraction in [0.5, 1)
    multiplier = round(fraction * 2**31)
    if multiplier == 2**31:
        multiplier //= 2
        shift += 1
    if shift < -31:  # too small to matter: the product rounds to zero
        return 0, 0
    if shift > 30:
        raise ValueError(f"requantization factor {real} is too large for a Q31 multiplier")
    return multiplier, shift


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """round(a * b / 2**31) with gemmlowp's nudge (ties away from zero), saturating the one
    overflow (INT32_MIN * INT32_MIN). int64 arrays holding int32 values."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    product = a * b
    nudged = product + np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    # C's integer division truncates toward zero; numpy's >> floors
    quotient = np.where(nudged >= 0, nudged >> 31, -((-nudged) >> 31))
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, quotient)


def rounding_divide_by_power_of_two(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """x / 2**exponent rounded to nearest, ties away from zero (gemmlowp)."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(
    x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """x * real factor, the factor given as (multiplier, shift) — TFLite's
    `MultiplyByQuantizedMultiplier`. Broadcasts like numpy (per-channel factors on the
    channel axis)."""
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = np.asarray(x, dtype=np.int64) << left
    if shifted.size and (shifted.min() < INT32_MIN or shifted.max() > INT32_MAX):
        raise OverflowError("an accumulator left-shifted for requantization left int32")
    return rounding_divide_by_power_of_two(
        saturating_rounding_doubling_high_mul(shifted, multiplier), right
    )
