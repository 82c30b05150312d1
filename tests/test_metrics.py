import math

import numpy as np
import pandas as pd
import pytest

from tailorml.evaluate.metrics import classification_metrics, spread


def test_classification_metrics_by_hand():
    result = classification_metrics(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 1, 0, 1, 0, 2]))
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["recall_in_range"] == pytest.approx(2 / 3)
    assert result["recall_hypo"] == pytest.approx(1 / 2)
    assert result["recall_hyper"] == pytest.approx(1.0)
    assert result["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)


def test_absent_class_is_nan_and_left_out_of_balanced_accuracy():
    result = classification_metrics(np.array([0, 0, 1]), np.array([0, 2, 1]))
    assert math.isnan(result["recall_hyper"])
    assert result["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)


def test_zero_samples_is_an_error():
    with pytest.raises(ValueError, match="zero samples"):
        classification_metrics(np.array([], dtype=int), np.array([], dtype=int))


def test_spread_across_individuals_ignores_nan():
    table = pd.DataFrame({"m": [1.0, 2.0, 3.0, np.nan]})
    row = spread(table, ["m"]).loc["m"]
    assert (row["mean"], row["sd"], row["min"], row["max"], row["n"]) == (2.0, 1.0, 1.0, 3.0, 3)


def test_alert_metrics_per_group_pool_the_counts_with_exact_intervals():
    """Two children (2 + 1 hypo events, 2 + 0 caught, 1 + 0 early; 4 + 6 alerts of which
    2 + 6 false; 1 + 1 days) and one adolescent (1 false alert in 2 days)."""
    from tailorml.evaluate.individuals import group_alert_metrics

    table = pd.DataFrame(
        {
            "patient_id": ["c1", "c2", "a1", "skipped"],
            "group": ["child", "child", "adolescent", "child"],
            "hypo_events": [2, 1, 0, float("nan")],
            "hypo_caught": [2, 0, 0, float("nan")],
            "hypo_caught_early": [1, 0, 0, float("nan")],
            "alerts": [4, 6, 1, float("nan")],
            "false_alerts": [2, 6, 1, float("nan")],
            "monitored_days": [1.0, 1.0, 2.0, float("nan")],
            "skipped": ["", "", "", "no complete test window"],
        }
    )
    groups = group_alert_metrics(table).set_index("group")
    child, adolescent = groups.loc["child"], groups.loc["adolescent"]
    assert child["hypo_events"] == 3
    assert child["hypo_sensitivity"] == pytest.approx(2 / 3)
    assert (child["hypo_sensitivity_low"], child["hypo_sensitivity_high"]) == pytest.approx(
        (0.09430, 0.99160), abs=1e-4
    )
    assert child["hypo_sensitivity_early"] == pytest.approx(1 / 3)
    # 8 false alerts in 2 days (not the mean of 2/day and 6/day weighted otherwise)
    assert child["hypo_false_alerts_per_day"] == 4.0
    assert child["hypo_false_alerts_per_day_low"] == pytest.approx(3.45383 / 2, abs=1e-4)
    assert child["hypo_false_alerts_per_day_high"] == pytest.approx(15.76319 / 2, abs=1e-4)
    # 2 of 10 alerts followed by a low
    assert child["hypo_alert_precision"] == pytest.approx(0.2)
    assert child["hypo_alert_precision_low"] == pytest.approx(0.02521, abs=1e-4)
    assert adolescent["hypo_false_alerts_per_day"] == 0.5
    assert np.isnan(adolescent["hypo_sensitivity"])  # no event: no sensitivity
    assert "hyper_false_alerts_per_day" not in groups  # no hyper columns, no hyper metrics
