"""TFLite's requantization arithmetic, on values worked out by hand."""

import numpy as np
import pytest

from tailorml.deploy.int8.fixed_point import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_power_of_two,
    saturating_rounding_doubling_high_mul,
)


@pytest.mark.parametrize(
    ("real", "expected"),
    [
        (0.5, (2**30, 0)),
        (0.25, (2**30, -1)),
        (1.0, (2**30, 1)),
        (0.75, (1_610_612_736, 0)),  # 0.75 * 2**31
        (0.0, (0, 0)),
        (2.0**-40, (0, 0)),  # below 2**-31: rounds to nothing
    ],
)
def test_quantize_multiplier_writes_a_real_as_q31_and_a_shift(real, expected):
    assert quantize_multiplier(real) == expected


def test_quantize_multiplier_refuses_what_cannot_be_a_scale():
    for bad in (-0.1, float("nan"), float("inf"), 2.0**31):
        with pytest.raises(ValueError):
            quantize_multiplier(bad)


def test_high_mul_rounds_to_nearest_with_ties_up_and_saturates_once():
    high = saturating_rounding_doubling_high_mul
    # 0.5 as Q31 halves: 3 * 0.5 = 1.5 -> 2, -3 * 0.5 = -1.5 -> -1, 5 * 0.5 = 2.5 -> 3
    assert high(np.array([3, -3, 5, -5, 4]), 2**30).tolist() == [2, -1, 3, -2, 2]
    assert high(np.array([-(2**31)]), -(2**31)).tolist() == [2**31 - 1]


def test_divide_by_power_of_two_rounds_half_away_from_zero():
    x = np.array([5, -5, 6, -6, 7, -7, 0])
    assert rounding_divide_by_power_of_two(x, 1).tolist() == [3, -3, 3, -3, 4, -4, 0]
    assert rounding_divide_by_power_of_two(x, 2).tolist() == [1, -1, 2, -2, 2, -2, 0]


def test_multiply_by_quantized_multiplier_per_channel():
    multiplier, shift = zip(*(quantize_multiplier(r) for r in (0.5, 0.25, 3.0)), strict=True)
    x = np.array([[10, -6, 7], [3, -3, -7]])
    got = multiply_by_quantized_multiplier(x, np.array(multiplier), np.array(shift))
    # 10*.5=5, -6*.25=-1.5 -> -2 (away from zero in the final shift), 7*3=21;
    # 3*.5=1.5 -> 2, -3*.25=-.75 -> -1, -7*3=-21
    assert got.tolist() == [[5, -2, 21], [2, -1, -21]]


def test_the_devices_one_step_high_multiply_equals_gemmlowps_for_our_multipliers():
    """The C code computes (a*b + 2**30) >> 31; for b >= 0 that is gemmlowp's
    nudge-and-truncate high multiply, ties included (checked on random values and ties)."""
    rng = np.random.default_rng(0)
    a = rng.integers(-(2**31), 2**31, 200_000)
    b = rng.integers(0, 2**31, 200_000)
    ties = 2 * rng.integers(-(2**20), 2**20, 20_000) + 1  # a * 2**30 = odd multiple of 2**30
    a = np.concatenate([a, ties, [-1, 1, 0, -(2**31), 2**31 - 1]])
    b = np.concatenate([b, np.full(len(ties) + 5, 2**30)])
    assert np.array_equal(saturating_rounding_doubling_high_mul(a, b), (a * b + 2**30) >> 31)
