"""Insulin and carbohydrates *on board*: the derived input channels `iob` and `cob`.

A clinician does not reason with the bolus of the last five minutes but with how much
insulin is still acting and how many carbs are still being absorbed; a 2-hour input window
of raw doses cannot even see a bolus given 3 hours ago that still lowers glucose. So the
task may ask for `iob` (units) and `cob` (grams), computed per individual from the
cohort's `insulin` and `cho` columns before windowing:

- IOB uses the exponential insulin-action curve popularised by the open-source automated
  insulin delivery systems (Loop, oref): action duration 6 h, peak 75 min (rapid-acting
  analogues in adults). The remaining fraction of a dose t minutes after delivery is
  ``1 - S (1 - a) ((t² / (τ D (1 - a)) - t/τ - 1) e^(-t/τ) + 1)`` with
  ``τ = P (1 - P/D) / (1 - 2P/D)``, ``a = 2τ/D``, ``S = 1 / (1 - a + (1 + a) e^(-D/τ))``
  (D duration, P peak); it is 1 at t = 0 and 0 at t = D.
- COB assumes carbs absorb linearly over 3 h (a common default for a mixed meal).

Both include every recorded dose: in the synthetic cohort that is basal and bolus insulin;
in an import it is what the export recorded (Clarity and LibreView often hold boluses only,
so their IOB is bolus IOB). A missing amount (NaN) makes the channel missing for as long as
it would have acted, so windows touching it are dropped, never filled with zeros.

Written here because no maintained PyPI package computes these curves (the reference
implementations are in Swift and JavaScript); the formula is short and tested by hand.
"""

from __future__ import annotations

import numpy as np

INSULIN_ACTION_MINUTES = 360
INSULIN_PEAK_MINUTES = 75
CARB_ABSORPTION_MINUTES = 180
DERIVED_CHANNELS = {"iob": "insulin", "cob": "cho"}  # channel -> the column it comes from


def insulin_remaining(
    minutes: np.ndarray,
    duration: float = INSULIN_ACTION_MINUTES,
    peak: float = INSULIN_PEAK_MINUTES,
) -> np.ndarray:
    """Fraction of an insulin dose still to act `minutes` after delivery (exponential curve)."""
    t = np.clip(np.asarray(minutes, dtype=np.float64), 0.0, duration)
    tau = peak * (1 - peak / duration) / (1 - 2 * peak / duration)
    a = 2 * tau / duration
    s = 1 / (1 - a + (1 + a) * np.exp(-duration / tau))
    remaining = 1 - s * (1 - a) * (
        (t**2 / (tau * duration * (1 - a)) - t / tau - 1) * np.exp(-t / tau) + 1
    )
    return np.clip(remaining, 0.0, 1.0)


def carbs_remaining(minutes: np.ndarray, duration: float = CARB_ABSORPTION_MINUTES) -> np.ndarray:
    """Fraction of a meal's carbs not yet absorbed `minutes` after eating (linear)."""
    return np.clip(1 - np.asarray(minutes, dtype=np.float64) / duration, 0.0, 1.0)


def on_board(amounts: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """Amount still on board at each reading: the doses recorded at that reading and before,
    each weighted by the fraction `remaining[k]` left k readings after it."""
    amounts = np.asarray(amounts, dtype=np.float64)
    return np.convolve(amounts, remaining)[: len(amounts)]


def derived_channel(channel: str, amounts: np.ndarray, sample_minutes: int) -> np.ndarray:
    """`iob` or `cob` of one individual's regular series of `insulin` or `cho` amounts."""
    if channel == "iob":
        lags = np.arange(0, INSULIN_ACTION_MINUTES, sample_minutes)
        return on_board(amounts, insulin_remaining(lags))
    if channel == "cob":
        lags = np.arange(0, CARB_ABSORPTION_MINUTES, sample_minutes)
        return on_board(amounts, carbs_remaining(lags))
    raise ValueError(f"unknown derived channel {channel!r}; known: {', '.join(DERIVED_CHANNELS)}")
