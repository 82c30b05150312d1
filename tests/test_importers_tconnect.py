"""Tandem t:connect importer and gzip input: fixtures in the real export's layout are written
here and every expected reading, event sum and count is worked out by hand in the comments;
the shipped real exports are checked against a plain re-reading of the files."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import tailorml
from tailorml.cli import app
from tailorml.data.importers import detect_format, import_cohort, tconnect
from tailorml.data.importers.common import pseudonym, read_source
from tailorml.errors import CohortError

EXPORTS = Path(tailorml.__file__).parent / "data" / "real" / "exports"
T0 = datetime(2024, 1, 5, 8, 0)
FIVE = timedelta(minutes=5)
WIDTH = 41  # every row of a real export is padded with commas to 41 cells
DEVICE, SERIAL = "t:slim X2 Insulin Pump OUS", "678714"
BOLUS_HEADER = [
    "Type",
    "Description",
    "BG",
    "IOB",
    "BolusRequestID",
    "BolusCompletionID",
    "CompletionDateTime",
    "InsulinDelivered",
    "FoodDelivered",
    "CorrectionDelivered",
    "CompletionStatusID",
    "CompletionStatusDesc",
    "BolusIsComplete",
    "BolexCompletionID",
    "BolexSize",
    "BolexStartDateTime",
    "BolexCompletionDateTime",
    "BolexInsulinDelivered",
    "BolexIOB",
    "BolexCompletionStatusID",
    "BolexCompletionStatusDesc",
    "ExtendedBolusIsComplete",
    "EventDateTime",
    "RequestDateTime",
    "BolusType",
    "BolusRequestOptions",
    "StandardPercent",
    "Duration",
    "CarbSize",
    "UserOverride",
    "TargetBG",
    "CorrectionFactor",
    "FoodBolusSize",
    "CorrectionBolusSize",
    "ActualTotalBolusRequested",
    "IsQuickBolus",
    "EventHistoryReportEventDesc",
    "EventHistoryReportDetails",
    "NoteID",
    "IndexID",
    "Note",
]


def stamp(time: datetime) -> str:
    text = time.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{time.microsecond // 1000:03d}" if time.microsecond else "")


def row(*cells) -> str:
    return ",".join([str(c) for c in cells] + [""] * (WIDTH - len(cells)))


def bolus(requested, delivered, carbs=0, completed=None, status="Completed", extended=None):
    """One bolus row; `extended` = (units delivered, start, end) of an extended bolus."""
    completed = completed or requested + timedelta(seconds=60)
    cells = dict.fromkeys(BOLUS_HEADER, "")
    cells.update(
        Type="Bolus",
        Description="Standard",
        BG="120",
        BolusRequestID="7",
        BolusCompletionID="7",
        CompletionDateTime=stamp(completed),
        InsulinDelivered=f"{delivered:g}",
        FoodDelivered="0",
        CorrectionDelivered="0",
        CompletionStatusID="3" if status == "Completed" else "0",
        CompletionStatusDesc=status,
        BolusIsComplete="1" if status == "Completed" else "0",
        EventDateTime=stamp(requested),
        RequestDateTime=stamp(requested),
        BolusType="Carb",
        BolusRequestOptions="Standard",
        StandardPercent="100",
        Duration="0",
        CarbSize=f"{carbs:g}",
        ActualTotalBolusRequested="9.9",  # asked for, not delivered: must not be read
    )
    if extended is not None:
        units, start, end = extended
        cells.update(
            Description=f"Extended 50.00%/{delivered + units:.2f}",
            BolexSize=f"{units:g}",
            BolexStartDateTime=stamp(start),
            BolexCompletionDateTime=stamp(end),
            BolexInsulinDelivered=f"{units:g}",
            BolexCompletionStatusDesc="Completed",
            BolusRequestOptions="Extended",
        )
    return ",".join(cells[name] for name in BOLUS_HEADER)


def export(
    egv,
    bg=(),
    iob=(),
    basal=(),
    boluses=(),
    name="",
    dob="",
    readings_header="Readings (CGM / BGM)",
):
    """A t:connect Therapy Timeline export: preamble, then CGM, BG, IOB, basal and bolus
    sections, each with its header row and closed by an empty row, CRLF like the real one."""
    lines = [
        row("Tandem Diabetes Care Inc."),
        row("t:connect Therapy Timeline Data Export"),
        row("Patient Name", name),
        row("Patient DOB", dob),
        row("Report Generated On", "2024-01-20"),
        row(),
        row("DeviceType", "SerialNumber", "Description", "EventDateTime", readings_header),
    ]
    lines += [row(DEVICE, SERIAL, "EGV", stamp(t), v) for t, v in egv]
    lines += [row(), row("DeviceType", "SerialNumber", "Description", "EventDateTime", "BG")]
    lines += [row(DEVICE, SERIAL, "BG", stamp(t), v, "0") for t, v in bg]
    lines += [row(), row("Type", "EventID", "EventDateTime", "IOB")]
    lines += [row("IOB", "81", stamp(t), v) for t, v in iob]
    if basal:
        lines += [row(), row("Type", "EventDateTime", "BasalRate")]
        lines += [row("Basal", stamp(t), "" if r is None else r) for t, r in basal]
    if boluses:
        lines += [row(), ",".join(BOLUS_HEADER), *boluses]
    return "\r\n".join(lines) + "\r\n"


def readings(first: datetime, count: int, skip=(), seconds: int = 10):
    """CGM every 5 min from `first` (+ the pump's odd seconds), 100, 105, ...; `skip` gaps."""
    return [
        (first + i * FIVE + timedelta(seconds=seconds), 100 + 5 * i)
        for i in range(count)
        if i not in skip
    ]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, newline="")
    return path


