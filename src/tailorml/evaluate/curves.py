"""Sensitivity against false alerts per day — the alerting analogue of the ROC curve — for a
model and for rules that need no learning, all with the same event metrics.

CGM users judge an alarm by the lows it catches in time and by how often it cries wolf, so
every rule is swept over its knob (the model over its probability threshold, the rules over
a glucose level) and each point is the mean over individuals of early sensitivity (events
alerted at least `useful_lead_minutes` ahead), any-lead sensitivity and false alerts/day.

Baselines (what commercial receivers do without a model):
- *CGM now*: alert when the current reading is at or below k mg/dL;
- *linear extrapolation*: alert when the least-squares line through the last 30 min of
  readings reaches k mg/dL or less at the horizon (the "predictive low" alert);
- *Nightscout AR2*: alert when Nightscout's AR(2) forecast reaches k mg/dL or less at the
  horizon — what Nightscout users see today (`ar2_forecast`).

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

from tailorml.alerts import Event, held_on
from tailorml.config import threshold_grid
from tailorml.errors import TailormlError
from tailorml.policy import AlertPolicy

MODEL = "model"
CGM_NOW = "CGM now ≤ k"
EXTRAPOLATION = "30-min trend at horizon ≤ k"
AR2 = "Nightscout AR2 at horizon ≤ k"
BASELINES = (CGM_NOW, EXTRAPOLATION, AR2)
PROBABILITY_KNOBS = np.array(threshold_grid())
GLUCOSE_KNOBS = np.arange(40.0, 145.0, 5.0)


@dataclass
class Person:
    """What one individual's alerts are judged on."""

    events: list[Event]
    times: np.ndarray  # prediction times
    label_is_hypo: np.ndarray
    current_cgm: np.ndarray
    previous_cgm: np.ndarray  # the reading one interval before each prediction
    scores: dict[str, np.ndarray]  # rule -> score; positive when score >= knob

    def positive(self, rule: str, knob: float, policy: AlertPolicy) -> np.ndarray:
        """Which predictions `rule` calls positive at `knob`: the model with the policy's
        hysteresis (and urgent lows) at threshold `knob`, a baseline when its score
        reaches it (a missing score never does)."""
        if rule == MODEL:
            probability = np.nan_to_num(self.scores[MODEL], nan=-np.inf)
            urgent = policy.urgent_lows(self.current_cgm, self.previous_cgm)
            return held_on(probability, knob, policy.hysteresis, urgent)
        return np.nan_to_num(self.scores[rule], nan=-np.inf) >= knob

    def metrics(
        self, rule: str, knob: float, policy: AlertPolicy, intervals: bool = True
    ) -> dict[str, float]:
        """The alert metrics of `rule` at `knob` on this person, under `policy`."""
        return policy.metrics_of_alerts(
            self.events,
            self.times,
            self.positive(rule, knob, policy),
            self.label_is_hypo,
            self.current_cgm,
            self.previous_cgm,
            intervals=intervals,
        )


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
        if "previous_cgm" not in predicted:
            raise TailormlError(
                "the predictions table has no previous_cgm column: it was written by an "
                "older tailorml; run the evaluation again to judge its alerts"
            )
        people.append(
            Person(
                events=policy.hypo_events(trace["time"].to_numpy(), trace["cgm"].to_numpy()),
                times=times,
                label_is_hypo=predicted["y_true"].to_numpy() == policy.alert_index,
                current_cgm=current,
                previous_cgm=predicted["previous_cgm"].to_numpy(dtype=float),
                scores={
                    MODEL: predicted[f"p_{policy.alert_class}"].to_numpy(),
                    CGM_NOW: -current,
                    EXTRAPOLATION: -extrapolated(trace, times, policy),
                    AR2: -ar2_at_horizon(trace, times, policy),
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


# Nightscout's AR2 forecast (cgm-remote-monitor, lib/plugins/ar2.js): an AR(2) model of
# log(glucose / 140) on 5-minute steps with fixed coefficients, forecasts rounded to whole
# mg/dL and held within 36-400; no forecast when either reading is below 36.
AR2_COEFFICIENTS = (-0.723, 1.716)  # weights of the reading 5 min ago and of the current one
AR2_REFERENCE_MGDL = 140.0
AR2_LIMITS_MGDL = (36.0, 400.0)
AR2_STEP_MINUTES = 5


def ar2_forecast(previous: np.ndarray, current: np.ndarray, steps: int) -> np.ndarray:
    """Nightscout's AR2 forecast `steps` x 5 minutes ahead from the reading 5 minutes ago
    and the current one (mg/dL); NaN where Nightscout makes none (a reading below 36 or
    missing). Rounded half up, as JavaScript's Math.round, and clipped to 36-400."""
    previous, current = np.asarray(previous, float), np.asarray(current, float)
    low, high = AR2_LIMITS_MGDL
    valid = (previous >= low) & (current >= low)  # NaN compares False: no forecast
    before = np.log(np.where(valid, previous, AR2_REFERENCE_MGDL) / AR2_REFERENCE_MGDL)
    now = np.log(np.where(valid, current, AR2_REFERENCE_MGDL) / AR2_REFERENCE_MGDL)
    weight_before, weight_now = AR2_COEFFICIENTS
    for _ in range(steps):
        before, now = now, weight_before * before + weight_now * now
    forecast = np.clip(np.floor(AR2_REFERENCE_MGDL * np.exp(now) + 0.5), low, high)
    return np.where(valid, forecast, np.nan)


def ar2_at_horizon(trace: pd.DataFrame, times: np.ndarray, policy: AlertPolicy) -> np.ndarray:
    """Nightscout's AR2 forecast at the policy's horizon for each prediction time; NaN (no
    alert) on grids other than 5 minutes, for which the rule is not defined."""
    if policy.sample_minutes != AR2_STEP_MINUTES or policy.horizon_minutes % AR2_STEP_MINUTES:
        return np.full(len(times), np.nan)
    cgm = trace["cgm"].to_numpy(dtype=float)
    rows = np.searchsorted(trace["time"].to_numpy(), np.asarray(times))
    previous = np.where(rows >= 1, cgm[np.maximum(rows - 1, 0)], np.nan)
    return ar2_forecast(previous, cgm[rows], policy.horizon_minutes // AR2_STEP_MINUTES)


def sweep(people: list[Person], policy: AlertPolicy, rule: str, knobs) -> pd.DataFrame:
    """One row per knob of `rule`: mean early and any-lead sensitivity and mean false
    alerts per day over individuals (events counted only where some were evaluable), and
    the pooled counts behind them (for bounds that need counts, e.g. a personal threshold)."""
    rows = []
    for knob in knobs:
        table = pd.DataFrame(
            [person.metrics(rule, knob, policy, intervals=False) for person in people]
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
            sweep(people, policy, AR2, -GLUCOSE_KNOBS),
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
