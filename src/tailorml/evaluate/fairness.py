"""Group-wise and personal-trait-wise fairness of per-individual alert metrics.

The unit is the individual: a group's value is the mean over its members (fairlearn's
MetricFrame disaggregates the per-individual table by group), so a group of many short
records does not outweigh a group of few long ones, and event metrics (sensitivity, false
alerts per day), which only exist per individual, can be disaggregated too. Reported:
per-group values, the gap (max - min), the ratio (min / max), the worst group (lowest for
"higher is better" metrics, highest for false alerts) and a percentile bootstrap interval
of the gap (individuals resampled within their group, `scipy.stats.bootstrap`).

Continuous traits (body weight, insulin sensitivity, total daily insulin, ...) are judged by
Spearman's rank correlation with the per-individual metric (`scipy.stats.spearmanr`): a
significant correlation means the model serves people differently along that trait.

"Does personalization decrease fairness?" (`personalization_fairness`): for each method,
the group gap and the spread across individuals of the same individuals before (the
reference method) and after, with paired tests: a bootstrap interval of the change of the gap
(individuals resampled within groups, the same draw for both methods) and a Wilcoxon
signed-rank test of each individual's distance to the median (a paired test of spread).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from scipy.stats import bootstrap, spearmanr, wilcoxon

HIGHER_IS_BETTER = {
    "hypo_sensitivity": True,
    "hyper_sensitivity": True,
    "balanced_accuracy": True,
    "balanced_acc_individual": True,
    "acc_individual": True,
    "false_alerts_per_day": False,
}
FAIRNESS_METRICS = ("hypo_sensitivity", "false_alerts_per_day", "balanced_accuracy")
CONTINUOUS_TRAITS = (
    "body_weight_kg",
    "insulin_sensitivity_vmx",
    "total_daily_insulin_u",
    "age_years",
)


def _mean(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    values = np.asarray(y_true, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def group_frame(values: pd.Series, groups: pd.Series) -> MetricFrame:
    """MetricFrame of the per-individual `values` disaggregated by `groups` (group mean)."""
    return MetricFrame(
        metrics={"mean": _mean},
        y_true=values.to_numpy(float),
        y_pred=np.zeros(len(values)),
        sensitive_features=groups.astype(str).to_numpy(),
    )


def _gap(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """max - min of the group means (vectorized over leading axes, as scipy asks)."""
    means = np.stack([np.mean(sample, axis=axis) for sample in samples])
    return means.max(axis=0) - means.min(axis=0)


def gap_interval(
    values: pd.Series, groups: pd.Series, seed: int = 0, resamples: int = 999
) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the group gap; NaN when a group has fewer than
    two individuals with a finite value."""
    samples = [
        values[(groups == group).to_numpy()].to_numpy(float) for group in sorted(groups.unique())
    ]
    samples = [s[np.isfinite(s)] for s in samples]
    if len(samples) < 2 or any(len(s) < 2 for s in samples):
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bootstrap(
            samples,
            _gap,
            n_resamples=resamples,
            method="percentile",
            vectorized=True,
            random_state=np.random.default_rng(seed),
        )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def group_fairness(
    per_individual: pd.DataFrame,
    group_column: str = "group",
    metrics: Sequence[str] = FAIRNESS_METRICS,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per metric: each group's mean, gap (max - min) with bootstrap CI, ratio
    (min / max) and the worst group."""
    rows = []
    for metric in metrics:
        if metric not in per_individual:
            continue
        values = per_individual[metric].astype(float)
        known = per_individual[np.isfinite(values) & per_individual[group_column].notna()]
        if known[group_column].nunique() < 2:
            continue
        frame = group_frame(known[metric], known[group_column])
        by_group = frame.by_group["mean"]
        higher = HIGHER_IS_BETTER.get(metric, True)
        low, high = gap_interval(known[metric], known[group_column], seed)
        row = {
            "trait": group_column,
            "metric": metric,
            "gap": float(frame.difference(method="between_groups")["mean"]),
            "gap_low": low,
            "gap_high": high,
            "ratio": float(frame.ratio(method="between_groups")["mean"]),
            "worst_group": str(by_group.idxmin() if higher else by_group.idxmax()),
            "worst_value": float(by_group.min() if higher else by_group.max()),
        }
        row |= {f"group_{name}": float(value) for name, value in by_group.items()}
        rows.append(row)
    return pd.DataFrame(rows)


def trait_correlations(
    per_individual: pd.DataFrame,
    traits: pd.DataFrame,
    metrics: Sequence[str] = FAIRNESS_METRICS,
    trait_names: Sequence[str] = CONTINUOUS_TRAITS,
) -> pd.DataFrame:
    """Spearman's rho (and p) between each continuous trait and each per-individual metric.
    `traits` is indexed by individual id."""
    joined = per_individual.set_index("patient_id").join(traits, how="inner")
    rows = []
    for trait in trait_names:
        if trait not in joined:
            continue
        for metric in metrics:
            if metric not in joined:
                continue
            pair = joined[[trait, metric]].astype(float).dropna()
            pair = pair[np.isfinite(pair).all(axis=1)]
            if len(pair) < 3 or pair[metric].nunique() < 2 or pair[trait].nunique() < 2:
                continue
            result = spearmanr(pair[trait], pair[metric])
            rows.append(
                {
                    "trait": trait,
                    "metric": metric,
                    "rho": float(result.statistic),
                    "p": float(result.pvalue),
                    "individuals": len(pair),
                }
            )
    return pd.DataFrame(rows)


def spread_p_value(after: pd.Series, before: pd.Series) -> float:
    """Paired test of spread: Wilcoxon signed-rank test of each individual's absolute
    distance to the median, after vs before (a paired Brown-Forsythe-style test)."""
    common = after.index.intersection(before.index)
    a, b = after.loc[common].astype(float), before.loc[common].astype(float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    da, db = (a - a.median()).abs(), (b - b.median()).abs()
    if len(da) == 0:
        return float("nan")
    if np.allclose(da - db, 0.0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(wilcoxon(da, db).pvalue)


def gap_change_interval(
    after: pd.Series, before: pd.Series, groups: pd.Series, seed: int = 0, resamples: int = 999
) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of gap(after) - gap(before): individuals resampled
    within their group, the same individuals for both (paired)."""
    frame = pd.DataFrame({"after": after, "before": before, "group": groups}).dropna()
    frame = frame[np.isfinite(frame[["after", "before"]]).all(axis=1)]
    members = [frame[frame["group"] == g] for g in sorted(frame["group"].unique())]
    if len(members) < 2 or any(len(m) < 2 for m in members):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(m), (resamples, len(m))) for m in members]
    gap_after = _gap(*(m["after"].to_numpy(float)[d] for m, d in zip(members, draws, strict=True)))
    gap_before = _gap(
        *(m["before"].to_numpy(float)[d] for m, d in zip(members, draws, strict=True))
    )
    changes = gap_after - gap_before
    return float(np.percentile(changes, 2.5)), float(np.percentile(changes, 97.5))


