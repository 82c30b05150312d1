"""Readings on a grid (`tailorml.data.grid`): slots, collisions, conflicts and events by hand."""

from collections import Counter

import numpy as np
import pandas as pd

from tailorml.data.grid import place_readings, sum_events

T0 = pd.Timestamp("2025-01-06 08:00:40")


def _readings(minutes, values, rank=None):
    frame = pd.DataFrame({"time": T0 + pd.to_timedelta(minutes, unit="min"), "cgm": values})
    if rank is not None:
        frame["rank"] = rank
    return frame


def test_readings_snap_to_the_nearest_slot_from_the_first_minute_and_gaps_stay_empty():
    counts = Counter()
    # origin 08:00 (08:00:40 floored); 08:05:40 -> slot 1; 08:19:10 (18.5 min) -> slot 4
    grid = place_readings(_readings([0, 5, 18.5], [100.0, 104.0, 120.0]), 5, counts)
    assert grid.origin == pd.Timestamp("2025-01-06 08:00:00")
    np.testing.assert_array_equal(grid.values, [100.0, 104.0, np.nan, np.nan, 120.0])
    assert counts == Counter({"empty_slots": 2, "slot_collisions_dropped": 0})


def test_two_readings_in_one_slot_keep_the_lower_rank_then_the_earlier():
    counts = Counter()
    # 08:05:40 (rank 1, a scan) and 08:06:40 (rank 0, history) share slot 1: history wins
    readings = _readings([0, 5, 6, 10], [100.0, 111.0, 104.0, 108.0], rank=[0, 1, 0, 0])
    grid = place_readings(readings, 5, counts)
    np.testing.assert_array_equal(grid.values, [100.0, 104.0, 108.0])
    assert counts["slot_collisions_dropped"] == 1


def test_readings_closer_than_half_an_interval_that_disagree_blank_their_slots():
    counts = Counter()
    # two sensors at once: 100 at 08:05:40 and 180 at 08:06:40 (1 min apart, 80 mg/dL
    # apart); at 08:10:40 and 08:11:40 108 and 112 agree within 20 mg/dL
    readings = _readings([0, 5, 6, 10, 11], [98.0, 100.0, 180.0, 108.0, 112.0])
    grid = place_readings(readings, 5, counts, conflict_mgdl=20.0)
    # 08:11:40 is 11.67 min from 08:00 -> slot 2 (2.33): a collision with 08:10:40, earlier kept
    np.testing.assert_array_equal(grid.values, [98.0, np.nan, 108.0])
    assert counts["conflicting_readings_blanked"] == 2
    assert counts["slot_collisions_dropped"] == 2
    # without the rule the first reading of the slot is kept, as the importers do
    plain = place_readings(readings, 5, Counter())
    np.testing.assert_array_equal(plain.values, [98.0, 100.0, 108.0])


def test_events_sum_into_the_interval_ending_at_each_slot_and_outside_ones_are_counted():
    grid = place_readings(_readings([0, 5, 10], [100.0, 100.0, 100.0]), 5, Counter())
    times = pd.Series(pd.to_datetime(["2025-01-06 08:03", "2025-01-06 08:05", "2025-01-06 08:20"]))
    totals, outside = sum_events(grid, times, np.array([2.0, 3.0, 9.0]))
    # (08:00, 08:05] -> slot 1 holds 2 + 3; 08:20 is past the last slot (08:10)
    np.testing.assert_array_equal(totals, [0.0, 5.0, 0.0])
    assert outside == 1
