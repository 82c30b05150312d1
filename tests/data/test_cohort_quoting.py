"""What a cohort error shows of the file and of the user's options: an id escaped and cut,
at most 20 ids, and a time or glucose cell only when it looks like one (a misread cell can
hold a name); errors reach terminals, logs and CI output."""

from __future__ import annotations

import pandas as pd
import pytest

from tailorml.data.cohort import load_cohort
from tailorml.errors import CohortError

START = pd.Timestamp("2025-01-06 07:00")


def readings(patient: str, n: int = 4, **columns) -> pd.DataFrame:
    times = START + pd.to_timedelta(range(0, 5 * n, 5), unit="min")
    return pd.DataFrame({"patient_id": patient, "time": times, "cgm": 100.0} | columns)


def error_of(tmp_path, frame: pd.DataFrame, name: str = "cohort.csv", **options) -> str:
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    with pytest.raises(CohortError) as raised:
        load_cohort(path, **options)
    return str(raised.value)


def test_a_name_in_a_glucose_cell_is_described_not_echoed(tmp_path):
    frame = readings("a")
    frame["cgm"] = frame["cgm"].astype(object)
    frame.loc[2, "cgm"] = "Jane Doe"
    message = error_of(tmp_path, frame)
    assert "Jane Doe" not in message
    assert "(1 rows, first at row 2: <8 characters of text, not shown>)" in message


def test_a_name_in_a_time_cell_is_described_not_echoed(tmp_path):
    frame = readings("a").astype({"time": str})
    frame.loc[1, "time"] = "Jane Doe, 1970-01-01"
    message = error_of(tmp_path, frame)
    assert "Jane" not in message
    assert "(row 1: <20 characters of text, not shown>)" in message


def test_a_device_code_and_a_time_are_still_quoted(tmp_path):
    frame = readings("a")
    frame["cgm"] = frame["cgm"].astype(object)
    frame.loc[3, "cgm"] = "Low"
    assert "first at row 3: 'Low')" in error_of(tmp_path, frame)


def test_ids_of_the_file_and_of_the_option_are_escaped_cut_and_counted(tmp_path):
    # 25 people, one of them an id with a terminal escape sequence
    frame = pd.concat(
        [readings("\x1b[2Jp0")] + [readings(f"p{k}") for k in range(1, 25)], ignore_index=True
    )
    asked = "x" * 10_000 + "\x07"
    message = error_of(tmp_path, frame, "cohort.parquet", individuals=[asked])
    assert "\x1b" not in message and "\x07" not in message
    assert message.endswith(
        "the file has '\\x1b[2Jp0', p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, "
        "p14, p15, p16, p17, p18, p19 and 5 more"
    )
    assert f"unknown individual(s) {'x' * 40!r}…; the file has" in message
    assert len(message) < 400


def test_an_id_in_a_time_error_is_escaped_and_cut(tmp_path):
    patient = "\x1b]0;" + "y" * 100
    frame = readings(patient)
    frame.loc[3, "time"] = START  # goes back in time
    message = error_of(tmp_path, frame, "cohort.parquet")
    assert "\x1b" not in message
    assert f"for patient {patient[:40]!r}… at row 3" in message
