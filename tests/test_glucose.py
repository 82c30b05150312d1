import numpy as np
import pytest

from conftest import cohort_frame
from tailorml.config import TaskConfig
from tailorml.data.cohort import load_cohort
from tailorml.data.glucose import (
    HYPER,
    HYPO,
    IN_RANGE,
    hypo_lead,
    label_future,
    make_windows,
)
from tailorml.errors import CohortError, ConfigError

# 4 readings in (12 min), 2 readings ahead (6 min) at 3-minute sampling
TASK = TaskConfig(window_minutes=12, horizon_minutes=6)
TRACE = [100, 100, 100, 100, 65, 100, 100, 100, 260, 100, 100, 100]


def test_label_rules_and_strict_thresholds():
    future = np.array([[65, 300], [70, 250], [100, 251], [69.9, 100]], dtype=float)
    assert label_future(future, 70, 250).tolist() == [HYPO, IN_RANGE, HYPER, HYPO]


def test_windows_of_a_hand_made_trace(write_cohort):
    cohort = load_cohort(write_cohort(cohort_frame({"a": TRACE})))
    windows = make_windows(cohort, TASK)
    # starts 0..6; the horizon of start s is readings s+4, s+5
    assert windows.y.tolist() == [HYPO, IN_RANGE, IN_RANGE, HYPER, HYPER, IN_RANGE, IN_RANGE]
    assert windows.x.shape == (7, 1, 4)
    assert windows.x[3, 0].tolist() == [100, 65, 100, 100]  # readings 3..6
    # prediction time = time of the window's last reading: start 0 -> reading 3 -> 9 min
    first = (windows.time[0] - cohort.of("a")["time"].iloc[0]) / np.timedelta64(1, "m")
    assert first == 9
    assert windows.current_cgm.tolist() == [100, 65, 100, 100, 100, 260, 100]
    # start 0's horizon is readings 4 (65) and 5: the low is one reading = 3 min ahead
    lead = windows.hypo_lead_minutes
    assert lead[0] == 3 and np.isnan(lead[1:]).all()


def test_hypo_lead_is_the_first_low_reading_of_the_horizon():
    future = np.array([[100, 65, 60], [69, 100, 50], [70, 80, 90]], dtype=float)
    lead = hypo_lead(future, 70, sample_minutes=5)
    assert lead[:2].tolist() == [10, 5] and np.isnan(lead[2])  # 70 is not below 70


def test_windows_with_gaps_are_dropped_and_counted(write_cohort):
    trace = list(TRACE)
    trace[5] = np.nan
    cohort = load_cohort(write_cohort(cohort_frame({"a": trace})))
    windows = make_windows(cohort, TASK)
    # inputs of starts 2..5 contain reading 5; horizons of starts 0, 1 contain it
    assert windows.dropped["a"] == {"windows": 7, "gap_in_input": 4, "gap_in_horizon": 2}
    assert windows.row.tolist() == [6]


def test_optional_channels_are_stacked_in_order(write_cohort):
    frame = cohort_frame({"a": TRACE})
    frame["insulin"] = np.arange(len(frame), dtype=float)
    cohort = load_cohort(write_cohort(frame))
    windows = make_windows(
        cohort, TaskConfig(window_minutes=12, horizon_minutes=6, channels=["cgm", "insulin"])
    )
    assert windows.x.shape == (7, 2, 4)
    assert windows.x[2, 1].tolist() == [2, 3, 4, 5]


def test_missing_channel_column_is_a_clear_error(write_cohort):
    frame = cohort_frame({"a": TRACE}).drop(columns=["insulin"])
    cohort = load_cohort(write_cohort(frame))
    with pytest.raises(CohortError, match="asks for 'insulin'"):
        make_windows(cohort, TaskConfig(channels=["cgm", "insulin"]))


def test_window_must_be_a_multiple_of_the_sampling_interval(write_cohort):
    cohort = load_cohort(write_cohort(cohort_frame({"a": TRACE})))
    with pytest.raises(ConfigError, match="window_minutes = 10 is not a multiple"):
        make_windows(cohort, TaskConfig(window_minutes=10, horizon_minutes=6))
