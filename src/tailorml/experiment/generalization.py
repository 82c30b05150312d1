"""Does personalization cost robustness to sensor faults and life changes? (seed 001, Aim 1),
from an experiment run with `experiment.stress = true` and/or `experiment.life_days > 0`.

Per setting and shift: the mean of each metric on the reference (the clean test period for a
sensor fault, the same new days unchanged for a life change) and under the shift, the mean
drop (shift - reference, per individual), and a paired Wilcoxon test of the setting's
drops against the reference method's drops (same individuals, same faulted readings): a
small p with a larger drop means the method lost robustness the global model had.
"""

from __future__ import annotations

import pandas as pd

from tailorml.evaluate.significance import paired_p_value
from tailorml.experiment.summary import per_individual

UNCHANGED = "life_unchanged"  # shift.life.UNCHANGED, the reference of every life change

CLEAN_COLUMN = {
    "hypo_sensitivity": "hypo_sensitivity",
    "false_alerts_per_day": "false_alerts_per_day",
    "balanced_accuracy": "balanced_acc_individual",
}


def _reference_column(shift: str, metric: str) -> str | None:
    """What a shift is compared with: life changes with the same new days unchanged, sensor
    faults with the clean test period."""
    if shift.startswith("life_"):
        return f"{UNCHANGED}__{metric}"
    return CLEAN_COLUMN.get(metric)


def shift_columns(results: pd.DataFrame) -> list[str]:
    return [column for column in results.columns if "__" in column]


def robustness_table(results: pd.DataFrame, reference: str) -> pd.DataFrame:
    """One row per (setting, shift, metric); empty without shift columns. `reference` is
    the method whose drops each setting's drops are tested against."""
    columns = shift_columns(results)
    if not columns:
        return pd.DataFrame()
    clean = [c for c in CLEAN_COLUMN.values() if c in results]
    values = per_individual(results, [*clean, *columns])
    drops = pd.DataFrame(index=values.index)
    references: dict[str, str] = {}
    for column in columns:
        shift, metric = column.split("__", 1)
        baseline = _reference_column(shift, metric)
        if shift != UNCHANGED and baseline in values:
            drops[column] = values[column] - values[baseline]
            references[column] = baseline
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
            paired = mine.loc[table[column].notna()]  # the individuals with both values
            row = {
                "method": method,
                "setting": setting,
                "shift": shift,
                "metric": metric,
                "reference": references[column].split("__", 1)[0]
                if "__" in references[column]
                else "clean",
                "clean": float(paired[references[column]].mean()),
                "shifted": float(paired[column].mean()),
                "drop": float(table[column].mean()),
            }
            if reference_drops is not None and method != reference:
                row["drop_vs_reference_p"] = paired_p_value(table[column], reference_drops[column])
            rows.append(row)
    return pd.DataFrame(rows)
