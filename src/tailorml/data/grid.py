"""Readings on a regular grid: one implementation of "which reading fills which slot".

Every path from raw readings to a window goes through here (the export importers, the
shipped real cohorts and the service's live alerts), so a slot means the same thing
whatever the source:

- each reading goes to its nearest slot (at most half an interval away; exactly half-way:
  numpy's round-half-to-even, as the shipped cohorts were built); nothing is interpolated,
  an empty slot is a missing reading, and one reading fills at most one slot;
- two readings in one slot: the lower `rank` wins (e.g. Libre history over scans), then, by
  `keep`, the earlier (`"earlier"`, the cohorts: the published figures are built so) or the
  one nearer the slot's time, then the earlier (`"nearer"`, the service: the reading being
  decided sits on its own slot, so the window's newest value is that reading's own); the
  other is counted (`slot_collisions_dropped`);
- offline, the grid of one person starts at their first reading, floored to the minute
  (`place_readings`); live, it ends at the reading being decided (`fill_slots` with the
  window's first slot as the origin);
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
from typing import Literal

import numpy as np
import pandas as pd

Keep = Literal["earlier", "nearer"]


@dataclass
class Grid:
    """One person's readings on their grid: slot k is `origin + k * step`."""

    origin: pd.Timestamp
    step: pd.Timedelta
    values: np.ndarray  # float, NaN = no reading in the slot

    @property
    def times(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.origin + np.arange(len(self.values)) * self.step)


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


def fill_slots(
    offsets: np.ndarray,
    values: np.ndarray,
    step: int,
    length: int | None = None,
    rank: np.ndarray | None = None,
    keep: Keep = "earlier",
) -> tuple[np.ndarray, np.ndarray, int]:
    """Readings at `offsets` from slot 0 (integers, in the unit of `step`) on `length` slots
    (default: up to the last reading's); readings outside them are left out, uncounted.

    Returns the grid (NaN: no reading), each reading's slot (input order) and how many
    readings inside lost their slot to another (see the module docstring for who wins)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    values = np.asarray(values, dtype=float)
    rank = np.zeros(len(offsets), dtype=np.int64) if rank is None else np.asarray(rank)
    slot = np.rint(offsets / step).astype(np.int64)
    if length is None:
        length = int(slot.max()) + 1 if len(slot) else 0
    inside = np.flatnonzero((slot >= 0) & (slot < length))
    keys = (offsets[inside], rank[inside], slot[inside])
    if keep == "nearer":
        keys = (offsets[inside], np.abs(offsets[inside] - slot[inside] * step), *keys[1:])
    elif keep != "earlier":
        raise ValueError(f"keep must be 'earlier' or 'nearer', not {keep!r}")
    order = inside[np.lexsort(keys)]  # by slot, then rank, then (distance,) time
    taken = np.zeros(len(order), dtype=bool)
    taken[1:] = slot[order][1:] == slot[order][:-1]
    grid = np.full(length, np.nan)
    grid[slot[order][~taken]] = values[order][~taken]
    return grid, slot, int(taken.sum())


def sum_into_slots(
    offsets: np.ndarray, amounts: np.ndarray, step: int, length: int
) -> tuple[np.ndarray, int]:
    """Totals per slot of events at `offsets` from slot 0 (the interval (slot - step, slot]
    ending at each slot), and how many events fell outside the `length` slots."""
    ending = np.ceil(np.asarray(offsets, dtype=np.int64) / step).astype(np.int64)
    inside = (ending >= 0) & (ending < length)
    totals = np.bincount(
        ending[inside], weights=np.asarray(amounts, dtype=float)[inside], minlength=length
    )
    return totals.astype(float), int((~inside).sum())


def _nanoseconds(times) -> np.ndarray:
    return np.asarray(times, dtype="datetime64[ns]").astype(np.int64)


def place_readings(
    readings: pd.DataFrame,
    step_minutes: int,
    counts: Counter,
    conflict_mgdl: float | None = None,
) -> Grid:
    """One person's readings (columns `time`, `cgm`, optional `rank`; at least one) on
    their grid (from the first reading, floored to the minute; the earlier reading keeps a
    crowded slot); what was dropped or blanked is added to `counts`."""
    step = pd.Timedelta(minutes=step_minutes)
    rows = readings.sort_values("time", kind="stable")
    times = rows["time"].to_numpy(dtype="datetime64[ns]")
    values = rows["cgm"].to_numpy(dtype=float)
    rank = rows["rank"].to_numpy() if "rank" in rows else None
    origin = pd.Timestamp(times[0]).floor("min")
    grid, slot, collisions = fill_slots(
        _nanoseconds(times) - origin.value, values, step.value, rank=rank
    )
    counts["slot_collisions_dropped"] += collisions
    if conflict_mgdl is not None:
        blanked = conflicting(times, values, step / 2, conflict_mgdl)
        if blanked.any():
            counts["conflicting_readings_blanked"] += int(blanked.sum())
            grid[np.unique(slot[blanked])] = np.nan
    counts["empty_slots"] += int(np.isnan(grid).sum())
    return Grid(origin, step, grid)


def sum_events(grid: Grid, times: pd.Series, amounts: np.ndarray) -> tuple[np.ndarray, int]:
    """Totals per slot of events at `times` (the interval ending at each slot), and how many
    events fell outside the person's readings."""
    offsets = _nanoseconds(times) - grid.origin.value
    return sum_into_slots(offsets, amounts, grid.step.value, len(grid.values))
