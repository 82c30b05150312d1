"""Canonical dangerous traces for the device's harmful-state gate, stored in flash.

The device has no expert at hand to notice that its head stopped alerting on lows (scenario
4 of `000`: "unpredictable evolution of the learning, experts less involved"). Before a new
head goes live it must still alert on every trace of a fixed set of windows where glucose is
already low or falling into a low. The set is the cloud gate's (`tailorml.soft.stress`) plus
steady falls that end in hypo: from several start levels (120, 160, 200 mg/dL) at several
speeds (1, 2, 3 mg/dL/min), flat before the fall, ending at 65 mg/dL on the last reading.

Only the traces the factory model itself alerts on are kept, so the gate asks "no worse than
the factory on these", which the factory head always satisfies (a gate no head could pass
would freeze the device). The kept and dropped names are reported. The device stores each
kept trace as its last-layer input codes (int8, `features` per trace): the backbone is
frozen, so those never change, and the gate costs one head evaluation per trace.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tailorml.deploy.int8.quantize import QuantizedModel
from tailorml.soft.stress import stress_traces

FALL_STARTS_MGDL = (120, 160, 200)
FALL_SPEEDS_MGDL_PER_MIN = (1, 2, 3)
FALL_END_MGDL = 65


@dataclass(frozen=True)
class DangerousTraces:
    """The kept traces (their readings and int16 features) and the names of those dropped
    because the factory model does not alert on them."""

    names: list[str]
    readings: np.ndarray  # (n, window) int16 mg/dL
    features: np.ndarray  # (n, features) int16, q - z as the device holds them
    dropped: list[str]

    def __len__(self) -> int:
        return len(self.names)


def steady_falls(length: int, sample_minutes: int) -> list[tuple[str, np.ndarray]]:
    """Flat at a start level, then a straight fall at a fixed speed to 65 mg/dL at the end
    (the fall starts at the window's beginning if it needs the whole window)."""
    minutes = np.arange(length) * sample_minutes
    end = minutes[-1]
    traces = []
    for start in FALL_STARTS_MGDL:
        for speed in FALL_SPEEDS_MGDL_PER_MIN:
            cgm = np.minimum(start, FALL_END_MGDL + speed * (end - minutes)).astype(float)
            traces.append((f"steady fall {start} -> {FALL_END_MGDL} at {speed}/min", cgm))
    return traces


def candidate_traces(length: int, sample_minutes: int) -> list[tuple[str, np.ndarray]]:
    """Every candidate trace (name, readings in mg/dL), in a fixed order."""
    cloud = [(trace.name, trace.cgm) for trace in stress_traces(length, sample_minutes)]
    return cloud + steady_falls(length, sample_minutes)


def dangerous_traces(quantized: QuantizedModel) -> DangerousTraces:
    """The candidate traces the factory int8 model alerts on, with their features."""
    candidates = candidate_traces(quantized.window, quantized.policy.sample_minutes)
    windows = np.stack([cgm for _, cgm in candidates])[:, None, :]
    decided = quantized.decide(quantized.logits(windows))
    alerted = decided == quantized.policy.alert_index
    kept = np.flatnonzero(alerted)
    return DangerousTraces(
        names=[candidates[i][0] for i in kept],
        readings=quantized.readings(windows[kept])[:, 0, :],
        features=quantized.features(windows[kept]).astype(np.int16),
        dropped=[candidates[i][0] for i in np.flatnonzero(~alerted)],
    )