def personalization_fairness(
    values: pd.DataFrame,
    groups: pd.Series,
    reference: str,
    metrics: Sequence[str],
    seed: int = 0,
) -> pd.DataFrame:
    """Per (setting, metric): the group gap, worst group value and sd across individuals of
    the reference method ("before") and of the setting ("after"), the change of the gap with
    its paired bootstrap interval, and the paired spread test. `values` is indexed by
    (method, setting, individual) (seed means); `groups` by individual."""
    if reference not in values.index.get_level_values("method"):
        return pd.DataFrame()
    before_all = values.xs(reference, level="method").droplevel("setting")
    rows = []
    for (method, setting), table in values.groupby(level=["method", "setting"], sort=False):
        if method == reference:
            continue
        after_all = table.droplevel(["method", "setting"])
        for metric in metrics:
            if metric not in after_all:
                continue
            before, after = before_all[metric], after_all[metric]
            # individuals without a group (a trait the source does not state) are left out
            common = after.index.intersection(before.index).intersection(groups.dropna().index)
            before, after = before.loc[common].astype(float), after.loc[common].astype(float)
            group = groups.reindex(common)
            higher = HIGHER_IS_BETTER.get(metric, True)
            row = {"method": method, "setting": setting, "metric": metric}
            for name, series in (("before", before), ("after", after)):
                known = np.isfinite(series)
                frame = group_frame(series[known], group[known])
                by_group = frame.by_group["mean"]
                row[f"gap_{name}"] = float(frame.difference(method="between_groups")["mean"])
                row[f"worst_group_{name}"] = str(by_group.idxmin() if higher else by_group.idxmax())
                row[f"worst_value_{name}"] = float(by_group.min() if higher else by_group.max())
                row[f"sd_{name}"] = float(series[known].std(ddof=1))
            row["gap_change"] = row["gap_after"] - row["gap_before"]
            row["gap_change_low"], row["gap_change_high"] = gap_change_interval(
                after, before, group, seed
            )
            row["spread_p"] = spread_p_value(after, before)
            rows.append(row)
    return pd.DataFrame(rows)
