"""Windows and labels of the glucose-alert task.

A sample is the last `window_minutes` of readings (CGM, optionally insulin and carbs, or
insulin and carbs on board, `tailorml.data.on_board`) and
its label says what happens in the next `horizon_minutes` of CGM: hypo if any reading is
below `hypo_mgdl`, else hyper if any is above `hyper_mgdl`, else in range. A window whose
input or horizon has a missing reading is dropped and counted, never imputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from tailorml.config import TaskConfig
from tailorml.data.cohort import Cohort
from tailorml.data.on_board import DERIVED_CHANNELS, derived_channel
from tailorml.errors import CohortError, ConfigError

CLASSES = ("in_range", "hypo", "hyper")
IN_RANGE, HYPO, HYPER = range(3)


@dataclass
class WindowSet:
    """All valid windows of a cohort, in individual then time order."""

    x: np.ndarray  # (n, channels, length) float32, raw units (mg/dL, U, g)
    y: np.ndarray  # (n,) int64 class index into CLASSES
    individual: np.ndarray  # (n,) int index into `ids`
    row: np.ndarray  # (n,) grid row of the window's first reading, per individual
    time: np.ndarray  # (n,) datetime64: time of the last input reading (= prediction time)
    current_cgm: np.ndarray  # (n,) the last input CGM reading, mg/dL
    previous_cgm: np.ndarray  # (n,) the reading one interval before it (urgent: falling?)
    hypo_lead_minutes: np.ndarray  # (n,) minutes to the first horizon reading < hypo; NaN: none
    ids: list[str]
    channels: list[str]
    length: int  # readings per window
    horizon: int  # readings in the horizon
    sample_minutes: int
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    def indices_of(self, individual_id: str) -> np.ndarray:
        return np.flatnonzero(self.individual == self.ids.index(individual_id))


def label_future(future_cgm: np.ndarray, hypo_mgdl: float, hyper_mgdl: float) -> np.ndarray:
    """Label rows of future CGM readings (n, horizon): hypo beats hyper beats in range."""
    labels = np.full(len(future_cgm), IN_RANGE, dtype=np.int64)
    labels[(future_cgm > hyper_mgdl).any(axis=1)] = HYPER
    labels[(future_cgm < hypo_mgdl).any(axis=1)] = HYPO
    return labels


def hypo_lead(future_cgm: np.ndarray, hypo_mgdl: float, sample_minutes: int) -> np.ndarray:
    """Minutes from the prediction to the first reading of the horizon (n, horizon) below
    `hypo_mgdl` (one reading ahead = `sample_minutes`); NaN where none is."""
    below = future_cgm < hypo_mgdl
    lead = (below.argmax(axis=1) + 1.0) * sample_minutes
    return np.where(below.any(axis=1), lead, np.nan)


def readings_per(minutes: int, sample_minutes: int, what: str) -> int:
    if minutes % sample_minutes:
        raise ConfigError(
            f"task.{what} = {minutes} is not a multiple of the cohort's {sample_minutes}-minute "
            "sampling interval; choose a multiple"
        )
    return minutes // sample_minutes


def channel_values(frame: pd.DataFrame, channels: list[str], sample_minutes: int) -> np.ndarray:
    """One individual's input channels (channels, T): columns as recorded, `iob`/`cob`
    derived from their `insulin`/`cho` column (see `tailorml.data.on_board`)."""
    rows = []
    for channel in channels:
        if channel in DERIVED_CHANNELS:
            amounts = frame[DERIVED_CHANNELS[channel]].to_numpy(dtype=np.float64)
            rows.append(derived_channel(channel, amounts, sample_minutes))
        else:
            rows.append(frame[channel].to_numpy(dtype=np.float64))
    return np.stack(rows)


def make_windows(cohort: Cohort, task: TaskConfig) -> WindowSet:
    length = readings_per(task.window_minutes, cohort.sample_minutes, "window_minutes")
    horizon = readings_per(task.horizon_minutes, cohort.sample_minutes, "horizon_minutes")
    for channel in task.channels:
        column = DERIVED_CHANNELS.get(channel, channel)
        if column not in cohort.readings.columns:
            raise CohortError(
                f"{cohort.source}: task.channels asks for '{channel}' but the file has no "
                f"'{column}' column; add it or remove '{channel}' from task.channels"
            )
    xs, ys, owners, rows, times, currents, previous, leads = [], [], [], [], [], [], [], []
    dropped: dict[str, dict[str, int]] = {}
    for index, individual_id in enumerate(cohort.ids):
        frame = cohort.of(individual_id)
        values = channel_values(frame, task.channels, cohort.sample_minutes)  # (channels, T)
        cgm = frame["cgm"].to_numpy(dtype=np.float64)
        span = length + horizon
        if len(cgm) < span:
            dropped[individual_id] = {"windows": 0, "gap_in_input": 0, "gap_in_horizon": 0}
            continue
        starts = np.arange(0, len(cgm) - span + 1, task.stride)
        inputs = sliding_window_view(values, length, axis=1)[:, starts]  # (C, n, L)
        future = sliding_window_view(cgm[length:], horizon)[starts]  # (n, H)
        input_gap = np.isnan(inputs).any(axis=(0, 2))
        horizon_gap = np.isnan(future).any(axis=1) & ~input_gap
        keep = ~(input_gap | horizon_gap)
        dropped[individual_id] = {
            "windows": len(starts),
            "gap_in_input": int(input_gap.sum()),
            "gap_in_horizon": int(horizon_gap.sum()),
        }
        kept = starts[keep]
        xs.append(np.transpose(inputs[:, keep], (1, 0, 2)).astype(np.float32))
        ys.append(label_future(future[keep], task.hypo_mgdl, task.hyper_mgdl))
        leads.append(hypo_lead(future[keep], task.hypo_mgdl, cohort.sample_minutes))
        owners.append(np.full(len(kept), index, dtype=np.int64))
        rows.append(kept)
        times.append(frame["time"].to_numpy()[kept + length - 1])
        currents.append(cgm[kept + length - 1])
        previous.append(cgm[kept + length - 2] if length > 1 else np.full(len(kept), np.nan))
    if not xs or sum(len(y) for y in ys) == 0:
        raise CohortError(
            f"{cohort.source}: no complete {task.window_minutes}+{task.horizon_minutes}-minute "
            "window without missing readings; the data is too short or has too many gaps"
        )
    return WindowSet(
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        individual=np.concatenate(owners),
        row=np.concatenate(rows),
        time=np.concatenate(times),
        current_cgm=np.concatenate(currents),
        previous_cgm=np.concatenate(previous),
        hypo_lead_minutes=np.concatenate(leads),
        ids=list(cohort.ids),
        channels=list(task.channels),
        length=length,
        horizon=horizon,
        sample_minutes=cohort.sample_minutes,
        dropped=dropped,
    )
