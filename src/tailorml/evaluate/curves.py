"""Sensitivity against false alerts per day — the alerting analogue of the ROC curve — for a
model and for rules that need no learning, all with the same event metrics.

CGM users judge an alarm by the lows it catches in time and by how often it cries wolf, so
every rule is swept over its knob (the model over its probability threshold, the rules over
a glucose level) and each point is the mean over individuals of early sensitivity (events
alerted at least `useful_lead_minutes` ahead), any-lead sensitivity and false alerts/day.

Baselines (what commercial receivers do without a model):
- *CGM now*: alert when the current reading is at or below k mg/dL;
- *linear extrapolation*: alert when the least-squares line through the last 30 min of
  readings reaches k mg/dL or less at the horizon (the "predictive low" alert).

The model's value is its margin over the best baseline at an equal or lower false-alert
rate (`margin_over_baselines`).

Computed from a run's stored tables only (predictions and readings), so reports can be
re-rendered without the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from tailorml.config import threshold_grid
from tailorml.evaluate.alerts import Event
from tailorml.policy import AlertPolicy

MODEL = "model"
CGM_NOW = "CGM now ≤ k"
EXTRAPOLATION = "30-min trend at horizon ≤ k"
PROBABILITY_KNOBS = np.array(threshold_grid())
GLUCOSE_KNOBS = np.arange(40.0, 145.0, 5.0)


@dataclass
class Person:
    """What one individual's alerts are judged on."""

    events: list[Event]
    times: np.ndarray  # prediction times
    label_is_hypo: np.ndarray
    current_cgm: np.ndarray
    scores: dict[str, np.ndarray]  # rule -> score; an alert when score >= knob


def people_from_tables(
    predictions: pd.DataFrame, readings: pd.DataFrame, policy: AlertPolicy
) -> list[Person]:
    """One Person per individual of a run's predictions.parquet / test_readings.parquet,
    with the model's and the baselines' scores (baselines: minus the glucose they
    foresee, so that 'score >= -k' means 'glucose <= k')."""
    people = []
    for individual, predicted in predictions.groupby("patient_id", sort=False):
        trace = readings[readings["patient_id"] == individual]
        times = predicted["time"].to_numpy()
        current = predicted["current_cgm"].to_numpy(dtype=float)
        people.append(
            Person(
                events=policy.hypo_events(trace["time"].to_numpy(), trace["cgm"].to_numpy()),
                times=times,
                label_is_hypo=predicted["y_true"].to_numpy() == policy.alert_index,
                current_cgm=current,
                scores={
                    MODEL: predicted[f"p_{policy.alert_class}"].to_numpy(),
                    CGM_NOW: -current,
                    EXTRAPOLATION: -extrapolated(trace, times, policy),
                },
            )
        )
    return people


def extrapolated(
    trace: pd.DataFrame, times: np.ndarray, policy: AlertPolicy, lookback_minutes: int = 30
) -> np.ndarray:
    """Glucose at the horizon by the least-squares line through the readings of the last
    `lookback_minutes` before each time; NaN (no alert) when one of them is missing."""
    n = lookback_minutes // policy.sample_minutes + 1
    cgm = trace["cgm"].to_numpy(dtype=float)
    rows = np.searchsorted(trace["time"].to_numpy(), np.asarray(times))
    if len(cgm) < n:
        return np.full(len(rows), np.nan)
    windows = sliding_window_view(cgm, n)  # windows[i] ends at reading i + n - 1
    offsets = (np.arange(n) - (n - 1)) * policy.sample_minutes  # minutes, 0 = now
    centred = offsets - offsets.mean()
    ends = rows - (n - 1)
    result = np.full(len(rows), np.nan)
    valid = ends >= 0
    chosen = windows[ends[valid]]
    slope = (chosen - chosen.mean(axis=1, keepdims=True)) @ centred / (centred @ centred)
    result[valid] = chosen[:, -1] + slope * policy.horizon_minutes
    return result


def sweep(people: list[Person], policy: AlertPolicy, rule: str, knobs) -> pd.DataFrame:
    """One row per knob of `rule`: mean early and any-lead sensitivity and mean false
    alerts per day over individuals (events counted only where some were evaluable), and
    the pooled counts behind them (for bounds that need counts, e.g. a personal threshold)."""
    rows = []
    for knob in knobs:
        table = pd.DataFrame(
            [
                policy.metrics_of_alerts(
                    person.events,
                    person.times,
                    np.nan_to_num(person.scores[rule], nan=-np.inf) >= knob,
                    person.label_is_hypo,
                    person.current_cgm,
                )
                for person in people
            ]
        )
        rows.append(
            {
                "rule": rule,
                "knob": float(abs(knob)),
                "sensitivity_early": table["hypo_sensitivity_early"].mean(),
                "sensitivity": table["hypo_sensitivity"].mean(),
                "false_alerts_per_day": table["false_alerts_per_day"].mean(),
                "events": int(table["hypo_events"].sum()),
                "caught": int(table["hypo_caught"].sum()),
                "caught_early": int(table["hypo_caught_early"].sum()),
                "false_alerts": int(table["false_alerts"].sum()),
                "days": float(table["monitored_days"].sum()),
            }
        )
    return pd.DataFrame(rows)


def alert_curve(people: list[Person], policy: AlertPolicy) -> pd.DataFrame:
    """The model over its probability knobs (and its own threshold) and the baselines over
    their glucose levels, all on the same people."""
    return pd.concat(
        [
            sweep(people, policy, MODEL, np.unique(np.append(PROBABILITY_KNOBS, policy.threshold))),
            sweep(people, policy, CGM_NOW, -GLUCOSE_KNOBS),
            sweep(people, policy, EXTRAPOLATION, -GLUCOSE_KNOBS),
        ],
        ignore_index=True,
    )


def operating_point(curve: pd.DataFrame, policy: AlertPolicy) -> pd.Series:
    """The model's row at its policy threshold."""
    model = curve[curve["rule"] == MODEL]
    return model.loc[(model["knob"] - policy.threshold).abs().idxmin()]


def margin_over_baselines(curve: pd.DataFrame, point: pd.Series) -> dict[str, float | str]:
    """Early sensitivity of the model at its operating point minus the best baseline's at a
    false-alert rate no higher than the model's (NaN when no baseline point is that quiet)."""
    baselines = curve[
        (curve["rule"] != MODEL) & (curve["false_alerts_per_day"] <= point["false_alerts_per_day"])
    ].dropna(subset=["sensitivity_early"])
    if baselines.empty:
        return {"baseline": "", "baseline_knob": float("nan"), "margin": float("nan")}
    best = baselines.loc[baselines["sensitivity_early"].idxmax()]
    return {
        "baseline": str(best["rule"]),
        "baseline_knob": float(best["knob"]),
        "baseline_sensitivity_early": float(best["sensitivity_early"]),
        "margin": float(point["sensitivity_early"] - best["sensitivity_early"]),
    }
