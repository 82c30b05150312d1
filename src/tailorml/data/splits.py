"""Chronological per-individual train/validation/test splits without leakage.

Each individual's timeline is cut into train, gap, validation, gap, test. A window belongs
to a part only if its whole span (input and horizon) lies inside that part, and each gap is
at least one window plus horizon long, so no reading, and no label, is shared across parts.

D_I of an individual is its own training part; D_G for that individual is the training
data of all the other individuals (the setting of "Personalization of Deep Learning").

An individual whose part is too short for one complete window simply has no windows there
(reported as skipped by the evaluation); a part (train, or val/test when its fraction is not
0) with no window for ANY individual is a ConfigError before any training starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tailorml.config import SplitConfig
from tailorml.data.cohort import Cohort
from tailorml.data.glucose import WindowSet
from tailorml.errors import ConfigError

PARTS = ("train", "val", "test")


@dataclass
class Splits:
    """Window indices (into a WindowSet) per individual and part, plus the part boundaries."""

    parts: dict[str, dict[str, np.ndarray]]
    boundaries: dict[str, dict[str, tuple[int, int]]]  # grid rows [start, end) per part
    gap_rows: int

    def of(self, individual_id: str, part: str) -> np.ndarray:
        return self.parts[individual_id][part]

    def part_names(self) -> list[str]:
        """The parts every individual is split into, in time order."""
        return list(next(iter(self.parts.values()), {}))

    def pooled(self, part: str, exclude: str | None = None) -> np.ndarray:
        """The `part` windows of every individual except `exclude` (D_G when part='train')."""
        chosen = [
            indices[part]
            for individual_id, indices in self.parts.items()
            if individual_id != exclude
        ]
        return np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)

    def general(self, individual_id: str) -> np.ndarray:
        """D_G for `individual_id`: the training windows of all other individuals."""
        return self.pooled("train", exclude=individual_id)


def gap_rows(config: SplitConfig, windows: WindowSet) -> int:
    minimum = windows.length + windows.horizon
    if config.gap_minutes is None:
        return minimum
    rows = math.ceil(config.gap_minutes / windows.sample_minutes)
    if rows < minimum:
        raise ConfigError(
            f"split.gap_minutes = {config.gap_minutes} is shorter than window + horizon "
            f"({minimum * windows.sample_minutes} min): windows would straddle parts and leak; "
            "raise it or leave it unset"
        )
    return rows


def part_boundaries(n_rows: int, config: SplitConfig, gap: int) -> dict[str, tuple[int, int]]:
    """Row ranges [start, end) of train/val/test for a timeline of `n_rows` readings."""
    names = [name for name in PARTS if getattr(config, name) > 0]
    usable = max(n_rows - gap * (len(names) - 1), 0)
    bounds = dict.fromkeys(PARTS, (0, 0))
    start = 0
    for position, name in enumerate(names):
        last = position == len(names) - 1
        end = n_rows if last else min(n_rows, start + round(usable * getattr(config, name)))
        begin = min(start, n_rows)
        bounds[name] = (begin, max(begin, end))
        start = end + gap
    return bounds


EMPTY_PART = (
    "split.{part} = {fraction:g} leaves no individual a complete {part} window (the longest "
    "{part} part has {rows} readings; a window needs {span} = window + horizon): raise "
    "split.{part} to at least {needed:.2f} or use longer recordings"
)


def split_windows(cohort: Cohort, windows: WindowSet, config: SplitConfig) -> Splits:
    gap = gap_rows(config, windows)
    span = windows.length + windows.horizon
    splits = assign_windows(
        cohort, windows, lambda n_rows: part_boundaries(n_rows, config, gap), gap
    )
    parts, boundaries = splits.parts, splits.boundaries
    for part in PARTS:
        fraction = getattr(config, part)
        if fraction == 0 or any(len(indices[part]) for indices in parts.values()):
            continue
        longest = max(
            (end - start for b in boundaries.values() for start, end in [b[part]]), default=0
        )
        n_rows = max((len(cohort.of(i)) for i in windows.ids), default=0)
        active = sum(getattr(config, name) > 0 for name in PARTS)
        usable = max(n_rows - gap * (active - 1), 1)
        raise ConfigError(
            EMPTY_PART.format(
                part=part,
                fraction=fraction,
                rows=longest,
                span=span,
                needed=min(math.ceil(100 * span / usable) / 100, 1.0),
            )
        )
    return splits


def assign_windows(
    cohort: Cohort,
    windows: WindowSet,
    bounds_of: Callable[[int], dict[str, tuple[int, int]]],
    gap: int,
) -> Splits:
    """Each individual's parts from `bounds_of(number of readings)` (grid rows [start, end)
    per part, `gap` rows apart): a window belongs to a part only if its whole span (input
    and horizon) lies inside it."""
    span = windows.length + windows.horizon
    parts: dict[str, dict[str, np.ndarray]] = {}
    boundaries: dict[str, dict[str, tuple[int, int]]] = {}
    for individual_id in windows.ids:
        bounds = bounds_of(len(cohort.of(individual_id)))
        mine = windows.indices_of(individual_id)
        first = windows.row[mine]
        parts[individual_id] = {
            name: mine[(first >= start) & (first + span <= end)]
            for name, (start, end) in bounds.items()
        }
        boundaries[individual_id] = bounds
    return Splits(parts, boundaries, gap)


def whole_period(cohort: Cohort, windows: WindowSet) -> Splits:
    """One part, "all", per individual: every window and reading (a model applied to data it
    was not trained on needs no split)."""
    parts = {i: {"all": windows.indices_of(i)} for i in windows.ids}
    boundaries = {i: {"all": (0, len(cohort.of(i)))} for i in windows.ids}
    return Splits(parts, boundaries, gap_rows=0)


CALIBRATION_PARTS = ("calibration", "evaluation")


def calibration_split(cohort: Cohort, windows: WindowSet, days: float) -> Splits:
    """Per individual: the first `days` of readings ("calibration": what a new user's first
    days give to set their own alert threshold), a gap of window + horizon, then the rest
    ("evaluation"). A window belongs to a part only if its whole span lies inside it."""
    gap = windows.length + windows.horizon
    rows = math.ceil(days * 24 * 60 / windows.sample_minutes)

    def bounds(n_rows: int) -> dict[str, tuple[int, int]]:
        return {
            "calibration": (0, min(rows, n_rows)),
            "evaluation": (min(rows + gap, n_rows), n_rows),
        }

    return assign_windows(cohort, windows, bounds, gap)
