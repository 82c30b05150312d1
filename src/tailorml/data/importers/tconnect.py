"""Tandem t:connect "Therapy Timeline Data Export" CSV (t:slim X2 pump), one file per person.

Layout: a preamble (`Tandem Diabetes Care Inc.`, `t:connect Therapy Timeline Data Export`,
`Patient Name,<name>`, `Patient DOB,<date>`, `Report Generated On,<date>`), then sections,
each opened by its own header row and closed by an empty row:

- `DeviceType, SerialNumber, Description, EventDateTime, Readings (CGM / BGM)`: rows with
  Description `EGV` are the CGM readings the pump received (every 5 min) -> readings;
  `BG` rows (finger sticks) are counted (`bg_readings_skipped`). Text `Low`/`High` codes
  go through `common.sensor_codes` like Clarity's (`low_codes`, `high_codes`). Note: the
  t:slim stores Dexcom's `Low` as the number 40 (the shipped real export has 10 readings of
  40, 9 of them `Low` in the same person's Clarity export), indistinguishable from a true
  40, so `--out-of-range missing` cannot act on them; they equal the `limits` choice.
  mg/dL unless the header names mmol/L (then converted with 18.016); mmol-like values
  under an mg/dL header are refused (`common.to_mgdl`).
- `DeviceType, ..., BG, IOB, Note`: the finger sticks again (`bg_readings_skipped`).
- `Type, EventID, EventDateTime, IOB`: the pump's insulin-on-board log, derived from the
  boluses (`iob_rows_skipped`).
- `Type, EventDateTime, BasalRate`: basal (below).
- `Type, Description, BG, IOB, BolusRequestID, ..., CompletionDateTime, InsulinDelivered,
  ..., BolexStartDateTime, BolexCompletionDateTime, BolexInsulinDelivered, ...,
  EventDateTime, ..., CarbSize, ...`: boluses (below). Columns are found by name. (In the
  real export the names after `IsQuickBolus` are shifted by one against the values; none of
  them is used.)
- Rows of any other section are counted (`other_rows_skipped`).

**Boluses.** `InsulinDelivered` -> insulin, at `CompletionDateTime`: it is what the pump
actually delivered (a bolus stopped by the user or an alarm has the partial amount, while
`ActualTotalBolusRequested`/`FoodBolusSize` are what was asked for or proposed), and the
pump books it at completion (its IOB rows jump then). For an extended bolus it is the
immediate part; the extended part, `BolexInsulinDelivered`, is spread evenly per minute
from `BolexStartDateTime` to `BolexCompletionDateTime` (the pump delivers it at a constant
rate; counted `extended_boluses_spread`). Boluses with nothing delivered are counted
(`boluses_without_insulin_delivered`). `CarbSize` (grams entered) -> carbs, at
`EventDateTime`. When a bolus that did not complete (status not `Completed`) is followed
within 5 minutes by another bolus with carbs, the meal was entered again: the first entry's
carbs are dropped and counted (`carbs_reentered_dropped`; twice in the real export, e.g.
112 g aborted and re-entered 45 s later). Carbs of a stopped bolus that was not re-entered
are kept: the meal was eaten.

**Basal: integrated, because its rows can be told apart by what they hold.** Tandem does
not document this CSV; the reading below is what the real export shows (and the tests pin
it). Rows are `(EventDateTime, BasalRate U/h)`; in the real export (7,470 rows) they are:
- rate changes (pump events, mostly written twice: identical copies are dropped,
  `basal_duplicate_rows`); 99 % of them differ from the change before, as changes should;
- one row at every whole hour. These are *not* changes at that hour: each repeats the rate
  of the next row in the same hour (1,276 of the 1,278 with a rate; the other two are real
  changes at a whole hour and are kept), or is blank when the hour has no other row (595 of
  595). Read as changes they would, e.g., end a pump suspension at 08:00 that lasted until
  08:29. These copies and blank rows are dropped (`basal_hourly_copies_dropped`,
  `basal_rows_without_rate`); 00:00:00 rows are kept: they state the rate at the start of
  each day (as `23:59:59.993` rows do at its end), including a midnight profile change.
  (A real change at a whole hour that the next row of the hour repeats is dropped as well;
  its rate then starts at that next row, an error of under an hour and only if it exists);
- two different rates at one time (twice): which one held is unknown, so nothing is
  integrated until the next change (`basal_conflicting_rates`).
The rate is held from each change to the next (piecewise constant, as the pump delivers
it) and integrated exactly, to the second, into per-minute `insulin` events, so each grid
interval gets the units delivered in it (1.2 U/h for 30 min = 0.6 U); boluses and basal
share the `insulin` column, as in OhioT1DM. Nothing is integrated before the first rate,
after the section's last row, or across a gap: with a row every hour, a silence longer
than 65 minutes is missing data (`basal_gaps`; all minutes left out are
`basal_minutes_not_integrated`; rows used: `basal_rate_rows_used`). An export without the
hourly rows therefore gets basal only where rows are at most 65 minutes apart: less data,
never invented data.

Time: `EventDateTime` is the pump's local wall time, kept as is (see dexcom.py on DST).
Privacy: Patient Name and Patient DOB are read only as the hashed identity (two exports of
one person merge); they are never written.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tailorml.data.importers.common import (
    ImportedReadings,
    OutOfRange,
    columns_shape,
    decimal_points,
    egv_values,
    empty_events,
    events_frame,
    line_shape,
    plausible,
    read_source,
    readings_frame,
    split_fields,
    value_shape,
    wall_times,
)
from tailorml.errors import CohortError

FORMAT = "tconnect"
GAP_MINUTES = 65  # t:connect writes a basal row every hour; a longer silence is missing data
REENTRY_MINUTES = 5  # a stopped bolus followed this soon by carbs again was re-entered
_TITLE = "t:connect"
_CGM_HEADER = "devicetype,serialnumber,description,eventdatetime"
_IDENTITY_FIELDS = ("patient name", "patient dob")


def sniff(text: str) -> bool:
    """The export's title line near the top, or its CGM section header."""
    head = [_commas(line.strip().lower()) for line in text[:20000].splitlines()[:40]]
    return any(line.startswith(_TITLE) for line in head[:10]) or any(
        line.startswith(_CGM_HEADER) for line in head
    )


