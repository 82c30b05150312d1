"""Readings on a regular grid: one implementation of "which reading fills which slot".

Every path from raw readings to a cohort goes through here (the export importers and the
shipped real cohorts), so a slot means the same thing whatever the source:

- the grid of one person starts at their first reading, floored to the minute; each reading
  goes to the nearest slot (at most half an interval away); nothing is interpolated, an
  empty slot is a missing reading;
- two readings in one slot: the lower `rank` wins (e.g. Libre history over scans), then the
  earlier; the other is counted (`slot_collisions_dropped`);
- with `conflict_mgdl`, two readings closer than half an interval whose values differ by
  more than `conflict_mgdl` are *conflicting* (two sensors worn at once, or a scan against
  history): glucose cannot move that fast, nobody can say which one is right, so every slot
  holding one of them becomes a missing reading, counted (`conflicting_readings_blanked`);
- events (carbs, insulin) are summed into the interval ending at each slot,
  (slot - step, slot]; events outside the readings are counted, not placed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Grid:
    """One person's readings on their grid: slot k is `origin + k * step`."""

    origin: pd.Timestamp
    step: pd.Timedelta
    values: np.ndarray  # float, NaN = no reading in the slot

    @property
    def times(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.origin + np.arange(len(self.values)) * self.step)

    def slot_of_event(self, times: pd.Series) -> np.ndarray:
        """The slot whose interval (slot - step, slot] holds each time."""
        return np.ceil((times - self.origin) / self.step).astype(np.int64).to_numpy()


def conflicting(times: np.ndarray, values: np.ndarray, within: pd.Timedelta, mgdl: float):
    """Mask of readings (sorted by time) that have a neighbour closer than `within` whose
    value differs by more than `mgdl`."""
    close = np.diff(times) < within.to_timedelta64()
    apart = np.abs(np.diff(values)) > mgdl
    pair = close & apart
    mask = np.zeros(len(values), dtype=bool)
    mask[:-1] |= pair
    mask[1:] |= pair
    return mask


def place_readings(
    readings: pd.DataFrame,
    step_minutes: int,
    counts: Counter,
    conflict_mgdl: float | None = None,
) -> Grid:
    """One person's readings (columns `time`, `cgm`, optional `rank`; at least one) on
    their grid; what was dropped or blanked is added to `counts`."""
    step = pd.Timedelta(minutes=step_minutes)
    rows = readings.sort_values("time", kind="stable")
    times = rows["time"].to_numpy(dtype="datetime64[ns]")
    values = rows["cgm"].to_numpy(dtype=float)
    rank = rows["rank"].to_numpy() if "rank" in rows else np.zeros(len(rows), dtype=np.int64)
    origin = pd.Timestamp(times[0]).floor("min")
    slot = np.rint((times - origin.to_datetime64()) / step.to_timedelta64()).astype(np.int64)
    blanked = (
        conflicting(times, values, step / 2, conflict_mgdl)
        if conflict_mgdl is not None
        else np.zeros(len(values), dtype=bool)
    )
    order = np.lexsort((times, rank, slot))  # by slot, then rank, then time
    slot, values, blanked = slot[order], values[order], blanked[order]
    occupied = np.zeros(len(slot), dtype=bool)
    occupied[1:] = slot[1:] == slot[:-1]
    counts["slot_collisions_dropped"] += int(occupied.sum())
    grid = np.full(int(slot.max()) + 1, np.nan)
    grid[slot[~occupied]] = values[~occupied]
    if blanked.any():
        counts["conflicting_readings_blanked"] += int(blanked.sum())
        grid[np.unique(slot[blanked])] = np.nan
    counts["empty_slots"] += int(np.isnan(grid).sum())
    return Grid(origin, step, grid)


def sum_events(grid: Grid, times: pd.Series, amounts: np.ndarray) -> tuple[np.ndarray, int]:
    """Totals per slot of events at `times` (the interval ending at each slot), and how many
    events fell outside the person's readings."""
    ending = grid.slot_of_event(times)
    inside = (ending >= 0) & (ending < len(grid.values))
    totals = np.bincount(
        ending[inside], weights=np.asarray(amounts, dtype=float)[inside], minlength=len(grid.values)
    )
    return totals.astype(float), int((~inside).sum())
