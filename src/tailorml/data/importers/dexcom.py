"""Dexcom Clarity CSV export ("Export" in Clarity, one file per person).

Layout: a header row (`Index, Timestamp (YYYY-MM-DDThh:mm:ss), Event Type, Event Subtype,
Patient Info, Device Info, ..., Glucose Value (mg/dL) | Glucose Value (mmol/L), Insulin Value
(u), Carb Value (grams), ...`), then metadata rows (`FirstName`, `LastName`, `DateOfBirth`,
`Device`, `Alert` ...) with an empty timestamp, then event rows.

- `EGV` rows are the CGM readings (every 5 min on G6/G7). `Low`/`High` in the glucose
  column (outside the sensor's 40-400 mg/dL) become 40/400 mg/dL (`out_of_range="limits"`,
  the default) or missing readings (`"missing"`); both are counted (`low_codes`,
  `high_codes`). Empty EGV values are counted as `empty_egv_values`.
- `Carbs` rows -> carbs (g); `Insulin` rows (fast- and long-acting) -> insulin (U).
- `Calibration` (finger-stick) and other rows are not CGM readings: skipped and counted.
- mmol/L exports (the column says so) are converted with 18.016.
- Time: Clarity writes the local wall time of the receiving device, without a zone. It is
  kept as is. At the autumn DST change the repeated hour gives readings whose times repeat or
  interleave: the second of two readings in one grid slot is dropped and counted
  (`slot_collisions_dropped`). At the spring change the skipped hour simply has no readings
  (empty slots). Time-zone travel shows the same way.
- Privacy: FirstName, LastName and DateOfBirth are read only to tell whether two files are
  the same person (their salted hash); they are never written.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd

from tailorml.data.importers.common import (
    ImportedReadings,
    OutOfRange,
    amounts_of,
    columns_shape,
    egv_values,
    empty_events,
    events_frame,
    header_line,
    line_shape,
    read_source,
    readings_frame,
    split_fields,
    value_shape,
    wall_times,
)
from tailorml.errors import CohortError

FORMAT = "dexcom"
_GLUCOSE = re.compile(r"^Glucose Value \((mg/dL|mmol/L)\)$", re.IGNORECASE)
_IDENTITY_FIELDS = ("firstname", "lastname", "dateofbirth")


def sniff(text: str) -> bool:
    head = "\n".join(text.splitlines()[:3]).lower()
    return "event type" in head and "glucose value (" in head


def _column(frame: pd.DataFrame, prefix: str) -> str | None:
    return next((c for c in frame.columns if c.lower().startswith(prefix.lower())), None)


def parse(source: str | Path, out_of_range: OutOfRange = "limits") -> ImportedReadings:
    text, name, digest = read_source(source)
    if not sniff(text):
        raise CohortError(  # described, not quoted: metadata rows hold names
            f"{name}: not a Dexcom Clarity CSV (no 'Event Type' and 'Glucose Value (...)' "
            f"header; {line_shape(text)})"
        )
    _, separator = split_fields(header_line(text))  # a re-saved file: ';' (Excel, EU) or tab
    try:
        frame = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, index_col=False, sep=separator
        )
    except Exception as error:
        raise CohortError(f"{name}: cannot read as a Dexcom Clarity CSV: {error}") from None
    frame.columns = [c.strip() for c in frame.columns]
    glucose_column = next((c for c in frame.columns if _GLUCOSE.match(c)), None)
    time_column = _column(frame, "Timestamp")
    type_column = _column(frame, "Event Type")
    if glucose_column is None or time_column is None or type_column is None:
        raise CohortError(
            f"{name}: a Dexcom Clarity CSV needs 'Timestamp', 'Event Type' and 'Glucose Value "
            f"(mg/dL)' or '(mmol/L)' columns; its header has {columns_shape(frame.columns)}"
        )
    unit = _GLUCOSE.match(glucose_column).group(1)
    unit = "mmol/L" if unit.lower() == "mmol/l" else "mg/dL"
    kind = frame[type_column].str.strip()
    notes: dict[str, int] = {}

    info_column = _column(frame, "Patient Info")
    identity = None
    if info_column is not None:
        fields = {
            k.lower(): v.strip().lower()
            for k, v in zip(kind, frame[info_column], strict=True)
            if k.lower() in _IDENTITY_FIELDS
        }
        if any(fields.values()):
            identity = "|".join(fields.get(key, "") for key in _IDENTITY_FIELDS)

    egv = frame[kind.str.upper() == "EGV"]
    if egv.empty:
        raise CohortError(
            f"{name}: a Dexcom Clarity export with no EGV (CGM) rows; export a date range with "
            "sensor readings (Clarity > Export)"
        )
    times = _times(egv[time_column], name)
    fix = "this Clarity file's glucose column says mg/dL but the values are mmol/L"
    values = egv_values(egv[glucose_column], unit, out_of_range, notes, name, glucose_column, fix)
    readings = readings_frame(times, values)
    notes["non_egv_rows_skipped"] = int(
        (~kind.str.upper().isin(["EGV", "CARBS", "INSULIN"]) & frame[time_column].ne("")).sum()
    )

    events = [empty_events()]
    for event_type, prefix, target in (
        ("CARBS", "Carb Value", "cho"),
        ("INSULIN", "Insulin Value", "insulin"),
    ):
        column = _column(frame, prefix)
        rows = frame[kind.str.upper() == event_type]
        if column is None or rows.empty:
            continue
        amounts = amounts_of(rows[column], target, notes)
        notes[f"{target}_rows_without_amount"] = int(amounts.isna().sum())
        events.append(events_frame(_times(rows[time_column], name), target, amounts, notes=notes))
    return ImportedReadings(
        format=FORMAT,
        source=name,
        readings=readings,
        events=pd.concat(events, ignore_index=True),
        identity=identity,
        notes=notes,
        choices={"units_in_export": unit, "out_of_range": out_of_range},
        native_minutes=5,
        sha256=digest,
    )


def _times(column: pd.Series, name: str) -> pd.Series:
    parsed = wall_times(column.str.strip())
    if parsed.isna().any():
        first = column[parsed.isna()].iloc[0]
        raise CohortError(
            f"{name}: Dexcom timestamp {value_shape(first)} (data row "
            f"{column[parsed.isna()].index[0] + 1}) is not like "
            f"2024-01-05T08:15:00 ({int(parsed.isna().sum())} rows)"
        )
    return parsed
