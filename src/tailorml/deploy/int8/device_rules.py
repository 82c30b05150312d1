"""What the device does around the model: the integer reference of `tailorml_alert`.

The generated C (`tailorml.deploy.int8.c`) applies the policy's safety rules before the model
runs, and this is the same computation on the host, so the parity tests can check the C
against it window for window: a window with a missing reading (`MISSING`) gets no
decision — a dropped reading is not a severe low — unless its last reading is an urgent low
(`AlertPolicy.screen`, the same rule the encrypted client applies); other
readings are clamped to the sensor range, so a value no sensor reports cannot drive the
model beyond what it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tailorml.data.schema import SENSOR_HIGH_MGDL, SENSOR_LOW_MGDL
from tailorml.deploy.int8.quantize import QuantizedModel, alert_total_fixed_point

MISSING = -32768  # a reading the sensor did not deliver (int16 minimum)
SENSOR_MIN_MGDL, SENSOR_MAX_MGDL = int(SENSOR_LOW_MGDL), int(SENSOR_HIGH_MGDL)  # int16 mg/dL
STATUS_DECIDED, STATUS_NO_DECISION, STATUS_URGENT_LOW = 0, 1, 2


@dataclass(frozen=True)
class DeviceAlerts:
    """Per window: status, decided class (-1 without a decision), margin (scaled logit
    steps, >= 0 decides the alert class; 0 where the model did not run) and int16 logits."""

    status: np.ndarray
    decided: np.ndarray
    margin: np.ndarray
    logits: np.ndarray


def device_alerts(model: QuantizedModel, readings: np.ndarray) -> DeviceAlerts:
    """`tailorml_alert` on int16 `readings` (n, channels, window), channel 0 CGM."""
    readings = np.asarray(readings)
    if readings.ndim != 3 or readings.shape[1:] != (model.channels, model.window):
        raise ValueError(
            f"readings of shape {readings.shape[1:]} given to a model that reads "
            f"({model.channels}, {model.window})"
        )
    readings = readings.astype(np.int64)
    missing = readings == MISSING
    clamped = np.where(
        missing, SENSOR_MIN_MGDL, np.clip(readings, SENSOR_MIN_MGDL, SENSOR_MAX_MGDL)
    )
    policy = model.policy
    urgent, gap = policy.screen(np.where(missing, np.nan, clamped.astype(float)))
    runs = ~urgent & ~gap
    logits = np.zeros((len(readings), len(policy.classes)), dtype=np.int16)
    margin = np.zeros(len(readings), dtype=np.int64)
    decided = np.full(len(readings), -1, dtype=np.int64)
    if runs.any():
        logits[runs] = model.logits(clamped[runs])
        total, best = alert_total_fixed_point(model.decision, logits[runs].astype(np.int64))
        margin[runs] = model.decision.limit - total
        decided[runs] = np.where(total <= model.decision.limit, model.decision.alert_index, best)
    decided[urgent] = model.decision.alert_index
    status = np.where(urgent, STATUS_URGENT_LOW, np.where(gap, STATUS_NO_DECISION, STATUS_DECIDED))
    return DeviceAlerts(status, decided, margin, logits)
