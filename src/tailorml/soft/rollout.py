"""Population-level fairness check of a personalization roll-out (seed 001, Aim 3).

The per-individual gates (`soft.gates`) protect each person; they cannot see that a
roll-out as a whole leaves one group worse off. Before personalized models go to a cohort,
this check compares, per group, the *worst-case* alert sensitivity (the lowest of the
group's individuals) with the predefined models and with the proposed ones. A group whose
worst case falls by more than `tolerance` is held back: its members keep the predefined
model, the others get theirs. Individuals without a measurable sensitivity (no event) do not
count in a group's worst case. The report says, per group, what was checked and decided.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class RolloutCheck:
    groups: pd.DataFrame  # one row per group: worst before/after, fell, held_back
    held_back: list[str]  # groups that keep the predefined model

    def deployed(self, table: pd.DataFrame, before: str, after: str) -> pd.Series:
        """Each individual's value once the roll-out is applied: `after` except in
        held-back groups (`before`)."""
        keep = table["group"].isin(self.held_back)
        return table[before].where(keep, table[after])


def _worst(values: pd.Series) -> float:
    finite = values[np.isfinite(values.astype(float))]
    return float(finite.min()) if len(finite) else float("nan")


def check_rollout(
    table: pd.DataFrame,
    before: str = "sensitivity_before",
    after: str = "sensitivity_after",
    tolerance: float = 0.0,
) -> RolloutCheck:
    """`table`: one row per individual with `group`, `before` (predefined) and `after`
    (proposed) sensitivity. A group is held back when its worst case after is below its
    worst case before minus `tolerance`."""
    if tolerance < 0 or not np.isfinite(tolerance):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    rows = []
    for group, members in table.groupby("group", sort=True):
        worst_before, worst_after = _worst(members[before]), _worst(members[after])
        fell = bool(
            np.isfinite(worst_before)
            and np.isfinite(worst_after)
            and worst_after < worst_before - tolerance
        )
        rows.append(
            {
                "group": str(group),
                "individuals": len(members),
                "worst_before": worst_before,
                "worst_after": worst_after,
                "mean_before": float(members[before].astype(float).mean()),
                "mean_after": float(members[after].astype(float).mean()),
                "worst_case_fell": fell,
                "held_back": fell,
            }
        )
    groups = pd.DataFrame(rows)
    held = groups.loc[groups["held_back"], "group"].tolist() if len(groups) else []
    return RolloutCheck(groups, held)
