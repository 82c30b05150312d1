"""One grid: the service's live windows and the importers' cohorts put the same readings on
the same slots (`tailorml.data.grid`), with jitter, repeated uploads and gaps."""

import numpy as np
import pandas as pd

from tailorml.data.importers.common import (
    ImportedReadings,
    build_cohort,
    events_frame,
    readings_frame,
)
from tailorml.service.live import on_grid, summed_on_grid

T0 = pd.Timestamp("2025-01-06 08:00:00")
MIN_MS = 60_000
STEP_MS = 5 * MIN_MS


def _ms(times) -> np.ndarray:
    return (pd.DatetimeIndex(times) - pd.Timestamp(0)) // pd.Timedelta(milliseconds=1)


def _both(minutes, values, event_minutes=(), amounts=()):
    """The importers' grid (from the first reading) and the service's window ending at the
    last reading (which sits on a slot of the importers' grid), over the same slots."""
    times = T0 + pd.to_timedelta(np.asarray(minutes, dtype=float), unit="min")
    parsed = ImportedReadings(
        format="test",
        source="alice.csv",
        readings=readings_frame(times, values),
        events=events_frame(
            T0 + pd.to_timedelta(np.asarray(event_minutes, dtype=float), unit="min"),
            "insulin",
            amounts,
        ),
    )
    cohort = build_cohort([parsed], grid_minutes=5, person_id="alice", keep_ids=True).frame
    assert cohort["time"].iloc[0] == T0
    slots = _ms(cohort["time"])
    service = on_grid(_ms(times), np.asarray(values, dtype=float), slots, STEP_MS)
    return cohort, slots, service


def test_jitter_repeated_uploads_and_gaps_land_on_the_same_slots():
    # Dexcom drifting by up to 40 s; 08:10 uploaded twice; 08:20-08:30 missing (a gap);
    # a reading 2.4 min off its slot (still nearest to it); the window ends at 08:45
    minutes = [0, 5 + 40 / 60, 10 - 35 / 60, 10 - 35 / 60, 15 + 20 / 60, 35 - 2.4, 40, 45]
    values = [100.0, 104.0, 108.0, 108.0, 112.0, 120.0, 124.0, 128.0]
    cohort, _, service = _both(minutes, values)
    expected = [100.0, 104.0, 108.0, 112.0, np.nan, np.nan, np.nan, 120.0, 124.0, 128.0]
    np.testing.assert_array_equal(cohort["cgm"].to_numpy(), expected)
    np.testing.assert_array_equal(service, expected)


def test_events_sum_into_the_interval_ending_at_each_slot_in_both():
    minutes = [0, 5, 10, 15, 20]
    values = [100.0, 101.0, 102.0, 103.0, 104.0]
    doses = [0, 0.5, 5, 9.9, 12, 20]  # 08:00 in slot 0; (08:00, 08:05] in slot 1; ...
    amounts = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    cohort, slots, _ = _both(minutes, values, doses, amounts)
    service = summed_on_grid(
        _ms(T0 + pd.to_timedelta(doses, unit="min")), np.asarray(amounts), slots, STEP_MS
    )
    np.testing.assert_array_equal(cohort["insulin"].to_numpy(), [1.0, 6.0, 8.0, 16.0, 32.0])
    np.testing.assert_array_equal(service, cohort["insulin"].to_numpy())


def test_a_crowded_slot_keeps_the_earlier_offline_and_the_nearer_live():
    # 08:08 and 08:10 both belong to the 08:10 slot: the cohorts keep the earlier (the
    # published figures are built so); the service keeps the reading on the slot, so the
    # reading being decided is its own window's newest value
    cohort, _, service = _both([0, 5, 8, 10], [100.0, 104.0, 90.0, 108.0])
    np.testing.assert_array_equal(cohort["cgm"].to_numpy(), [100.0, 104.0, 90.0])
    np.testing.assert_array_equal(service, [100.0, 104.0, 108.0])