def column(result, name: str) -> list[float]:
    return result.frame[name].tolist()


def close(values, expected) -> bool:
    return np.allclose(np.asarray(values, float), np.asarray(expected, float), equal_nan=True)


# --- round trip: readings, boluses, carbs, skipped rows --------------------------------------


def test_round_trip_readings_boluses_carbs_and_counts(tmp_path):
    egv = readings(T0, 12, skip={5})  # 08:00:10 .. 08:55:10, nothing at 08:25
    text = export(
        egv,
        bg=[(T0 + timedelta(minutes=7), 131), (T0 + timedelta(minutes=41), 99)],
        iob=[(T0 + i * 2 * FIVE, 1.5) for i in range(3)],
        boluses=[
            # carbs at the request 08:10:00 -> slot 08:10; 2.5 U at completion 08:11:20 -> 08:15
            bolus(T0 + 2 * FIVE, 2.5, carbs=30, completed=T0 + timedelta(minutes=11, seconds=20)),
            # a correction: 0.75 U completed 08:31:40 -> slot 08:35
            bolus(
                T0 + timedelta(minutes=31), 0.75, completed=T0 + timedelta(minutes=31, seconds=40)
            ),
        ],
        name="Jane Doe",
        dob="1990-02-03",
    )
    path = write(tmp_path, "jane.csv", text)
    assert detect_format(path) == "tconnect"
    result = import_cohort([path], tmp_path / "out.parquet", salt="s")
    # grid origin 08:00 (the first reading floored to the minute); 08:25 empty, not filled
    assert close(column(result, "cgm"), [100.0 + 5 * i if i != 5 else np.nan for i in range(12)])
    assert column(result, "cho") == [0, 0, 30, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert close(column(result, "insulin"), [0, 0, 0, 2.5, 0, 0, 0, 0.75, 0, 0, 0, 0])
    notes = result.metadata["files"][0]["notes"]
    assert notes["bg_readings_skipped"] == 2 and notes["iob_rows_skipped"] == 3
    assert notes["empty_egv_values"] == 0 and notes["other_rows_skipped"] == 0
    assert result.notes["empty_slots"] == 1
    # the name and birth date are only the hashed identity: never written
    assert result.metadata["patients"] == [pseudonym("identity:jane doe|1990-02-03", "s")]
    written = (tmp_path / "out.parquet").read_bytes() + (tmp_path / "out.json").read_bytes()
    for secret in (b"Jane", b"jane", b"1990-02-03", b"jane.csv"):
        assert secret not in written
    kept = import_cohort([path], tmp_path / "kept.parquet", keep_ids=True)
    assert kept.metadata["patients"] == ["jane"]  # the file-name key stands in for the name


# --- basal ---------------------------------------------------------------------------------


def test_basal_rates_are_integrated_exactly_and_hourly_copy_rows_are_not_changes(tmp_path):
    start = datetime(2024, 1, 5, 7, 50)
    basal = [
        (start, 1.2),  # 07:50 1.2 U/h, written twice like the pump's events
        (start, 1.2),
        (datetime(2024, 1, 5, 8, 0), 0),  # whole-hour row: a copy of 08:22:30's rate, not 0 now
        (datetime(2024, 1, 5, 8, 22, 30), 0),  # suspended at 08:22:30
        (datetime(2024, 1, 5, 8, 22, 30), 0),
        (datetime(2024, 1, 5, 8, 35), 0.6),  # resumed at 0.6 U/h
        (datetime(2024, 1, 5, 8, 35), 0.6),
        (datetime(2024, 1, 5, 9, 0), None),  # blank whole-hour row: the section ends here
    ]
    path = write(tmp_path, "b.csv", export(readings(start, 17), basal=basal))
    result = import_cohort([path], tmp_path / "b.parquet", salt="s")
    # slots 07:50 + 5k; insulin is what was delivered in (slot - 5 min, slot]:
    # 07:50-08:20 at 1.2 U/h: 0.1 U per slot (6 slots = 1.2 U/h x 30 min = 0.6 U);
    # 08:20-08:22:30: 1.2 x 2.5/60 = 0.05; suspended until 08:35; 0.6 U/h x 5 min = 0.05
    # per slot up to 09:00; nothing after the section's last row.
    expected = [0] + [0.1] * 6 + [0.05, 0, 0] + [0.05] * 5 + [0, 0]
    assert close(column(result, "insulin"), expected)
    assert np.isclose(sum(expected), 0.65 + 0.25)
    notes = result.metadata["files"][0]["notes"]
    assert notes["basal_duplicate_rows"] == 3
    assert notes["basal_hourly_copies_dropped"] == 1
    assert notes["basal_rows_without_rate"] == 1
    assert notes["basal_rate_rows_used"] == 3
    assert notes["basal_gaps"] == 0 and notes["basal_minutes_not_integrated"] == 0


def test_basal_midnight_rows_conflicts_and_gaps(tmp_path):
    start = datetime(2024, 1, 5, 23, 30)
    midnight = datetime(2024, 1, 6)
    basal = [
        (start, 0.6),
        (midnight - timedelta(milliseconds=7), 0.6),  # 23:59:59.993: the day's last rate
        (midnight, 0.3),  # 00:00:00: a profile change at midnight, kept (not an hourly copy)
        (midnight + 4 * FIVE, 0.3),  # 00:20 two different rates at once: unknown until
        (midnight + 4 * FIVE, 0),  # the next change
        (midnight + 8 * FIVE, 0.9),  # 00:40, then 80 minutes without any row: a gap
        (midnight + timedelta(hours=2), None),
    ]
    path = write(tmp_path, "m.csv", export(readings(start, 31, seconds=0), basal=basal))
    result = import_cohort([path], tmp_path / "m.parquet", salt="s")
    # 23:30-00:00 at 0.6 U/h: 0.05 U per slot (6); 00:00-00:20 at 0.3: 0.025 (4); then nothing
    expected = [0] + [0.05] * 6 + [0.025] * 4 + [0] * 20
    assert close(column(result, "insulin"), expected)
    notes = result.metadata["files"][0]["notes"]
    assert notes["basal_conflicting_rates"] == 1
    assert notes["basal_gaps"] == 1
    assert notes["basal_minutes_not_integrated"] == 20 + 80
    assert notes["basal_hourly_copies_dropped"] == 0


def test_extended_bolus_is_spread_and_a_reentered_meal_is_counted_once(tmp_path):
    at = lambda minutes, seconds=0: T0 + timedelta(minutes=minutes, seconds=seconds)  # noqa: E731
    boluses = [
        # 1.0 U now (08:10:30) + 1.5 U extended over 08:10:30-08:40:30 (0.05 U/min); 20 g
        bolus(at(10), 1.0, carbs=20, completed=at(10, 30), extended=(1.5, at(10, 30), at(40, 30))),
        # stopped by an alarm after 0.4 U; the rest given without carbs: the 40 g are kept
        bolus(at(20), 0.4, carbs=40, completed=at(20, 40), status="Terminated by Alarm"),
        bolus(at(22), 0.6, completed=at(22, 30)),
        # aborted with nothing delivered, the meal entered again a minute later: 60 g once
        bolus(at(50), 0, carbs=60, completed=at(50, 20), status="User Aborted"),
        bolus(at(51), 4.0, carbs=60, completed=at(52)),
    ]
    path = write(tmp_path, "x.csv", export(readings(T0, 13), boluses=boluses))
    result = import_cohort([path], tmp_path / "x.parquet", salt="s")
    # slot 08:15: 1.0 + 4.5 min x 0.05; 08:20: 0.25; 08:25: 0.25 + 0.4 + 0.6; 08:30-08:40:
    # 0.25 each; 08:45: 0.5 min x 0.05; 08:55: 4.0 (completed 08:52)
    insulin = [0, 0, 0, 1.225, 0.25, 1.25, 0.25, 0.25, 0.25, 0.025, 0, 4.0, 0]
    assert close(column(result, "insulin"), insulin)
    assert np.isclose(sum(insulin), 1.0 + 1.5 + 0.4 + 0.6 + 4.0)
    assert column(result, "cho") == [0, 0, 20, 0, 40, 0, 0, 0, 0, 0, 0, 60, 0]
    notes = result.metadata["files"][0]["notes"]
    assert notes["extended_boluses_spread"] == 1
    assert notes["carbs_reentered_dropped"] == 1
    assert notes["boluses_without_insulin_delivered"] == 1


# --- codes, units, errors ------------------------------------------------------------------


def test_low_high_codes_and_mmol_exports(tmp_path):
    egv = [(T0, "Low"), (T0 + FIVE, 60), (T0 + 2 * FIVE, "High"), (T0 + 3 * FIVE, 300)]
    path = write(tmp_path, "codes.csv", export(egv))
    limits = tconnect.parse(path)
    assert close(limits.readings["cgm"], [40, 60, 400, 300])
    assert limits.notes["low_codes"] == 1 and limits.notes["high_codes"] == 1
    missing = tconnect.parse(path, out_of_range="missing")
    assert close(missing.readings["cgm"], [np.nan, 60, np.nan, 300])
    mmol = [(T0 + i * FIVE, v) for i, v in enumerate((5.5, 6.1, 7.0))]
    labelled = write(tmp_path, "mmol.csv", export(mmol, readings_header="Readings (mmol/L)"))
    converted = tconnect.parse(labelled)
    assert close(converted.readings["cgm"], [5.5 * 18.016, 6.1 * 18.016, 7.0 * 18.016])
    assert converted.choices["units_in_export"] == "mmol/L"
    unlabelled = write(tmp_path, "unlabelled.csv", export(mmol))
    with pytest.raises(CohortError, match=r"unlabelled\.csv.*look like mmol/L"):
        tconnect.parse(unlabelled)


def test_bad_exports_say_which_file_field_and_fix(tmp_path):
    no_cgm = write(tmp_path, "nocgm.csv", export([], boluses=[bolus(T0, 1.0)]))
    with pytest.raises(CohortError, match=r"nocgm\.csv: a t:connect export with no CGM"):
        tconnect.parse(no_cgm)
    bad_time = export(readings(T0, 3)).replace(stamp(T0 + timedelta(seconds=10)), "yesterday")
    with pytest.raises(CohortError, match=r"t\.csv: t:connect CGM EventDateTime <9 characters"):
        tconnect.parse(write(tmp_path, "t.csv", bad_time))
    bad_rate = export(readings(T0, 3), basal=[(T0, "fast"), (T0 + FIVE, 1.0)])
    with pytest.raises(CohortError, match=r"r\.csv: t:connect basal .*<4 characters"):
        tconnect.parse(write(tmp_path, "r.csv", bad_rate))
    bad_value = export([(T0, 100), (T0 + FIVE, "??")])
    with pytest.raises(CohortError, match=r"neither a number nor Low/High.*<2 characters"):
        tconnect.parse(write(tmp_path, "v.csv", bad_value))
    clarity = "Index,Timestamp (YYYY-MM-DDThh:mm:ss),Event Type,Glucose Value (mg/dL)\n"
    assert not tconnect.sniff(clarity)
    with pytest.raises(CohortError, match=r"c\.csv: not a Tandem t:connect export"):
        import_cohort([write(tmp_path, "c.csv", clarity)], tmp_path / "o.parquet", "tconnect")
    assert not (tmp_path / "o.parquet").exists()


# --- gzip ------------------------------------------------------------------------------------


def test_gzip_exports_read_like_plain_ones_with_the_hash_of_the_bytes_on_disk(tmp_path):
    text = export(readings(T0, 6), boluses=[bolus(T0 + FIVE, 1.5, carbs=12)])
    plain = write(tmp_path, "alice.csv", text)
    packed = tmp_path / "alice.csv.gz"
    packed.write_bytes(gzip.compress(text.encode(), mtime=0))
    unnamed = tmp_path / "bob.csv"  # gzip bytes without the .gz name: told by the magic
    unnamed.write_bytes(packed.read_bytes())
    assert read_source(packed)[0] == read_source(plain)[0] == text
    assert read_source(packed)[2] == hashlib.sha256(packed.read_bytes()).hexdigest()
    assert detect_format(packed) == detect_format(unnamed) == "tconnect"
    a = import_cohort([plain], tmp_path / "a.parquet", keep_ids=True)
    b = import_cohort([packed], tmp_path / "b.parquet", keep_ids=True)
    assert b.metadata["patients"] == ["alice"]  # alice.csv.gz is alice, as alice.csv
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert b.metadata["files"][0]["sha256"] == hashlib.sha256(packed.read_bytes()).hexdigest()


def test_a_corrupt_gzip_is_a_clear_error_naming_the_file(tmp_path):
    whole = gzip.compress(export(readings(T0, 6)).encode())
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    not_gzip = tmp_path / "plain-text.csv.gz"
    not_gzip.write_text("time,cgm\n2024-01-05T08:00:00,100\n")
    flipped = tmp_path / "crc.csv.gz"
    flipped.write_bytes(whole[:-8] + bytes([whole[-8] ^ 0xFF]) + whole[-7:])
    for path in (truncated, not_gzip, flipped):
        with pytest.raises(CohortError) as error:
            import_cohort([path], tmp_path / "out.parquet")
        message = str(error.value)
        assert message.startswith(f"{path}: not a readable gzip file (")
        assert "gzip -t" in message and "\n" not in message
    assert not (tmp_path / "out.parquet").exists()


# --- the shipped real exports ----------------------------------------------------------------


def _sections(path: Path) -> dict[str, list[dict[str, str]]]:
    """A plain re-reading of a t:connect file: rows under each header, by header's 4th name."""
    found: dict[str, list[dict[str, str]]] = {}
    header = None
    for cells in csv.reader(io.StringIO(gzip.decompress(path.read_bytes()).decode())):
        cells = [c.strip() for c in cells]
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            header = None
        elif cells[0] in ("DeviceType", "Type") and "EventDateTime" in cells:
            header = cells
            found[";".join(cells[:5])] = []
        elif header is not None:
            found[";".join(header[:5])].append(dict(zip(header, cells, strict=False)))
    return found


def _basal_by_hand(rows: list[dict[str, str]]) -> float:
    """Units of basal by the documented rules, one row at a time (no pandas)."""
    parsed = [(datetime.fromisoformat(r["EventDateTime"]), r.get("BasalRate", "")) for r in rows]
    coverage = sorted({t for t, _ in parsed})
    rated, seen = [], set()
    for t, rate in parsed:
        if rate and (t, float(rate)) not in seen:
            seen.add((t, float(rate)))
            rated.append((t, float(rate)))
    kept = []
    for i, (t, rate) in enumerate(rated):
        whole_hour = (t.minute, t.second, t.microsecond) == (0, 0, 0) and t.hour > 0
        after = rated[i + 1] if i + 1 < len(rated) else None
        if whole_hour and after and after[0] - t < timedelta(hours=1) and after[1] == rate:
            continue  # the hourly copy of the next row
        kept.append((t, rate))
    rate_at: dict[datetime, float | None] = {}
    for t, rate in kept:
        rate_at[t] = None if t in rate_at and rate_at[t] != rate else rate
    total, current = 0.0, None
    for start, end in pairwise(coverage):
        current = rate_at.get(start, current)
        hours = (end - start).total_seconds() / 3600
        if current is not None and hours * 60 <= 65:
            total += current * hours
    return total


def test_the_shipped_tconnect_export_imports_with_the_counts_of_the_file(tmp_path):
    tandem = EXPORTS / "tandem_tconnect.csv.gz"
    assert (EXPORTS / "LICENSE-sugartime.txt").read_text().startswith("MIT License")
    assert detect_format(tandem) == "tconnect"

    sections = _sections(tandem)
    (cgm,) = [rows for key, rows in sections.items() if "Readings" in key]
    (boluses,) = [rows for key, rows in sections.items() if key.startswith("Type;Description")]
    (basal,) = [rows for key, rows in sections.items() if key.startswith("Type;EventDateTime")]
    egv_times = [r["EventDateTime"] for r in cgm if r["Description"] == "EGV"]
    repeated = len(egv_times) - len(set(egv_times))
    delivered = sum(float(r["InsulinDelivered"]) for r in boluses)
    delivered += sum(float(r["BolexInsulinDelivered"] or 0) for r in boluses)
    ordered = sorted(boluses, key=lambda r: r["EventDateTime"])
    carbs = 0.0
    for this, following in zip(ordered, [*ordered[1:], None], strict=True):
        reentered = (
            this["CompletionStatusDesc"] != "Completed"
            and following is not None
            and float(following["CarbSize"]) > 0
            and datetime.fromisoformat(following["EventDateTime"])
            - datetime.fromisoformat(this["EventDateTime"])
            <= timedelta(minutes=5)
        )
        carbs += 0 if reentered else float(this["CarbSize"])
    basal_units = _basal_by_hand(basal)
    assert (len(egv_times), repeated, len(boluses)) == (23108, 6, 1149)
    assert round(delivered, 2) == 2408.23 and carbs == 16593

    result = import_cohort([tandem], tmp_path / "t.parquet", keep_ids=True)
    frame, notes = result.frame, result.notes
    assert result.metadata["readings_per_patient"] == {"tandem_tconnect": 23108 - repeated}
    assert notes["duplicate_readings_dropped"] == repeated
    assert "slot_collisions_dropped" not in notes
    assert frame["time"].iloc[0] == pd.Timestamp(min(egv_times)).floor("min")
    last = frame.loc[frame["cgm"].notna(), "time"].iloc[-1]
    assert abs(last - pd.Timestamp(max(egv_times))) <= pd.Timedelta(minutes=2.5)
    assert (min(egv_times), max(egv_times)) == ("2020-02-01T00:04:10", "2020-04-22T10:37:25")
    assert "insulin_events_outside_readings" not in notes
    assert np.isclose(frame["insulin"].sum(), delivered + basal_units)
    assert 700 < basal_units < 900  # about 10 U a day over 81.4 days
    assert frame["cho"].sum() == carbs
    assert notes["bg_readings_skipped"] == 1188 and notes["iob_rows_skipped"] == 18307


def test_the_shipped_clarity_export_imports_with_the_counts_of_the_file(tmp_path):
    clarity = EXPORTS / "dexcom_clarity_g6.csv.gz"
    assert detect_format(clarity) == "dexcom"
    text = gzip.decompress(clarity.read_bytes()).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    egv = [r for r in rows if r["Event Type"] == "EGV"]
    times = [r["Timestamp (YYYY-MM-DDThh:mm:ss)"] for r in egv]
    units = sum(float(r["Insulin Value (u)"]) for r in rows if r["Event Type"] == "Insulin")
    grams = sum(float(r["Carb Value (grams)"]) for r in rows if r["Event Type"] == "Carbs")
    result = import_cohort([clarity], tmp_path / "d.parquet", keep_ids=True)
    counted = result.metadata["readings_per_patient"]["dexcom_clarity_g6"]
    assert counted + result.notes["slot_collisions_dropped"] == len(egv) == 25493
    assert result.notes["low_codes"] == sum(r["Glucose Value (mg/dL)"] == "Low" for r in egv)
    assert (min(times), max(times)) == ("2020-02-01T00:00:32", "2020-04-30T16:56:49")
    assert np.isclose(result.frame["insulin"].sum(), units) and round(units, 1) == 2717.1
    assert result.frame["cho"].sum() == grams == 25285


def test_cli_imports_the_shipped_tconnect_gz_and_describe_validates_it(tmp_path):
    runner = CliRunner()
    out = tmp_path / "x.parquet"
    source = str(EXPORTS / "tandem_tconnect.csv.gz")
    result = runner.invoke(app, ["cohort", "import", source, "--out", str(out), "--keep-ids"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # the console wraps long lines
    assert "Imported 1 file(s) (tconnect)" in output and "1 person(s), 5-min grid" in output
    assert "tandem_tconnect: 23102 readings" in output
    assert "'bg_readings_skipped': 1188" in output and "'basal_gaps'" not in output
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["formats"] == ["tconnect"] and metadata["synthetic"] is False
    described = runner.invoke(app, ["cohort", "describe", str(out)])
    assert described.exit_code == 0, described.output
    assert "tandem_tconnect" in described.output and "81.4" in described.output


def test_a_basal_row_dated_decades_ahead_is_dropped_before_it_is_spread(tmp_path):
    start = datetime(2024, 1, 5, 7, 50)
    basal = [(start, 1.2), (datetime(2024, 1, 5, 8, 20), 0.6), (datetime(2090, 1, 1), 0.6)]
    path = write(tmp_path, "far.csv", export(readings(start, 12), basal=basal))
    result = import_cohort([path], tmp_path / "far.parquet", salt="s")
    notes = result.metadata["files"][0]["notes"]
    assert notes["basal_rows_dated_before_2000_or_ahead_dropped"] == 1
    # 07:50-08:20 at 1.2 U/h is all that is integrated: 0.6 U (the 08:20 row ends it)
    assert np.isclose(sum(column(result, "insulin")), 0.6)
