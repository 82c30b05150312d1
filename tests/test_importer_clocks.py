"""Clocks nobody checked, in the importers: one bad timestamp never sets a cohort's span or
memory. A date in seconds, -1 or 1e20 in a Nightscout file is counted and dropped; a
receiver clock reset to another year drops the few readings far from the rest, or refuses a
span of decades in one line."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest

from tailorml.data.importers import import_cohort
from tailorml.data.importers.common import plausible_times
from tailorml.errors import CohortError, TailormlError

START_MS = 1_704_441_600_000  # 2024-01-05 08:00 UTC


def entries(count: int, every_minutes: int = 5) -> list[dict]:
    return [
        {
            "type": "sgv",
            "sgv": 100 + i % 7,
            "date": START_MS + i * every_minutes * 60_000,
            "utcOffset": 0,
        }
        for i in range(count)
    ]


def imported(tmp_path, records):
    path = tmp_path / "ns_entries.json"
    path.write_text(json.dumps(records))
    return import_cohort([path], tmp_path / "out.parquet", salt="s")


def test_dates_in_seconds_are_counted_and_dropped_not_read_as_1970(tmp_path):
    records = entries(288)  # one day every 5 min
    for record in records[::2]:  # half the file in seconds
        record["date"] //= 1000
    result = imported(tmp_path, records)
    assert result.notes["dates_in_seconds_dropped"] == 144
    assert result.notes.get("slot_collisions_dropped", 0) == 0
    frame = result.frame
    assert frame["time"].min() >= pd.Timestamp("2024-01-05")
    # 144 readings every 10 min: 287 slots of 5 min, every other one empty
    assert len(frame) == 287 and frame["cgm"].notna().sum() == 144


@pytest.mark.parametrize("bad", [-1, 1e20, 0, 4_102_444_800_000 * 10])
def test_an_impossible_date_is_counted_never_a_traceback_or_a_decade_grid(tmp_path, bad):
    records = entries(100)
    records[40]["date"] = bad
    result = imported(tmp_path, records)
    assert result.notes["dates_out_of_range_dropped"] == 1
    assert len(result.frame) == 100  # the span of the 100 good readings, not of 1970


def test_a_file_of_only_bad_dates_says_so(tmp_path):
    records = entries(10)
    for record in records:
        record["date"] = -5
    with pytest.raises(CohortError, match="no sgv record has a usable time"):
        imported(tmp_path, records)


def test_a_huge_integer_is_a_clear_error(tmp_path):
    path = tmp_path / "ns_entries.json"
    path.write_text('[{"type": "sgv", "sgv": 1' + "0" * 5000 + ', "date": 1}]')
    with pytest.raises(CohortError, match="a number in the file is too long"):
        import_cohort([path], tmp_path / "out.parquet", salt="s")


def frame_at(times: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"time": pd.to_datetime(times, format="mixed"), "cgm": 100.0})


def test_a_few_readings_of_a_clock_reset_are_dropped_as_far_from_the_rest():
    main = pd.date_range("2024-03-01", periods=500, freq="5min").astype(str).tolist()
    reset = ["2000-01-01 00:00", "2000-01-01 00:05", "2000-01-01 00:10"]
    notes: Counter = Counter()
    kept = plausible_times(frame_at(reset + main), "p", notes)
    assert len(kept) == 500 and kept["time"].min() == pd.Timestamp("2024-03-01")
    assert notes["readings_far_from_the_rest_dropped"] == 3


def test_two_real_sensor_periods_months_apart_are_both_kept():
    spring = pd.date_range("2024-03-01", periods=300, freq="5min").astype(str).tolist()
    autumn = pd.date_range("2024-10-01", periods=200, freq="5min").astype(str).tolist()
    notes: Counter = Counter()
    assert len(plausible_times(frame_at(spring + autumn), "p", notes)) == 500
    assert notes["readings_far_from_the_rest_dropped"] == 0


def test_half_the_readings_a_clock_reset_away_is_refused_with_the_span():
    old = pd.date_range("2001-01-01", periods=300, freq="5min").astype(str).tolist()
    new = pd.date_range("2024-01-01", periods=300, freq="5min").astype(str).tolist()
    with pytest.raises(CohortError, match=r"span 8,401 days \(2001-01-01 to 2024-01-02\)"):
        plausible_times(frame_at(old + new), "p", Counter())


def test_readings_before_2000_or_days_ahead_are_dropped():
    ahead = (pd.Timestamp.now() + pd.Timedelta(days=5)).strftime("%Y-%m-%d %H:%M")
    main = pd.date_range("2024-03-01", periods=100, freq="5min").astype(str).tolist()
    notes: Counter = Counter()
    kept = plausible_times(frame_at(["1999-12-31 23:55", *main, ahead]), "p", notes)
    assert len(kept) == 100
    assert notes["readings_dated_before_2000_or_ahead_dropped"] == 2


@pytest.mark.parametrize("where", ["under_a_file", "proc", "a_folder"])
def test_an_import_out_that_cannot_be_written_is_refused_before_parsing(tmp_path, where):
    path = tmp_path / "ns_entries.json"
    path.write_text(json.dumps(entries(20)))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    (tmp_path / "folder.parquet").mkdir()
    out = {
        "under_a_file": blocker / "cohort.parquet",
        "proc": "/proc/tailorml/cohort.parquet",
        "a_folder": tmp_path / "folder.parquet",
    }[where]
    expected = {"under_a_file": "is a file", "proc": "cannot write in", "a_folder": "is a folder"}
    with pytest.raises(TailormlError, match=expected[where]):
        import_cohort([path], out, salt="s")
