"""Figures over people: a mean with its bootstrap interval, and the worst decile.

Alert figures are means over individuals (each person's own sensitivity, false alerts per
day), so their uncertainty is over people: resampling people with replacement says how much
the mean would move with another 20 people like these. The worst decile says what the model
does for the people it serves worst, which a mean hides.
"""

from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95


def mean_interval(
    values, samples: int = 2000, seed: int = 0, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the finite values and the percentile bootstrap
    interval over them; NaN without values, the mean itself with one."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(finite.mean())
    if len(finite) == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = finite[rng.integers(0, len(finite), size=(samples, len(finite)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return mean, float(low), float(high)


def worst_decile(values, higher_is_worse: bool = False) -> float:
    """Mean of the worst tenth of people (at least one person) by a figure; NaN without
    finite values."""
    finite = np.asarray(values, dtype=float)
    finite = np.sort(finite[np.isfinite(finite)])
    if len(finite) == 0:
        return float("nan")
    count = max(1, math.ceil(len(finite) / 10))
    worst = finite[-count:] if higher_is_worse else finite[:count]
    return float(worst.mean())