def _commas(line: str) -> str:
    """A line as if comma-separated (for sniffing a file re-saved with ';' or tabs)."""
    return line.replace(";", ",").replace("\t", ",")


def _separator(text: str) -> str:
    """The separator of the section headers (the rows naming EventDateTime): a comma, or ';'
    / tab in a file re-saved by Excel in an EU locale, which also writes decimal commas."""
    for line in text[:200_000].splitlines():
        if "eventdatetime" in line.lower():
            return split_fields(line)[1]
    return ","


@dataclass
class _Section:
    """One header row and the rows under it, up to the next empty row."""

    header: list[str]
    line: int
    rows: list[list[str]] = field(default_factory=list)

    def kind(self) -> str:
        names = {name.lower() for name in self.header}
        if any(name.startswith("readings") for name in names):
            return "cgm"
        if "devicetype" in names:
            return "bg"
        if "basalrate" in names:
            return "basal"
        if "insulindelivered" in names:
            return "bolus"
        if "iob" in names and "eventid" in names:
            return "iob"
        return "other"

    def frame(self) -> pd.DataFrame:
        width = len(self.header)
        cells = [(row + [""] * width)[:width] for row in self.rows]
        return pd.DataFrame(cells, columns=self.header, dtype=str)


def _split(text: str, name: str) -> tuple[dict[str, str], list[_Section]]:
    """Preamble fields and sections: a header row names EventDateTime; empty rows end it."""
    preamble: dict[str, str] = {}
    sections: list[_Section] = []
    current: _Section | None = None
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=_separator(text)))
    except csv.Error as error:
        raise CohortError(f"{name}: cannot read as a t:connect CSV: {error}") from None
    for number, raw in enumerate(rows, start=1):
        row = [cell.strip() for cell in raw]
        while row and not row[-1]:
            row.pop()
        if not row:
            current = None
            continue
        lowered = [cell.lower() for cell in row]
        if lowered[0] in ("devicetype", "type") and "eventdatetime" in lowered:
            current = _Section(row, number)
            sections.append(current)
        elif current is not None:
            current.rows.append(row)
        elif not sections:  # "Patient Name,Jane Doe" or "Patient Name: Jane Doe"
            key, _, rest = row[0].partition(":")
            value = " ".join([rest.strip(), *row[1:]]).strip()
            preamble[key.strip().lower()] = value
        else:
            sections.append(_Section(["(no header)"], number, [row]))
    return preamble, sections


