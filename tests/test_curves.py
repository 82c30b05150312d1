"""The alerting trade-off curve and its baselines, on traces whose numbers follow by hand."""

import numpy as np
import pandas as pd
import pytest

from tailorml.evaluate import curves
from tailorml.policy import AlertPolicy

POLICY = AlertPolicy(sample_minutes=5)  # 30-min horizon, 15-min useful lead, 30-min snooze


def _trace(values):
    times = pd.Timestamp("2025-01-06") + pd.to_timedelta(np.arange(len(values)) * 5, unit="min")
    return pd.DataFrame({"patient_id": "p", "time": times, "cgm": np.asarray(values, float)})


def test_extrapolation_follows_the_30_minute_line_to_the_horizon():
    # falling 2 mg/dL per 5 min: from 150 the line reaches 150 - 2 * 6 = 138 in 30 min
    trace = _trace(150 + 2 * np.arange(10)[::-1])  # 168, 166, ..., 150
    result = curves.extrapolated(trace, trace["time"].to_numpy(), POLICY)
    assert np.isnan(result[:6]).all()  # fewer than 7 readings (30 min) before these times
    assert result[-1] == pytest.approx(150 - 12)
    assert result[6] == pytest.approx(trace["cgm"].iloc[6] - 12)


def test_a_missing_reading_in_the_last_30_minutes_raises_no_trend_alert():
    values = np.full(12, 100.0)
    values[8] = np.nan
    trace = _trace(values)
    result = curves.extrapolated(trace, trace["time"].to_numpy(), POLICY)
    assert np.isnan(result[8:]).all() and np.isfinite(result[6:8]).all()


def test_ar2_forecast_follows_nightscouts_recursion_by_hand():
    # log(100/140) = -0.33647, log(90/140) = -0.44183; one step:
    # -0.723 * -0.33647 + 1.716 * -0.44183 = -0.51492 -> 140 * exp(-0.51492) = 83.66 -> 84;
    # two steps: -0.723 * -0.44183 + 1.716 * -0.51492 = -0.56415 -> 79.64 -> 80
    assert curves.ar2_forecast([100.0], [90.0], 1)[0] == 84.0
    assert curves.ar2_forecast([100.0], [90.0], 2)[0] == 80.0
    # log(140/140) = 0 is the fixed point: a flat 140 stays 140 at any horizon
    assert curves.ar2_forecast([140.0], [140.0], 6)[0] == 140.0


def test_ar2_makes_no_forecast_below_36_or_without_a_reading_and_stays_within_36_400():
    forecast = curves.ar2_forecast([100.0, np.nan, 35.0, 300.0], [35.0, 90.0, 90.0, 390.0], 6)
    assert np.isnan(forecast[:3]).all()  # current or previous < 36 or missing
    assert forecast[3] == 400.0  # rising 90 mg/dL per 5 min: clipped to Nightscout's 400


def test_ar2_at_the_horizon_uses_the_reading_five_minutes_before_each_prediction():
    trace = _trace([150.0, 140.0, 128.0, 120.0])
    result = curves.ar2_at_horizon(trace, trace["time"].to_numpy(), POLICY)
    assert np.isnan(result[0])  # no reading before the first
    expected = curves.ar2_forecast([150.0, 140.0, 128.0], [140.0, 128.0, 120.0], 6)
    np.testing.assert_array_equal(result[1:], expected)
    on_15 = AlertPolicy(sample_minutes=15)  # AR2 is defined on 5-minute steps only
    assert np.isnan(curves.ar2_at_horizon(trace, trace["time"].to_numpy(), on_15)).all()


def _tables(values, p_hypo):
    trace = _trace(values)
    predictions = pd.DataFrame(
        {
            "patient_id": "p",
            "time": trace["time"],
            "current_cgm": trace["cgm"],
            "previous_cgm": trace["cgm"].shift(1),
            "y_true": 0,
            "p_hypo": p_hypo,
        }
    )
    return predictions, trace


def test_curve_of_a_falling_trace_by_hand():
    # 120 mg/dL for 4 h, a fall of 5 mg/dL per 5 min from 120 to 60, then 60 for 30 min
    values = [120.0] * 48 + list(np.arange(115.0, 55.0, -5.0)) + [60.0] * 6
    predictions, trace = _tables(values, np.zeros(len(values)))
    hypo = np.flatnonzero(np.asarray(values) < 70)
    predictions.loc[np.arange(len(values)) >= hypo[0] - 6, "y_true"] = POLICY.alert_index
    people = curves.people_from_tables(predictions, trace, POLICY)
    assert len(people) == 1 and len(people[0].events) == 1
    curve = curves.alert_curve(people, POLICY).set_index(["rule", "knob"])
    # the event starts at 65 mg/dL (reading 58, 290 min); 'CGM now <= 80' first fires at
    # reading 55 (80 mg/dL): 15 min ahead, early
    assert curve.loc[(curves.CGM_NOW, 80.0), "sensitivity_early"] == 1.0
    # 'CGM now <= 70' fires at reading 57 (70 mg/dL), 5 min ahead: caught, but not early
    assert curve.loc[(curves.CGM_NOW, 70.0), "sensitivity"] == 1.0
    assert curve.loc[(curves.CGM_NOW, 70.0), "sensitivity_early"] == 0.0
    # the trend rule first fires at reading 51 (100 mg/dL): the least-squares slope of
    # readings 45-51 (120, 120, 120, 115, 110, 105, 100) is -5/7 mg/dL per min, so it foresees
    # 100 - 30 * 5/7 = 78.6 <= 80 at the horizon, 35 min before the event: early
    assert curve.loc[(curves.EXTRAPOLATION, 80.0), "sensitivity_early"] == 1.0
    foreseen = curves.extrapolated(trace, trace["time"].to_numpy()[[50, 51]], POLICY)
    assert foreseen[1] == pytest.approx(100 - 30 * 5 / 7) and foreseen[0] > 80
    # the model never alerts (P = 0): nothing caught and no false alert
    assert curve.loc[(curves.MODEL, 0.5), "sensitivity"] == 0.0
    assert curve.loc[(curves.MODEL, 0.5), "false_alerts_per_day"] == 0.0


def test_margin_over_the_best_baseline_at_no_more_false_alerts():
    curve = pd.DataFrame(
        [
            ("model", 0.5, 0.80, 2.0),
            (curves.CGM_NOW, 80.0, 0.70, 1.5),
            (curves.CGM_NOW, 90.0, 0.95, 4.0),  # better but noisier: not comparable
            (curves.EXTRAPOLATION, 75.0, 0.60, 2.0),
        ],
        columns=["rule", "knob", "sensitivity_early", "false_alerts_per_day"],
    )
    point = curves.operating_point(curve, POLICY)
    margin = curves.margin_over_baselines(curve, point)
    assert margin["baseline"] == curves.CGM_NOW and margin["baseline_knob"] == 80.0
    assert margin["margin"] == pytest.approx(0.10)
