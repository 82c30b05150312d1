"""The global-model job's evaluation (pipeline.evaluate_individuals) on a hand-made cohort:
one low in the test period, predictions from an oracle or from a silent model, metrics
counted by hand."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from conftest import cohort_frame
from tailorml.config import config_from_dict
from tailorml.data.glucose import CLASSES, HYPO
from tailorml.data.prepared import prepare
from tailorml.evaluate.individuals import evaluate_individuals
from tailorml.policy import AlertPolicy

N_READINGS = 600  # 50 h at 5 min


@pytest.fixture
def prepared(tmp_path):
    """One patient at 120 mg/dL with a single 20-min low (4 readings of 60) placed 60
    readings into the test part; 5-minute grid, 2-h windows, 30-min horizon."""
    flat = cohort_frame({"p1": [120.0] * N_READINGS}, sample_minutes=5)
    path = tmp_path / "flat.csv"
    flat.to_csv(path, index=False)
    config = config_from_dict({"cohort": {"path": str(path)}})
    test_start, _ = prepare(config).splits.boundaries["p1"]["test"]
    values = [120.0] * N_READINGS
    low_at = test_start + 60
    values[low_at : low_at + 4] = [60.0] * 4
    cohort_frame({"p1": values}, sample_minutes=5).to_csv(path, index=False)
    result = prepare(config)
    return result, AlertPolicy.from_config(config, 5), low_at


def _probabilities(prepared, hypo: np.ndarray) -> np.ndarray:
    probabilities = np.zeros((len(prepared.windows), len(CLASSES)))
    probabilities[:, 0] = 1.0
    probabilities[hypo, 0], probabilities[hypo, HYPO] = 0.1, 0.9
    return probabilities


def test_an_oracle_catches_the_low_30_minutes_ahead_with_two_alerts(prepared):
    prepared, policy, low_at = prepared
    oracle = np.flatnonzero(prepared.windows.y == HYPO)
    per_individual, predictions, readings = evaluate_individuals(
        policy, prepared, _probabilities(prepared, oracle)
    )
    row = per_individual.iloc[0]
    # positives are the windows whose 30-min horizon reaches a low reading: prediction times
    # from 30 min before the low to 5 min before its last reading, 9 predictions 5 min
    # apart; a 30-min snooze turns them into 2 alerts (start - 30, start), none false
    assert row["hypo_windows"] == 9
    assert (row["hypo_events"], row["hypo_caught"], row["hypo_sensitivity"]) == (1, 1, 1.0)
    assert row["median_lead_minutes"] == 30.0
    assert (row["alerts"], row["false_alerts"]) == (2, 0)
    assert row["accuracy"] == 1.0
    assert row["monitored_days"] == pytest.approx(row["windows"] * 5 / 1440)
    # the tables the report reads: every test window once, the trace of the test part
    start, end = prepared.splits.boundaries["p1"]["test"]
    assert len(predictions) == row["windows"] and len(readings) == end - start
    assert (readings["cgm"] < 70).sum() == 4
    low_time = prepared.cohort.of("p1")["time"].iloc[low_at]
    first_alert = predictions.loc[predictions["y_pred"] == HYPO, "time"].min()
    assert low_time - first_alert == pd.Timedelta(minutes=30)


def test_a_silent_model_misses_the_low_and_raises_nothing(prepared):
    prepared, policy, _ = prepared
    per_individual, _, _ = evaluate_individuals(
        policy, prepared, _probabilities(prepared, np.array([], dtype=int))
    )
    row = per_individual.iloc[0]
    assert (row["hypo_events"], row["hypo_caught"], row["hypo_sensitivity"]) == (1, 0, 0.0)
    assert np.isnan(row["median_lead_minutes"])
    # no model alert; the fall from 120 to 60 mg/dL is an urgent low the model cannot
    # silence: one alert at the event's start (not before it: not a catch), never false
    assert (row["alerts"], row["false_alerts"]) == (1, 0)


def test_evaluation_follows_the_policy_it_is_given(prepared):
    """A longer event definition (>= 30 min below 70) leaves the 20-min low uncounted, and a
    higher threshold turns every positive into no alert but the urgent low at the event's
    start (120 -> 60 mg/dL): the policy decides, not the config."""
    prepared, policy, _ = prepared
    probabilities = _probabilities(prepared, np.flatnonzero(prepared.windows.y == HYPO))
    longer = replace(policy, event_min_minutes=30)
    row = evaluate_individuals(longer, prepared, probabilities)[0].iloc[0]
    assert row["hypo_events"] == 0 and np.isnan(row["hypo_sensitivity"])
    strict = policy.with_threshold(0.95)
    row = evaluate_individuals(strict, prepared, probabilities)[0].iloc[0]
    assert (row["alerts"], row["hypo_caught"]) == (1, 0)