def _column(frame: pd.DataFrame, wanted: str) -> str | None:
    return next((c for c in frame.columns if c.lower() == wanted.lower()), None)


def _times(values: pd.Series, name: str, what: str) -> pd.Series:
    stamps = values.str.strip()
    try:
        parsed = pd.to_datetime(stamps, format="ISO8601", errors="coerce")
    except ValueError:  # mixed offsets
        parsed = pd.Series(pd.NaT, index=stamps.index)
    if parsed.isna().any() or getattr(parsed.dt, "tz", None) is not None:
        parsed = wall_times(stamps)  # another layout (a re-saved file), or offsets: wall time
    if parsed.isna().any():
        first = stamps[parsed.isna()].iloc[0]
        raise CohortError(
            f"{name}: t:connect {what} EventDateTime {value_shape(first)} is not a time like "
            f"2020-02-01T08:15:00 ({int(parsed.isna().sum())} rows); fix or delete those rows"
        )
    return parsed.astype("datetime64[ns]")


def _numbers(frame: pd.DataFrame, column: str, name: str, what: str, notes: dict) -> pd.Series:
    """A numeric column: blank is NaN, a decimal comma is read (counted), anything else not a
    number >= 0 is an error."""
    text = frame[column].str.strip()
    numbers = decimal_points(text, notes)
    values = pd.to_numeric(numbers.where(text != ""), errors="coerce")
    bad = (values.isna() & text.ne("")) | (values < 0)
    if bad.any():
        raise CohortError(
            f"{name}: t:connect {what} column {column!r} has a value that is not a number "
            f">= 0 ({int(bad.sum())} rows, first {value_shape(text[bad].iloc[0])}); fix or blank "
            "those cells"
        )
    return values.astype(float)


def parse(source: str | Path, out_of_range: OutOfRange = "limits") -> ImportedReadings:
    text, name, digest = read_source(source)
    if not sniff(text):
        raise CohortError(  # described, not quoted: the preamble holds the name
            f"{name}: not a Tandem t:connect export (no 't:connect' title and no "
            f"'DeviceType,SerialNumber,Description,EventDateTime' header; {line_shape(text)})"
        )
    preamble, sections = _split(text, name)
    identity = None
    fields = [preamble.get(key, "").strip().lower() for key in _IDENTITY_FIELDS]
    if any(fields):
        identity = "|".join(fields)
    notes: dict[str, int] = {
        "bg_readings_skipped": 0,
        "iob_rows_skipped": 0,
        "other_rows_skipped": 0,
    }
    cgm: list[pd.DataFrame] = []
    unit = "mg/dL"
    bolus, basal = [], []
    for section in sections:
        kind = section.kind()
        if kind in ("cgm", "bg"):
            frame = section.frame()
            description_column = _column(frame, "Description")
            time_column = _column(frame, "EventDateTime")
            if description_column is None:
                raise CohortError(
                    f"{name}: the t:connect section at line {section.line} has no "
                    f"'Description' column (EGV or BG); it has {columns_shape(frame.columns)}"
                )
            description = frame[description_column].str.strip().str.upper()
            egv = description.eq("EGV") & (kind == "cgm")
            notes["bg_readings_skipped"] += int(description.eq("BG").sum())
            notes["other_rows_skipped"] += int((~egv & description.ne("BG")).sum())
            if kind == "cgm":
                value = next(c for c in frame.columns if c.lower().startswith("readings"))
                if "mmol" in " ".join(section.header).lower():
                    unit = "mmol/L"
                rows = frame.loc[egv, [time_column, value]]
                cgm.append(rows.set_axis(["time", "value"], axis=1))
        elif kind == "iob":
            notes["iob_rows_skipped"] += len(section.rows)
        elif kind == "basal":
            basal.append(section.frame())
        elif kind == "bolus":
            bolus.append(section.frame())
        else:
            notes["other_rows_skipped"] += len(section.rows)

    readings = _readings(cgm, unit, out_of_range, name, notes)
    events = [empty_events()]
    if bolus:
        events += _boluses(pd.concat(bolus, ignore_index=True), name, notes)
    if basal:
        events.append(_basal(pd.concat(basal, ignore_index=True), name, notes))
    return ImportedReadings(
        format=FORMAT,
        source=name,
        readings=readings,
        events=pd.concat(events, ignore_index=True),
        identity=identity,
        notes=notes,
        choices={
            "units_in_export": unit,
            "out_of_range": out_of_range,
            "bolus": "InsulinDelivered at CompletionDateTime; extended part spread per minute",
            "basal": "rate changes held to the next change and integrated per minute; hourly "
            f"copy rows dropped; gaps over {GAP_MINUTES} min not integrated",
        },
        native_minutes=5,
        sha256=digest,
    )


