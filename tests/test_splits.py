import numpy as np
import pytest

from conftest import cohort_frame
from tailorml.config import SplitConfig, TaskConfig
from tailorml.data.cohort import load_cohort
from tailorml.data.glucose import make_windows
from tailorml.data.splits import EMPTY_PART, split_windows
from tailorml.errors import ConfigError

TASK = TaskConfig(window_minutes=12, horizon_minutes=6)  # span: 6 readings


@pytest.fixture
def prepared(write_cohort):
    rng = np.random.default_rng(0)
    traces = {name: list(rng.uniform(80, 200, 200)) for name in ("a", "b")}
    cohort = load_cohort(write_cohort(cohort_frame(traces)))
    return cohort, make_windows(cohort, TASK)


def test_part_sizes_are_hand_computed(prepared):
    cohort, windows = prepared
    splits = split_windows(cohort, windows, SplitConfig())
    # gap = 6 rows; usable = 200 - 12 = 188; train 113 rows, val 38 rows, test the rest
    assert splits.boundaries["a"] == {"train": (0, 113), "val": (119, 157), "test": (163, 200)}
    starts = {part: windows.row[splits.of("a", part)] for part in ("train", "val", "test")}
    assert starts["train"].tolist() == list(range(0, 108))  # s + 6 <= 113
    assert starts["val"].tolist() == list(range(119, 152))
    assert starts["test"].tolist() == list(range(163, 195))


def test_parts_share_no_reading_and_keep_the_gap(prepared):
    cohort, windows = prepared
    splits = split_windows(cohort, windows, SplitConfig())
    span = windows.length + windows.horizon
    for individual in ("a", "b"):
        rows = {
            part: {r for s in windows.row[splits.of(individual, part)] for r in range(s, s + span)}
            for part in ("train", "val", "test")
        }
        assert not rows["train"] & rows["val"]
        assert not rows["val"] & rows["test"]
        assert min(rows["val"]) - max(rows["train"]) > splits.gap_rows
        assert min(rows["test"]) - max(rows["val"]) > splits.gap_rows


def test_general_data_is_the_training_data_of_the_others(prepared):
    cohort, windows = prepared
    splits = split_windows(cohort, windows, SplitConfig())
    general = splits.general("a")
    assert set(windows.individual[general]) == {windows.ids.index("b")}
    assert sorted(general.tolist()) == sorted(splits.of("b", "train").tolist())


def test_a_gap_shorter_than_window_plus_horizon_is_refused(prepared):
    cohort, windows = prepared
    with pytest.raises(ConfigError, match="would straddle parts and leak"):
        split_windows(cohort, windows, SplitConfig(gap_minutes=15))


def test_no_validation_part(prepared):
    cohort, windows = prepared
    splits = split_windows(cohort, windows, SplitConfig(train=0.7, val=0.0, test=0.3))
    assert len(splits.of("a", "val")) == 0
    assert splits.boundaries["a"]["train"] == (0, 136)  # round(194 * 0.7)
    assert splits.boundaries["a"]["test"] == (142, 200)


def test_a_part_with_no_window_for_anyone_is_refused_before_training(prepared):
    cohort, windows = prepared
    # usable = 200 - 2 gaps of 6 = 188 rows; val = round(0.02 * 188) = 4 rows < span 6, so no
    # individual has a val window; 0.04 gives round(7.52) = 8 rows >= 6: ceil(100 * 6/188)/100
    config = SplitConfig(train=0.96, val=0.02, test=0.02)
    with pytest.raises(ConfigError) as error:
        split_windows(cohort, windows, config)
    assert str(error.value) == EMPTY_PART.format(
        part="val", fraction=0.02, rows=4, span=6, needed=0.04
    )
    splits = split_windows(cohort, windows, SplitConfig(train=0.92, val=0.04, test=0.04))
    assert len(splits.of("a", "val")) == 8 - 6 + 1


def test_a_zero_val_fraction_is_allowed_to_be_empty(prepared):
    cohort, windows = prepared
    splits = split_windows(cohort, windows, SplitConfig(train=0.8, val=0.0, test=0.2))
    assert len(splits.pooled("val")) == 0
