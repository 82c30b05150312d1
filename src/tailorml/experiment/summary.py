"""Table I of "Personalization of Deep Learning" from the tidy results table.

Per method setting: the mean over seeds per individual first, then across individuals the
mean, rank (1 = best), sd, min and max of acc(D_I) and acc(D_G), and a p-value against the
reference method from a paired test across individuals.

The paired test and why it is Wilcoxon's: `tailorml.evaluate.significance`. Table I records
the pairs behind each p (`<metric>_pairs`) and the report warns instead of letting a large p
read as "no difference".
"""

from __future__ import annotations

import pandas as pd

from tailorml.evaluate.significance import paired_p_value, paired_pairs

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