def _readings(
    parts: list[pd.DataFrame], unit: str, out_of_range: OutOfRange, name: str, notes: dict
) -> pd.DataFrame:
    if not parts or all(part.empty for part in parts):
        raise CohortError(
            f"{name}: a t:connect export with no CGM (EGV) readings; export a date range in "
            "which the pump received CGM readings"
        )
    rows = pd.concat(parts, ignore_index=True)
    times = _times(rows["time"], name, "CGM")
    fix = "the t:connect header does not say mmol/L but the readings look like mmol/L"
    column = "Readings (CGM / BGM)"
    values = egv_values(rows["value"], unit, out_of_range, notes, name, column, fix)
    return readings_frame(times, values)


def _boluses(frame: pd.DataFrame, name: str, notes: dict) -> list[pd.DataFrame]:
    event_column = _column(frame, "EventDateTime")
    delivered_column = _column(frame, "InsulinDelivered")
    if event_column is None or delivered_column is None:
        raise CohortError(
            f"{name}: the t:connect bolus section needs 'EventDateTime' and 'InsulinDelivered' "
            f"columns; it has {columns_shape(frame.columns)}"
        )
    requested = _times(frame[event_column], name, "bolus")
    done_column = _column(frame, "CompletionDateTime")
    done_text = frame[done_column] if done_column else frame[event_column]
    done_text = done_text.where(done_text.str.strip() != "", frame[event_column])
    completed = _times(done_text, name, "bolus completion")
    delivered = _numbers(frame, delivered_column, name, "bolus", notes).fillna(0.0)

    extended = pd.Series(0.0, index=frame.index)
    parts = []
    if (column := _column(frame, "BolexInsulinDelivered")) is not None:
        extended = _numbers(frame, column, name, "bolus", notes).fillna(0.0)
        start_column = _column(frame, "BolexStartDateTime")
        end_column = _column(frame, "BolexCompletionDateTime")
        for index in frame.index[extended > 0]:
            begin, end = completed[index], completed[index]
            if start_column and end_column and frame.at[index, end_column].strip():
                end = _times(frame.loc[[index], end_column], name, "extended bolus").iloc[0]
                if frame.at[index, start_column].strip():
                    begin = _times(frame.loc[[index], start_column], name, "extended bolus")
                    begin = begin.iloc[0]
            parts.append(_spread([begin, end], [extended[index]], "insulin"))
            notes["extended_boluses_spread"] = notes.get("extended_boluses_spread", 0) + 1
    notes["boluses_without_insulin_delivered"] = int(((delivered <= 0) & (extended <= 0)).sum())
    parts.insert(0, events_frame(completed, "insulin", delivered))

    if (carb_column := _column(frame, "CarbSize")) is not None:
        carbs = _numbers(frame, carb_column, name, "bolus", notes).fillna(0.0)
        status_column = _column(frame, "CompletionStatusDesc")
        if status_column is not None:
            stopped = frame[status_column].str.strip().str.lower() != "completed"
        else:
            complete_column = _column(frame, "BolusIsComplete")
            stopped = frame[complete_column].str.strip() == "0" if complete_column else None
        if stopped is not None:
            order = requested.sort_values(kind="stable").index
            when, grams, halted = requested[order], carbs[order], stopped[order]
            soon = when.shift(-1) - when <= pd.Timedelta(minutes=REENTRY_MINUTES)
            again = halted & (grams > 0) & soon & (grams.shift(-1) > 0)
            notes["carbs_reentered_dropped"] = int(again.sum())
            carbs[again[again].index] = 0.0
        parts.insert(1, events_frame(requested, "cho", carbs))
    return parts


