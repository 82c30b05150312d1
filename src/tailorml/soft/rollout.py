"""Population-level fairness check of a personalization roll-out (seed 001, Aim 3).

The per-individual gates (`soft.gates`) protect each person; they cannot see that a
roll-out as a whole leaves one group worse off. Before personalized models go to a cohort,
this check compares, per group, the *worst-case* alert sensitivity (the lowest of the
group's individuals) with the predefined models and with the proposed ones. A group whose
worst case falls by more than `tolerance` is held back: its members keep the predefined
model, the others get theirs. Individuals without a measurable sensitivity (no event) do not
count in a group's worst case. The report says, per group, what was checked and decided.

The same check runs in two places: on an experiment's results (`experiment.fairness`,
every method rolled out to the cohort) and on a registry's pending proposals (`tailorml
review rollout`), where it can approve the groups that pass and hold the others back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tailorml.registry.models import Registry

ROLLOUT_METRIC = "hypo_sensitivity"
PREDEFINED = "predefined"  # the candidate of every session that reuses the predefined model


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


def pending_rollout(registry: Registry, groups: Mapping[str, str]) -> pd.DataFrame:
    """The registry's pending proposals as a roll-out table: one row per individual with a
    candidate awaiting review, its `group` (from `groups`; "unknown" when the cohort does not
    name it), the held-out hypo sensitivity of the predefined model in the same session
    (`sensitivity_before`) and of the proposal (`sensitivity_after`), and the candidate id.
    A value the session could not measure (no held-out event) is NaN and does not count."""
    rows = []
    for candidate in registry.candidates(None, pending_only=True):
        session = registry.session(candidate.session_id)
        base = [c for c in session.candidates if c.name == PREDEFINED]
        rows.append(
            {
                "individual": candidate.individual,
                "group": groups.get(candidate.individual, "unknown"),
                "candidate": candidate.id,
                "name": candidate.name,
                "sensitivity_before": _metric(base[0].metrics if base else {}),
                "sensitivity_after": _metric(candidate.metrics),
            }
        )
    columns = ["individual", "group", "candidate", "name", "sensitivity_before"]
    return pd.DataFrame(rows, columns=[*columns, "sensitivity_after"])


def _metric(metrics: Mapping) -> float:
    value = metrics.get(ROLLOUT_METRIC)
    return float(value) if isinstance(value, int | float) and np.isfinite(value) else np.nan


def apply_rollout(
    registry: Registry, table: pd.DataFrame, check: RolloutCheck, reviewer: str, comment: str
) -> tuple[list[int], list[int]]:
    """Approve the pending proposals of every group the check did not hold back; record the
    held-back ones in the audit log (they stay pending: a reviewer may still decide each by
    hand). Returns (approved, held back) candidate ids."""
    approved, held = [], []
    for row in table.itertuples(index=False):
        if row.group in check.held_back:
            registry.note(
                reviewer,
                "rollout_held_back",
                row.individual,
                {"candidate": int(row.candidate), "group": row.group, "comment": comment},
            )
            held.append(int(row.candidate))
            continue
        why = f"population roll-out check: group {row.group} passed"
        registry.decide(
            int(row.candidate), "approve", reviewer, "expert", f"{why}. {comment}".strip()
        )
        approved.append(int(row.candidate))
    return approved, held
