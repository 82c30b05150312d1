"""Canonical dangerous glucose traces: the stress-test set of the harmful-state gate.

A personalized model may learn a harmful state as "normal" (e.g. recurrent hypoglycaemia in
its owner's data) and stop alerting. Whatever its accuracy, a model must still alert when
glucose is already below 70 mg/dL or falling fast towards it. The set is deterministic and
documented, so a reviewer can see exactly what the model was shown:

- already low: flat at 50, 55, 60 or 65 mg/dL for the whole window;
- gone low: a linear fall from 120 mg/dL ending at 55, 60 or 65;
- dropped and staying low: 100 mg/dL, a fall in the first half, then flat at 60 or 65;
- falling fast: flat, then a fall of 2 or 3 mg/dL/min over the last 30 min (from 140-180)
  ending at 80, 85 or 90 mg/dL — linear extrapolation crosses 70 within 3-10 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StressTrace:
    name: str
    kind: str
    cgm: np.ndarray  # readings, oldest first, mg/dL


def stress_traces(length: int, sample_minutes: int) -> list[StressTrace]:
    minutes = np.arange(length) * sample_minutes
    end = minutes[-1]
    traces = []
    for level in (50, 55, 60, 65):
        traces.append(StressTrace(f"flat {level}", "already low", np.full(length, float(level))))
    for level in (55, 60, 65):
        traces.append(
            StressTrace(f"fall 120 -> {level}", "gone low", np.linspace(120.0, level, length))
        )
    half = length // 2
    for level in (60, 65):
        cgm = np.concatenate([np.linspace(100.0, level, half), np.full(length - half, level)])
        traces.append(StressTrace(f"drop to {level}, stay", "staying low", cgm.astype(float)))
    for slope in (2.0, 3.0):
        for final in (80.0, 85.0, 90.0):
            start_fall = end - 30
            cgm = np.where(
                minutes < start_fall, final + slope * 30, final + slope * (end - minutes)
            )
            traces.append(
                StressTrace(
                    f"falling {slope:g}/min to {final:g}", "falling fast", cgm.astype(float)
                )
            )
    return traces


def stress_inputs(traces: list[StressTrace], channels: list[str]) -> np.ndarray:
    """Model inputs (n, channels, length): CGM as given, insulin and carbs zero."""
    length = len(traces[0].cgm)
    x = np.zeros((len(traces), len(channels), length), dtype=np.float32)
    x[:, channels.index("cgm"), :] = np.stack([trace.cgm for trace in traces])
    return x
