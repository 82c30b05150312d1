"""A cohort made ready for a model: its windows and labels, and per individual which
windows (and which readings) belong to which part of the period.

The train job, experiments, soft personalization and certification all start from here; a
model applied to a whole file (`tailorml evaluate`) gets one part, "all", per individual.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from tailorml.config import Config, SplitConfig, TaskConfig
from tailorml.data.cohort import Cohort, load_cohort
from tailorml.data.glucose import WindowSet, make_windows
from tailorml.data.splits import Splits, calibration_split, split_windows, whole_period


@dataclass
class Prepared:
    cohort: Cohort
    windows: WindowSet
    splits: Splits

    def trace(self, individual_id: str, part: str) -> pd.DataFrame:
        """The readings of one individual's part (for its events)."""
        start, end = self.splits.boundaries[individual_id][part]
        return self.cohort.of(individual_id).iloc[start:end]


def prepare(config: Config) -> Prepared:
    """The configured cohort, windowed for the configured task, split chronologically."""
    cohort = load_cohort(
        config.cohort.path or None,
        individuals=config.cohort.individuals or None,
        max_days=config.cohort.max_days,
    )
    return prepare_split(cohort, config.task, config.split)


def prepare_split(cohort: Cohort, task: TaskConfig, split: SplitConfig) -> Prepared:
    """`cohort` windowed for `task`, each individual split chronologically by `split`."""
    windows = make_windows(cohort, task)
    return Prepared(cohort, windows, split_windows(cohort, windows, split))


def prepare_whole(cohort: Cohort, task: TaskConfig) -> Prepared:
    """Every window of `cohort` for `task`, in one part "all" per individual (no split)."""
    windows = make_windows(cohort, task)
    return Prepared(cohort, windows, whole_period(cohort, windows))


def prepare_calibration(cohort: Cohort, task: TaskConfig, days: float) -> Prepared:
    """Every window of `cohort` for `task`, each individual's first `days` as its
    "calibration" part and the rest, after a gap, as its "evaluation" part."""
    windows = make_windows(cohort, task)
    return Prepared(cohort, windows, calibration_split(cohort, windows, days))
