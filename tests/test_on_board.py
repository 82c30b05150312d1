"""Insulin and carbs on board: the action curves and the derived input channels."""

import numpy as np
import pytest

from conftest import cohort_frame
from tailorml.config import TaskConfig
from tailorml.data.cohort import load_cohort
from tailorml.data.glucose import make_windows
from tailorml.data.on_board import carbs_remaining, derived_channel, insulin_remaining
from tailorml.errors import CohortError


def test_insulin_curve_starts_whole_ends_empty_and_acts_fastest_at_its_peak():
    assert insulin_remaining(np.array([-5.0, 0.0, 360.0, 400.0])).tolist() == pytest.approx(
        [1.0, 1.0, 0.0, 0.0], abs=1e-12
    )
    minutes = np.arange(0.0, 360.5, 0.5)
    remaining = insulin_remaining(minutes)
    assert np.all(np.diff(remaining) <= 1e-12)  # never increases
    activity = -np.diff(remaining)  # insulin acting per half minute
    assert minutes[np.argmax(activity)] == pytest.approx(75, abs=0.5)  # the 75-min peak


def test_carbs_absorb_linearly_over_three_hours():
    assert carbs_remaining(np.array([0, 90, 180, 240])).tolist() == [1.0, 0.5, 0.0, 0.0]


def test_on_board_sums_doses_by_their_remaining_fractions():
    insulin = np.zeros(100)
    insulin[0], insulin[10] = 2.0, 1.0  # 2 U at 0 min, 1 U at 50 min (5-min readings)
    iob = derived_channel("iob", insulin, 5)
    assert iob[0] == 2.0
    assert iob[10] == pytest.approx(2 * insulin_remaining(np.array([50.0]))[0] + 1.0)
    assert iob[72] == pytest.approx(1.0 * insulin_remaining(np.array([310.0]))[0])  # first gone
    assert iob[82] == 0.0


def test_a_missing_amount_makes_the_channel_missing_while_it_would_act():
    cho = np.zeros(60)
    cho[3] = np.nan
    cob = derived_channel("cob", cho, 5)
    # 3 h = 36 readings of influence: rows 3..38 unknown, row 39 known again
    assert np.isnan(cob[3:39]).all() and not np.isnan(cob[:3]).any()
    assert not np.isnan(cob[39:]).any()


def test_windows_read_carbs_on_board_from_the_cho_column(write_cohort):
    frame = cohort_frame({"a": [120.0] * 40}, sample_minutes=5)
    frame.loc[2, "cho"] = 30.0  # a 30 g meal at reading 2
    cohort = load_cohort(write_cohort(frame))
    windows = make_windows(
        cohort, TaskConfig(window_minutes=60, horizon_minutes=30, channels=["cgm", "cob"])
    )
    # window 0 covers readings 0..11: carbs on board 0, 0, 30, then 30 * (1 - 5k / 180)
    cob = windows.x[0, 1]
    assert cob[:2].tolist() == [0.0, 0.0]
    assert cob[2] == 30.0 and cob[11] == pytest.approx(30 * (1 - 45 / 180))
    assert windows.channels == ["cgm", "cob"]


def test_a_derived_channel_without_its_column_names_both(write_cohort):
    frame = cohort_frame({"a": [120.0] * 40}, sample_minutes=5).drop(columns="insulin")
    cohort = load_cohort(write_cohort(frame))
    task = TaskConfig(window_minutes=60, horizon_minutes=30, channels=["cgm", "iob"])
    with pytest.raises(CohortError, match="asks for 'iob' but the file has no 'insulin' column"):
        make_windows(cohort, task)
