"""Importer errors of the fifth hostile pass that pointed the user the wrong way: a person
whose readings were all dropped (dated 1999, or one time repeated) "has a single CGM
reading"; a Nightscout file of mmol/L values, or with dates as text, "has no usable time"
or "no date"."""

from __future__ import annotations

import json

import pytest

from tailorml.data.importers import import_cohort
from tailorml.errors import CohortError

START_MS = 1_710_921_600_000  # 2024-03-20 08:00 UTC


def run(tmp_path, name, text, **options):
    path = tmp_path / name
    path.write_text(text)
    return import_cohort([path], tmp_path / "out.parquet", salt="s", **options)


def csv_of(times: list[str]) -> str:
    return "time,cgm\n" + "".join(f"{t},{120 + i}\n" for i, t in enumerate(times))


def test_readings_all_dated_before_2000_are_named_as_the_reason(tmp_path):
    times = [f"1999-12-31 22:{5 * i:02d}" for i in range(12)]
    with pytest.raises(CohortError) as error:
        run(tmp_path, "old.csv", csv_of(times))
    message = str(error.value)
    assert "has no CGM reading left of 12" in message
    assert "readings_dated_before_2000_or_ahead_dropped 12" in message and "clock" in message


def test_one_time_repeated_is_named_as_the_reason(tmp_path):
    with pytest.raises(CohortError, match=r"a single CGM reading left of 8 \(duplicate_read"):
        run(tmp_path, "same.csv", csv_of(["2024-03-20 08:00"] * 8))


def test_a_single_reading_in_the_export_still_says_so(tmp_path):
    with pytest.raises(CohortError, match=r"has a single CGM reading; .*date range\)$"):
        run(tmp_path, "one.csv", csv_of(["2024-03-20 08:00"]))


def entries(**fields) -> str:
    records = [
        {"type": "sgv", "sgv": 120 + i, "date": START_MS + i * 300_000, "utcOffset": 0}
        | {k: (v(i) if callable(v) else v) for k, v in fields.items()}
        for i in range(12)
    ]
    return json.dumps(records)


def test_nightscout_values_in_mmol_are_named_as_mmol(tmp_path):
    text = entries(sgv=lambda i: 6.5 + i / 10)
    with pytest.raises(CohortError, match=r"every sgv value is below 20 \(e.g. 6.5\).*mmol/L"):
        run(tmp_path, "mmol.json", text)


def test_nightscout_error_codes_only_say_so(tmp_path):
    with pytest.raises(CohortError, match=r"no sgv record has a glucose value \(0 without one, 12"):
        run(tmp_path, "codes.json", entries(sgv=9))


def test_a_nightscout_date_written_as_text_is_named(tmp_path):
    text = entries(date=lambda i: str(START_MS + i * 300_000))
    with pytest.raises(CohortError, match=r"date <13 digits, not shown> is str, not epoch milli"):
        run(tmp_path, "text.json", text)
