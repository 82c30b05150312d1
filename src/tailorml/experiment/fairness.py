""" "Does personalization decrease fairness?" (seed 001, Aim 3), measured for every method of an
experiment from its tidy results: per setting, the age-group gap (and the gap across each
categorical trait of the cohort file), the worst group and the
spread across individuals before (the reference method, the global model) and after, with
paired tests (`tailorml.evaluate.fairness`); and Spearman's rho between each continuous
personal trait and per-individual balanced accuracy, per setting.
"""

from __future__ import annotations

import pandas as pd

from tailorml.evaluate.fairness import personalization_fairness, trait_correlations
from tailorml.experiment.summary import per_individual

FAIRNESS_METRICS = (
    "acc_individual",
    "balanced_acc_individual",
    "hypo_sensitivity",
    "false_alerts_per_day",
)
TRAIT_METRIC = "balanced_acc_individual"


def experiment_fairness(
    results: pd.DataFrame,
    reference: str,
    seed: int = 0,
    categories: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (grouping, setting, metric): column `trait` is "group" (the age group)
    or a categorical trait of the cohort file (`categories`, indexed by individual id);
    empty when there is nothing with two groups."""
    groupings = {}
    if "group" in results:
        groupings["group"] = results.groupby("individual")["group"].first()
    for name in categories.columns if categories is not None else []:
        groupings.setdefault(name, categories[name])
    metrics = [m for m in FAIRNESS_METRICS if m in results]
    values = per_individual(results, metrics) if metrics else None
    tables = []
    for trait, groups in groupings.items():
        groups = groups.dropna()
        if groups.nunique() < 2 or values is None:
            continue
        table = personalization_fairness(values, groups, reference, metrics, seed)
        if len(table):
            tables.append(table.assign(trait=trait))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def experiment_trait_correlations(results: pd.DataFrame, traits: pd.DataFrame) -> pd.DataFrame:
    """Per setting: Spearman's rho of each continuous trait with per-individual balanced
    accuracy on D_I (`traits` indexed by individual id)."""
    metric = TRAIT_METRIC if TRAIT_METRIC in results else "acc_individual"
    if traits.empty or metric not in results:
        return pd.DataFrame()
    values = per_individual(results, [metric]).reset_index()
    frames = []
    for (method, setting), table in values.groupby(["method", "setting"], sort=False):
        table = table.rename(columns={"individual": "patient_id"})
        rows = trait_correlations(table, traits, metrics=[metric])
        if len(rows):
            frames.append(rows.assign(method=method, setting=setting))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def add_gap_columns(summary: pd.DataFrame, fairness: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Table I gets, per setting, the age-group gap of balanced accuracy on D_I and of hypo
    sensitivity (after personalization; the reference method's row: its own, "before")."""
    if summary.empty or fairness.empty:
        return summary
    if "trait" in fairness:
        fairness = fairness[fairness["trait"] == "group"]
    summary = summary.copy()
    for metric in ("balanced_acc_individual", "hypo_sensitivity"):
        mine = fairness[fairness["metric"] == metric]
        if mine.empty:
            continue
        gaps = dict(zip(mine["setting"], mine["gap_after"], strict=True))
        before = float(mine["gap_before"].iloc[0])
        summary[f"{metric}_group_gap"] = [
            before if method == reference else gaps.get(setting, float("nan"))
            for method, setting in zip(summary["method"], summary["setting"], strict=True)
        ]
    return summary


def cohort_categories(cohort) -> pd.DataFrame:
    """The categorical traits of a cohort's individuals (beyond the age group), indexed by
    id (empty if none)."""
    rows = {person.id: person.categories for person in cohort.individuals if person.categories}
    return pd.DataFrame.from_dict(rows, orient="index") if rows else pd.DataFrame()


def cohort_traits(cohort) -> pd.DataFrame:
    """The continuous traits of a cohort's individuals, indexed by id (empty if none)."""
    rows = {person.id: person.traits for person in cohort.individuals if person.traits}
    return pd.DataFrame.from_dict(rows, orient="index") if rows else pd.DataFrame()


def write_fairness(
    run_dir,
    results: pd.DataFrame,
    reference: str,
    traits: pd.DataFrame,
    seed: int = 0,
    categories: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """fairness.csv, fairness_traits.csv and rollout.csv of an experiment run (empty files
    when the results have no groups or traits)."""
    from pathlib import Path

    from tailorml.io import atomic_write_text

    fairness = experiment_fairness(results, reference, seed, categories)
    correlations = experiment_trait_correlations(results, traits)
    rollout = rollout_table(results, reference)
    atomic_write_text(Path(run_dir) / "rollout.csv", rollout.to_csv(index=False))
    atomic_write_text(Path(run_dir) / "fairness.csv", fairness.to_csv(index=False))
    atomic_write_text(Path(run_dir) / "fairness_traits.csv", correlations.to_csv(index=False))
    return fairness, correlations


def _group_gap(values: pd.Series, groups: pd.Series) -> float:
    means = values.astype(float).groupby(groups).mean().dropna()
    return float(means.max() - means.min()) if len(means) > 1 else float("nan")


def _worst_case(values: pd.Series) -> float:
    finite = values.astype(float).dropna()
    return float(finite.min()) if len(finite) else float("nan")


def rollout_table(results: pd.DataFrame, reference: str, tolerance: float = 0.0) -> pd.DataFrame:
    """Per setting: roll the method out to the cohort (a) to everybody and (b) through the
    population fairness check of `soft.rollout` (groups whose worst-case hypo sensitivity
    falls keep the reference model). Group gap and worst case of each, and which groups
    were held back: is the gated roll-out's gap no wider than before? Measured, not assumed."""
    from tailorml.soft.rollout import ROLLOUT_METRIC, check_rollout

    if ROLLOUT_METRIC not in results or "group" not in results:
        return pd.DataFrame()
    values = per_individual(results, [ROLLOUT_METRIC])[ROLLOUT_METRIC]
    if reference not in values.index.get_level_values("method"):
        return pd.DataFrame()
    groups = results.groupby("individual")["group"].first()
    before = values.xs(reference, level="method").droplevel("setting")
    rows = []
    for (method, setting), after in values.groupby(level=["method", "setting"], sort=False):
        if method == reference:
            continue
        after = after.droplevel(["method", "setting"])
        common = before.index.intersection(after.index)
        table = pd.DataFrame(
            {
                "group": groups.reindex(common),
                "sensitivity_before": before.loc[common],
                "sensitivity_after": after.loc[common],
            }
        )
        check = check_rollout(table, tolerance=tolerance)
        gated = check.deployed(table, "sensitivity_before", "sensitivity_after")
        rows.append(
            {
                "method": method,
                "setting": setting,
                "held_back": ", ".join(check.held_back) or "none",
                "gap_before": _group_gap(table["sensitivity_before"], table["group"]),
                "gap_full": _group_gap(table["sensitivity_after"], table["group"]),
                "gap_gated": _group_gap(gated, table["group"]),
                "worst_before": _worst_case(table["sensitivity_before"]),
                "worst_full": _worst_case(table["sensitivity_after"]),
                "worst_gated": _worst_case(gated),
                "mean_full": float(table["sensitivity_after"].mean()),
                "mean_gated": float(gated.mean()),
                "personalized_share": float((~table["group"].isin(check.held_back)).mean()),
            }
        )
    return pd.DataFrame(rows)
