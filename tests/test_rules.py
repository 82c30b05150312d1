"""Rules judged side by side (`evaluate.rules`): baseline levels, summaries over people and
the margin, on tables whose numbers follow by hand."""

import numpy as np
import pandas as pd
import pytest

from tailorml.evaluate.curves import AR2, CGM_NOW, EXTRAPOLATION, MODEL
from tailorml.evaluate.rules import PERSONAL, POPULATION, baseline_levels, summarize


def _curve(rule, knobs, early, false):
    return pd.DataFrame(
        {"rule": rule, "knob": knobs, "sensitivity_early": early, "false_alerts_per_day": false}
    )


def test_each_baseline_takes_its_level_with_most_early_alerts_within_the_budget():
    curve = pd.concat(
        [
            _curve(CGM_NOW, [70.0, 75.0, 80.0], [0.1, 0.2, 0.3], [0.5, 0.9, 1.4]),
            _curve(EXTRAPOLATION, [40.0, 45.0], [0.3, 0.4], [1.2, 1.5]),  # never within 1
            _curve(AR2, [65.0, 70.0], [0.25, 0.25], [0.4, 0.6]),  # a tie: the quieter
        ]
    )
    assert baseline_levels(curve, 1.0) == {CGM_NOW: 75.0, EXTRAPOLATION: 40.0, AR2: 65.0}


def _person(pid, rule, knob, events, early, caught, alerts, false, days=10.0):
    return {
        "patient_id": pid,
        "rule": rule,
        "knob": knob,
        "skipped": "",
        "hypo_events": float(events),
        "hypo_sensitivity_early": early / events if events else np.nan,
        "hypo_sensitivity": caught / events if events else np.nan,
        "alerts": float(alerts),
        "false_alerts": float(false),
        "false_alerts_per_day": false / days,
    }


def test_a_summary_is_a_mean_over_people_precision_pooled_and_the_margin_at_no_more_alarms():
    rows = [
        # model: a catches 3 of 4 early, b 1 of 2; 10 alerts of which 4 false over 20 days
        _person("a", POPULATION, 0.9, 4, 3, 4, 6, 2),
        _person("b", POPULATION, 0.9, 2, 1, 2, 4, 2),
        _person("c", POPULATION, 0.9, 0, 0, 0, 1, 1),  # no low: no sensitivity, still alarms
        _person("a", PERSONAL, 0.8, 4, 4, 4, 8, 4),
        _person("b", PERSONAL, 0.8, 2, 2, 2, 6, 4),
        _person("c", PERSONAL, 0.8, 0, 0, 0, 2, 2),
        _person("a", CGM_NOW, 75.0, 4, 1, 4, 3, 1),
        _person("b", CGM_NOW, 75.0, 2, 0, 2, 2, 0),
        _person("c", CGM_NOW, 75.0, 0, 0, 0, 0, 0),
    ]
    summary = summarize(pd.DataFrame(rows), pd.DataFrame(), samples=200).set_index("rule")
    population = summary.loc[POPULATION]
    assert population["people"] == 3 and population["people_with_lows"] == 2
    assert population["sensitivity_early"] == pytest.approx((0.75 + 0.5) / 2)
    # false alerts per day: (0.2 + 0.2 + 0.1) / 3; precision pooled: (11 - 5) / 11
    assert population["false_alerts_per_day"] == pytest.approx(0.5 / 3)
    assert population["alert_precision"] == pytest.approx(6 / 11)
    assert population["worst_decile_sensitivity_early"] == 0.5  # one of two people
    # CGM now: early (0.25 + 0) / 2 at 0.1 / 3 a day, quieter than the model: margin 0.5
    assert population["baseline"] == CGM_NOW
    assert population["margin"] == pytest.approx(0.625 - 0.125)
    personal = summary.loc[PERSONAL]
    assert personal["sensitivity_early"] == 1.0 and personal["margin"] == pytest.approx(0.875)
    assert np.isnan(summary.loc[CGM_NOW, "margin"])  # margins are the model's only


def test_a_curve_level_of_a_baseline_counts_when_it_is_quieter_and_better():
    rows = [_person("a", POPULATION, 0.9, 4, 2, 4, 4, 1)]  # early 0.5 at 0.1 a day
    curve = pd.concat(
        [
            _curve(MODEL, [0.9], [0.5], [0.1]),
            _curve(EXTRAPOLATION, [50.0, 55.0], [0.45, 0.7], [0.08, 0.3]),
        ]
    )
    summary = summarize(pd.DataFrame(rows), curve, samples=200).set_index("rule")
    row = summary.loc[POPULATION]
    assert row["baseline"] == f"{EXTRAPOLATION} (k = 50 for everyone)"
    assert row["margin"] == pytest.approx(0.05)
