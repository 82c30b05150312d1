"""Table I of "Personalization of Deep Learning" from the tidy results table.

Per method setting: the mean over seeds per individual first, then across individuals the
mean, rank (1 = best), sd, min and max of acc(D_I) and acc(D_G), and a p-value against the
reference method from a paired test across individuals.

Why Wilcoxon signed-rank: the per-individual accuracies of two methods are paired (same
individual) and their differences are neither normal nor free of outliers (a few hard
individuals dominate), so a rank test on the paired differences is the standard choice;
two-sided, zero differences dropped (Wilcoxon's own treatment); identical methods get p = 1.

With few individuals the test cannot say anything: the exact two-sided p of n non-zero
paired differences is never below 2 / 2**n, so with fewer than 6 it cannot reach 0.05
whatever the methods do. Table I records the pairs behind each p (`<metric>_pairs`) and the
report warns instead of letting a large p read as "no difference".
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

HEADLINE = ("acc_individual", "acc_general")
GLUCOSE_EXTRAS = (
    "balanced_acc_individual",
    "balanced_acc_general",
    "hypo_sensitivity",
    "false_alerts_per_day",
    "median_lead_minutes",
)

# with robust.evaluate: robustness at robust.eps and model size (sd/min also for verified)
ROBUST_EXTRAS = (
    "clean_acc_individual",
    "pgd_acc_individual",
    "verified_acc_individual",
    "parameters",
    "nonzero_parameters",
    "dense_bytes",
    "sparse_bytes",
)
SPREAD_METRICS = (*("acc_individual", "acc_general"), "verified_acc_individual")


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


def per_individual(results: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Seed-averaged metrics, one row per (setting, individual)."""
    ok = results[results["status"] == "ok"]
    return ok.groupby(["method", "setting", "individual"], sort=False)[metrics].mean()


def table_one(
    results: pd.DataFrame, reference: str, order: list[str] | None = None
) -> pd.DataFrame:
    """One row per setting (in `order` of setting labels, if given): Table-I statistics and
    p-values against method `reference`."""
    extras = [m for m in (*GLUCOSE_EXTRAS, *ROBUST_EXTRAS) if m in results.columns]
    metrics = [*HEADLINE, *extras]
    values = per_individual(results, metrics)
    if values.empty:
        return pd.DataFrame()
    reference_rows = (
        values.xs(reference, level="method")
        if reference in values.index.get_level_values("method")
        else None
    )
    rows = []
    for (method, setting), table in values.groupby(level=["method", "setting"], sort=False):
        table = table.droplevel(["method", "setting"])
        row = {"method": method, "setting": setting, "individuals": len(table)}
        for metric in metrics:
            column = table[metric]
            row[f"{metric}_mean"] = column.mean()
            if metric in SPREAD_METRICS:
                row[f"{metric}_sd"] = column.std(ddof=1)
                row[f"{metric}_min"] = column.min()
                row[f"{metric}_max"] = column.max()
                if reference_rows is not None:
                    reference_values = reference_rows.droplevel("setting")[metric]
                    mine = method != reference
                    row[f"{metric}_p"] = (
                        paired_p_value(column, reference_values) if mine else float("nan")
                    )
                    row[f"{metric}_pairs"] = (
                        paired_pairs(column, reference_values) if mine else float("nan")
                    )
        rows.append(row)
    summary = pd.DataFrame(rows)
    if order:
        position = {label: index for index, label in enumerate(order)}
        summary = summary.sort_values("setting", key=lambda c: c.map(position), kind="stable")
        summary = summary.reset_index(drop=True)
    for metric in HEADLINE:
        summary[f"{metric}_rank"] = (
            summary[f"{metric}_mean"].rank(ascending=False, method="min").astype(int)
        )
    return summary
