"""The sensor-fault suite: each fault applied to the test part of every individual, the model
re-run with its own alert policy, and the same alert metrics computed against the *recorded*
events, so a drop is the cost of the fault alone.

Windows stay the same windows (same rows, labels and events) under every fault: the
comparison with the unshifted figures is paired per individual. A window whose faulted input
has a missing reading gets no decision (no alert), as in use. Faults are seeded per
(seed, fault, individual), so every model meets exactly the same faulted readings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn

from tailorml.data.glucose import IN_RANGE
from tailorml.data.prepared import Prepared
from tailorml.evaluate.individuals import individual_alert_metrics
from tailorml.evaluate.metrics import classification_metrics
from tailorml.models.predict import predict_proba
from tailorml.policy import AlertPolicy
from tailorml.shift import sensor
from tailorml.shift.sensor import Fault, Trace

CLEAN = "none"


@dataclass(frozen=True)
class Shift:
    name: str  # a safe identifier (CSV value, column)
    kind: str  # "sensor" or "life"
    description: str
    fault: Fault | None = None


def sensor_shifts(sample_minutes: int = 5) -> list[Shift]:
    """The documented sensor faults (magnitudes and sources: `tailorml.shift.sensor`)."""
    return [
        Shift(
            "g6_error", "sensor", "Dexcom-G6-like gain/offset drift + AR(2) noise", sensor.g6_error
        ),
        Shift(
            "calibration_plus15", "sensor", "calibration bias +15 %", sensor.calibration_bias(0.15)
        ),
        Shift(
            "calibration_minus15",
            "sensor",
            "calibration bias -15 %",
            sensor.calibration_bias(-0.15),
        ),
        Shift(
            "compression_lows",
            "sensor",
            "night compression lows, 3 % of night readings",
            sensor.compression_lows(sample_minutes=sample_minutes),
        ),
        Shift(
            "warmup_day1",
            "sensor",
            "day-1 warm-up: -10 % bias fading over 24 h, 8 % noise",
            sensor.warmup_error(),
        ),
        Shift(
            "dropouts",
            "sensor",
            "dropouts: 2 per day, 15-120 min",
            sensor.dropouts(sample_minutes=sample_minutes),
        ),
        # appended last: each shift is seeded by its position, so adding one at the end
        # keeps every earlier shift's faulted readings unchanged
        Shift(
            "g6_late_wear",
            "sensor",
            "Dexcom-G6-like error on days 7-10 of wear",
            sensor.g6_late_wear(),
        ),
    ]


def fault_one(
    prepared: Prepared,
    individual_id: str,
    shift: Shift,
    seed: int,
    shift_index: int,
    part: str = "test",
) -> tuple[np.ndarray, np.ndarray]:
    """(recorded cgm, faulted cgm) of one individual over the whole record, faulted only
    inside `part` (the sensor inserted at the part's first reading); seeded by (seed, shift,
    the individual's position in the cohort)."""
    number = prepared.cohort.ids.index(individual_id)
    frame = prepared.cohort.of(individual_id)
    start, end = prepared.splits.boundaries[individual_id][part]
    cgm = frame["cgm"].to_numpy(dtype=np.float64)
    faulted = cgm.copy()
    if shift.fault is not None and end > start:
        times = pd.DatetimeIndex(frame["time"].iloc[start:end])
        trace = Trace(
            cgm=cgm[start:end],
            minutes=np.asarray((times - times[0]).total_seconds() / 60.0),
            hour=np.asarray(times.hour + times.minute / 60.0, dtype=float),
        )
        rng = np.random.default_rng([seed, shift_index, number])
        faulted[start:end] = shift.fault(trace, rng)
    return cgm, faulted


def faulted_traces(
    prepared: Prepared, shift: Shift, seed: int, shift_index: int, part: str = "test"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`fault_one` for every individual."""
    return {
        individual_id: fault_one(prepared, individual_id, shift, seed, shift_index, part)
        for individual_id in prepared.cohort.ids
    }


def shifted_probabilities(
    model: nn.Module, prepared: Prepared, indices: np.ndarray, faulted: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The model's probabilities on windows `indices` with the CGM channel read from
    `faulted`; windows with a missing faulted reading get (1, 0, 0) (no decision, no alert).
    Returns (probabilities, decided mask)."""
    windows = prepared.windows
    x = windows.x[indices].copy()
    if "cgm" in windows.channels:
        channel = windows.channels.index("cgm")
        rows = windows.row[indices][:, None] + np.arange(windows.length)[None, :]
        x[:, channel, :] = faulted[rows]
    decided = ~np.isnan(x).any(axis=(1, 2))
    probabilities = np.zeros((len(indices), 3), dtype=np.float64)
    probabilities[:, IN_RANGE] = 1.0
    if decided.any():
        probabilities[decided] = predict_proba(model, x[decided])
    return probabilities, decided


def evaluate_shift(
    model: nn.Module,
    prepared: Prepared,
    traces: dict[str, tuple[np.ndarray, np.ndarray]],
    part: str = "test",
    policy: AlertPolicy | None = None,
) -> list[dict]:
    """One row per individual: classification and alert metrics under the faulted input,
    decided by `policy` (default: the model's own)."""
    policy = policy or model.policy
    rows = []
    for individual in prepared.cohort.individuals:
        indices = prepared.splits.of(individual.id, part)
        if len(indices) == 0:
            continue
        probabilities, decided = shifted_probabilities(
            model, prepared, indices, traces[individual.id][1]
        )
        labels = prepared.windows.y[indices]
        row = {
            "patient_id": individual.id,
            "group": individual.group,
            "windows": len(indices),
            "undecided_fraction": float(1 - decided.mean()),
        }
        row |= classification_metrics(labels, policy.decide(probabilities))
        row |= individual_alert_metrics(
            policy, prepared, individual.id, indices, probabilities, part
        )
        rows.append(row)
    return rows


def envelope_rows(
    prepared: Prepared,
    shift: str,
    traces: dict[str, tuple[np.ndarray, np.ndarray]],
    part: str = "test",
) -> list[dict]:
    """The iCGM criteria of the faulted test readings against the reference: true blood
    glucose (`bg`) where the file has it, else the recorded CGM."""
    readings, references = [], []
    for individual_id, (_, faulted) in traces.items():
        frame = prepared.cohort.of(individual_id)
        start, end = prepared.splits.boundaries[individual_id][part]
        column = "bg" if "bg" in frame else "cgm"
        references.append(frame[column].to_numpy(dtype=np.float64)[start:end])
        readings.append(faulted[start:end])
    reference_name = "bg" if "bg" in prepared.cohort.readings else "recorded cgm"
    return [
        {"shift": shift, "reference": reference_name} | row
        for row in sensor.icgm_envelope(np.concatenate(readings), np.concatenate(references))
    ]


def run_sensor_suite(
    models: Sequence[tuple[str, nn.Module]],
    prepared: Prepared,
    seed: int,
    shifts: Sequence[Shift] | None = None,
    part: str = "test",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every model under no shift and every sensor fault: (per-individual metrics with
    `model` and `shift` columns, the iCGM envelope per shift)."""
    shifts = list(shifts if shifts is not None else sensor_shifts(prepared.cohort.sample_minutes))
    everything = [Shift(CLEAN, "none", "unshifted test data"), *shifts]
    rows, envelope = [], []
    for index, shift in enumerate(everything):
        traces = faulted_traces(prepared, shift, seed, index, part)
        envelope += envelope_rows(prepared, shift.name, traces, part)
        for label, model in models:
            for row in evaluate_shift(model, prepared, traces, part):
                rows.append({"model": label, "shift": shift.name, "kind": shift.kind} | row)
    return pd.DataFrame(rows), pd.DataFrame(envelope)


STRESS_METRICS = ("hypo_sensitivity", "false_alerts_per_day", "balanced_accuracy")


def stress_columns(
    model: nn.Module, policy: AlertPolicy, prepared: Prepared, individual_id: str, seed: int = 0
) -> dict[str, float]:
    """One individual's test metrics under every sensor fault, as result columns
    `<shift>__<metric>` (the experiment's per-method robustness; seeded as the suite is, so
    every method meets the same faulted readings)."""
    indices = prepared.splits.of(individual_id, "test")
    columns: dict[str, float] = {}
    if len(indices) == 0:
        return columns
    for index, shift in enumerate(sensor_shifts(prepared.cohort.sample_minutes), start=1):
        _, faulted = fault_one(prepared, individual_id, shift, seed, index)
        probabilities, _ = shifted_probabilities(model, prepared, indices, faulted)
        labels = prepared.windows.y[indices]
        metrics = classification_metrics(labels, policy.decide(probabilities))
        metrics |= individual_alert_metrics(policy, prepared, individual_id, indices, probabilities)
        for metric in STRESS_METRICS:
            value = float(metrics[metric])
            columns[f"{shift.name}__{metric}"] = value if np.isfinite(value) else float("nan")
    return columns
