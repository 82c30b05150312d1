"""Does personalization cost robustness to sensor faults? (seed 001, Aim 1), from an
experiment run with `experiment.stress = true`.

Per setting and fault: the mean of each metric on the clean test period and under the fault,
the mean drop (fault - clean, per individual), and a paired Wilcoxon test of the setting's
drops against the reference method's drops (same individuals, same faulted readings): a
small p with a larger drop means the method lost robustness the global model had.
"""

from __future__ import annotations

import pandas as pd

from tailorml.experiment.summary import paired_p_value, per_individual

CLEAN_COLUMN = {
    "hypo_sensitivity": "hypo_sensitivity",
    "false_alerts_per_day": "false_alerts_per_day",
    "balanced_accuracy": "balanced_acc_individual",
}


def shift_columns(results: pd.DataFrame) -> list[str]:
    return [column for column in results.columns if "__" in column]


def robustness_table(results: pd.DataFrame, reference: str) -> pd.DataFrame:
    """One row per (setting, fault, metric); empty without stress columns."""
    columns = shift_columns(results)
    if not columns:
        return pd.DataFrame()
    clean = [c for c in CLEAN_COLUMN.values() if c in results]
    values = per_individual(results, [*clean, *columns])
    drops = pd.DataFrame(index=values.index)
    for column in columns:
        metric = column.split("__", 1)[1]
        if CLEAN_COLUMN.get(metric) in values:
            drops[column] = values[column] - values[CLEAN_COLUMN[metric]]
    methods = values.index.get_level_values("method")
    reference_drops = (
        drops.xs(reference, level="method").droplevel("setting") if reference in methods else None
    )
    rows = []
    for (method, setting), table in drops.groupby(level=["method", "setting"], sort=False):
        table = table.droplevel(["method", "setting"])
        mine = values.xs((method, setting), level=("method", "setting"))
        for column in drops.columns:
            shift, metric = column.split("__", 1)
            row = {
                "method": method,
                "setting": setting,
                "shift": shift,
                "metric": metric,
                "clean": float(mine[CLEAN_COLUMN[metric]].mean()),
                "shifted": float(mine[column].mean()),
                "drop": float(table[column].mean()),
            }
            if reference_drops is not None and method != reference:
                row["drop_vs_reference_p"] = paired_p_value(table[column], reference_drops[column])
            rows.append(row)
    return pd.DataFrame(rows)