def _spread(points, amounts, kind: str) -> pd.DataFrame:
    """Amounts delivered evenly over consecutive intervals [p0, p1), [p1, p2), ... ->
    one event per minute holding exactly what was delivered in the minute ending then.

    Exact because the delivered total is piecewise linear in time: its value at each minute
    end is interpolated between the interval ends, so grid intervals (whole minutes) get
    exactly their share. A zero-length interval is one event at its time.
    """
    points = pd.to_datetime(pd.Series(points)).astype("datetime64[ns]").reset_index(drop=True)
    amounts = np.asarray(amounts, dtype=float)
    if len(points) == 2 and points[1] <= points[0]:
        return events_frame([points[1]], kind, amounts)
    origin = points[0].floor("min")
    seconds = ((points - origin) / pd.Timedelta(seconds=1)).to_numpy(dtype=float)
    total = np.concatenate([[0.0], np.cumsum(amounts)])
    minute_ends = np.arange(0.0, np.ceil(seconds[-1] / 60.0) + 1) * 60.0
    per_minute = np.diff(np.interp(minute_ends, seconds, total))
    per_minute[per_minute < 1e-9] = 0.0  # float dust from the subtraction, not insulin
    stamps = origin + pd.to_timedelta(minute_ends[1:], unit="s")
    return events_frame(stamps, kind, per_minute)


def _basal(frame: pd.DataFrame, name: str, notes: dict) -> pd.DataFrame:
    """Basal rate rows -> per-minute insulin (the rules are in the module docstring)."""
    time_column, rate_column = _column(frame, "EventDateTime"), _column(frame, "BasalRate")
    if time_column is None or rate_column is None:
        raise CohortError(
            f"{name}: the t:connect basal section needs 'EventDateTime' and 'BasalRate' "
            f"columns; it has {columns_shape(frame.columns)}"
        )
    times = _times(frame[time_column], name, "basal")
    rates = _numbers(frame, rate_column, name, "basal", notes)
    rows = pd.DataFrame({"time": times, "rate": rates})
    inside = plausible(rows["time"])
    notes["basal_rows_dated_before_2000_or_ahead_dropped"] = int((~inside).sum())
    rows = rows[inside].sort_values("time", kind="stable")
    coverage = rows["time"].drop_duplicates().reset_index(drop=True)

    notes["basal_rows_without_rate"] = int(rows["rate"].isna().sum())
    rated = rows.dropna(subset=["rate"])
    copies = rated.duplicated(["time", "rate"])
    notes["basal_duplicate_rows"] = int(copies.sum())
    rated = rated[~copies].reset_index(drop=True)
    # A whole-hour row (not midnight) repeating the next row of its hour is a copy of it.
    whole_hour = (rated["time"] == rated["time"].dt.floor("h")) & (rated["time"].dt.hour > 0)
    next_time, next_rate = rated["time"].shift(-1), rated["rate"].shift(-1)
    same_hour = next_time < rated["time"] + pd.Timedelta(hours=1)
    hourly_copy = whole_hour & same_hour & np.isclose(rated["rate"], next_rate)
    notes["basal_hourly_copies_dropped"] = int(hourly_copy.sum())
    rated = rated[~hourly_copy]
    conflicting = rated["time"].duplicated(keep=False)
    notes["basal_conflicting_rates"] = int(rated.loc[conflicting, "time"].nunique())
    changes = rated.drop_duplicates("time", keep="last").copy()
    changes.loc[changes["time"].isin(rated.loc[conflicting, "time"]), "rate"] = np.nan

    notes["basal_gaps"] = 0
    notes["basal_minutes_not_integrated"] = 0
    if changes.empty or len(coverage) < 2:
        return events_frame([], "insulin", [])
    # Elementary intervals between consecutive basal rows: one rate each (or none).
    start, end = coverage.iloc[:-1].to_numpy(), coverage.iloc[1:].to_numpy()
    which = np.searchsorted(changes["time"].to_numpy(), start, side="right") - 1
    rate = np.where(which >= 0, changes["rate"].to_numpy()[np.maximum(which, 0)], np.nan)
    hours = (end - start) / np.timedelta64(1, "h")
    gap = hours * 60 > GAP_MINUTES
    notes["basal_gaps"] = int(gap.sum())
    unknown = gap | np.isnan(rate)
    notes["basal_minutes_not_integrated"] = round(float(hours[unknown].sum()) * 60)
    delivered = np.where(gap | np.isnan(rate), 0.0, rate * hours)
    notes["basal_rate_rows_used"] = int(changes["rate"].notna().sum())
    return _spread(coverage, delivered, "insulin")
