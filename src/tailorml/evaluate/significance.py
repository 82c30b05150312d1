"""The paired test across individuals, shared by Table I (`experiment.summary`), the
robustness drop per method (`experiment.generalization`) and the shift study
(`shift.summary`).

Why Wilcoxon signed-rank: the per-individual accuracies of two methods are paired (same
individual) and their differences are neither normal nor free of outliers (a few hard
individuals dominate), so a rank test on the paired differences is the standard choice;
two-sided, zero differences dropped (Wilcoxon's own treatment); identical methods get p = 1.

With few individuals the test cannot say anything: the exact two-sided p of n non-zero
paired differences is never below 2 / 2**n, so with fewer than 6 it cannot reach 0.05
whatever the methods do; the callers record the pairs behind each p and warn instead of
letting a large p read as "no difference".
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

SIGNIFICANCE = 0.05


def smallest_p_value(pairs: int) -> float:
    """The smallest two-sided p an exact Wilcoxon signed-rank test of `pairs` non-zero
    differences can give (all differences of one sign): 2 / 2**pairs."""
    return min(1.0, 2.0 / 2**pairs) if pairs > 0 else float("nan")


def min_pairs_for_test(alpha: float = SIGNIFICANCE) -> int:
    """Fewest non-zero paired differences with which the test can reach p < `alpha` (6)."""
    pairs = 1
    while smallest_p_value(pairs) >= alpha:
        pairs += 1
    return pairs


def _paired(values: pd.Series, reference: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    common = values.index.intersection(reference.index)
    left, right = values.loc[common].to_numpy(), reference.loc[common].to_numpy()
    keep = ~(np.isnan(left) | np.isnan(right))
    return left[keep], right[keep]


def paired_pairs(values: pd.Series, reference: pd.Series) -> int:
    """How many individuals the test really uses: paired, both known, difference not 0."""
    left, right = _paired(values, reference)
    return int((~np.isclose(left - right, 0.0)).sum())


def paired_p_value(values: pd.Series, reference: pd.Series) -> float:
    """Two-sided Wilcoxon signed-rank p over the pairs; NaN (shown as –) with fewer than two
    pairs, where a test cannot say anything (one person's p of 1.0 would read as "no
    difference")."""
    left, right = _paired(values, reference)
    differences = left - right
    if len(differences) < 2:
        return float("nan")
    if np.allclose(differences, 0.0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(wilcoxon(left, right).pvalue)
