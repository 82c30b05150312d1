"""Robustness drop: each individual's metric under a shift minus the same individual's metric
under its reference (unshifted test data for sensor faults, the unchanged new period for life
changes), then summarized across individuals with a paired Wilcoxon test.

A drop is "shifted - reference", so for sensitivity a negative drop is worse and for false
alerts a positive one is. Individuals whose metric is undefined on either side (e.g. no hypo
event) are left out of that metric's pairs, never counted as 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tailorml.evaluate.significance import paired_p_value

HEADLINE = (
    "hypo_sensitivity",
    "false_alerts_per_day",
    "balanced_accuracy",
    "hyper_sensitivity",
)
HIGHER_IS_BETTER = {
    "hypo_sensitivity": True,
    "false_alerts_per_day": False,
    "balanced_accuracy": True,
    "hyper_sensitivity": True,
}


def paired_drops(
    per_individual: pd.DataFrame, references: dict[str, str], metrics=HEADLINE
) -> pd.DataFrame:
    """One row per (model, shift, patient): reference value, shifted value and drop of each
    metric. `references` maps each shift to the shift it is compared with."""
    rows = []
    frame = per_individual.set_index(["model", "shift", "patient_id"])
    for (model, shift), group in per_individual.groupby(["model", "shift"], sort=False):
        reference = references.get(shift)
        if reference is None or reference == shift:
            continue
        for patient in group["patient_id"]:
            key = (model, reference, patient)
            if key not in frame.index:
                continue
            row = {
                "model": model,
                "shift": shift,
                "reference": reference,
                "patient_id": patient,
                "group": frame.loc[(model, shift, patient), "group"],
            }
            for metric in metrics:
                if metric not in frame:
                    continue
                before = float(frame.loc[key, metric])
                after = float(frame.loc[(model, shift, patient), metric])
                row[f"{metric}_reference"] = before
                row[f"{metric}_shifted"] = after
                row[f"{metric}_drop"] = after - before
            rows.append(row)
    return pd.DataFrame(rows)


def summarize_drops(drops: pd.DataFrame, metrics=HEADLINE) -> pd.DataFrame:
    """Per (model, shift, metric): mean reference and shifted values, mean and sd of the
    drop, the worst individual's drop and who, how many individuals got worse, the paired
    Wilcoxon p-value. Non-finite values never enter a mean."""
    rows = []
    for (model, shift), group in drops.groupby(["model", "shift"], sort=False):
        for metric in metrics:
            column = f"{metric}_drop"
            if column not in group:
                continue
            known = group[np.isfinite(group[column].astype(float))]
            if known.empty:
                continue
            drop = known[column].astype(float)
            sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
            worst = known.loc[(sign * drop).idxmin()]
            reference = known.set_index("patient_id")[f"{metric}_reference"].astype(float)
            shifted = known.set_index("patient_id")[f"{metric}_shifted"].astype(float)
            rows.append(
                {
                    "model": model,
                    "shift": shift,
                    "metric": metric,
                    "reference": float(reference.mean()),
                    "shifted": float(shifted.mean()),
                    "drop_mean": float(drop.mean()),
                    "drop_sd": float(drop.std(ddof=1)) if len(drop) > 1 else float("nan"),
                    "worst_drop": float(worst[column]),
                    "worst_individual": worst["patient_id"] if sign * worst[column] < 0 else "",
                    "individuals": len(known),
                    "worse": int((sign * drop < -1e-12).sum()),
                    "p": paired_p_value(shifted, reference),
                }
            )
    return pd.DataFrame(rows)
