"""OhioT1DM data set XML (one file per patient and split, e.g. `559-ws-training.xml`).

`<patient id="559" weight="99" insulin_type="Novalog">` holds lists of `<event>`s:

- `<glucose_level>` `ts="dd-mm-YYYY HH:MM:SS" value="mg/dL"`: the CGM readings (5 min);
- `<meal>` `carbs` (g) -> carbs; `<bolus>` `ts_begin`, `ts_end`, `dose` (U) -> insulin,
  at `ts_begin`, or spread evenly per minute up to `ts_end` for square/dual boluses;
- `<basal>` `value` = rate (U/h) from each event to the next (the last one up to the last
  CGM reading), overridden by `<temp_basal>` `ts_begin`..`ts_end` `value` (U/h); the rate is
  integrated per minute and added to insulin, so `insulin` is delivered units per interval;
- everything else (finger_stick, sleep, work, exercise, ...) is not used and counted.

The patient id is the export's own id (kept with `--keep-ids`, else hashed); weight and
insulin type are not written. Times are the data set's local (shifted) wall time, kept as
is (the data set has no DST information).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from tailorml.data.importers.common import (
    ImportedReadings,
    amounts_of,
    empty_events,
    events_frame,
    line_shape,
    plausible,
    read_source,
    readings_frame,
    to_mgdl,
    value_shape,
)
from tailorml.errors import CohortError

FORMAT = "ohio"
TIME_FORMAT = "%d-%m-%Y %H:%M:%S"
_USED = {"glucose_level", "meal", "bolus", "basal", "temp_basal"}


def sniff(text: str) -> bool:
    head = text.lstrip()[:2000]
    return "<patient" in head


def _times(values: list[str], name: str, what: str) -> pd.Series:
    parsed = pd.to_datetime(pd.Series(values, dtype=str), format=TIME_FORMAT, errors="coerce")
    if parsed.isna().any():
        first = pd.Series(values)[parsed.isna()].iloc[0]
        raise CohortError(
            f"{name}: OhioT1DM <{what}> timestamp {value_shape(first)} is not dd-mm-YYYY HH:MM:SS"
        )
    return parsed


def parse(source: str | Path) -> ImportedReadings:
    text, name, digest = read_source(source)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise CohortError(f"{name}: not valid OhioT1DM XML ({error}; {line_shape(text)})") from None
    if root.tag != "patient":
        raise CohortError(f"{name}: OhioT1DM XML must have a <patient> root element")
    person = str(root.get("id", "")).strip()
    notes: dict[str, int] = {}

    def events(tag: str) -> list[ET.Element]:
        section = root.find(tag)
        return [] if section is None else section.findall("event")

    for section in root:
        if section.tag not in _USED:
            notes[f"skipped_{section.tag}_events"] = len(section.findall("event"))
    glucose = events("glucose_level")
    if not glucose:
        raise CohortError(f"{name}: OhioT1DM file with no <glucose_level> events")
    times = _times([e.get("ts", "") for e in glucose], name, "glucose_level")
    values = pd.to_numeric(pd.Series([e.get("value") for e in glucose]), errors="coerce")
    notes["glucose_without_value"] = int(values.isna().sum())
    values = to_mgdl(values, "mg/dL", name, "glucose_level value", "OhioT1DM values are mg/dL")
    readings = readings_frame(times, values, person)

    parts = [empty_events()]
    meals = events("meal")
    if meals:
        cells = pd.Series([e.get("carbs") or "" for e in meals], dtype=str)
        amounts = amounts_of(cells, "cho", notes)
        parts.append(
            events_frame(
                _times([e.get("ts", "") for e in meals], name, "meal"),
                "cho",
                amounts,
                person,
                notes=notes,
            )
        )
    boluses = events("bolus")
    for event in boluses:
        begin = _times([event.get("ts_begin") or event.get("ts", "")], name, "bolus").iloc[0]
        end_text = event.get("ts_end")
        end = _times([end_text], name, "bolus").iloc[0] if end_text else begin
        spread_ok = pd.Timedelta(0) <= end - begin <= pd.Timedelta(days=1)
        if not (plausible(pd.Series([begin, end])).all() and spread_ok):
            # spread per minute, a bolus ending decades later would be millions of events
            notes["boluses_with_implausible_times_dropped"] = (
                notes.get("boluses_with_implausible_times_dropped", 0) + 1
            )
            continue
        dose = float(amounts_of(pd.Series([event.get("dose") or ""]), "insulin", notes)[0])
        if not dose > 0:  # missing, unreadable (counted) or negative
            if dose < 0:
                notes["insulin_negative_dropped"] = notes.get("insulin_negative_dropped", 0) + 1
            continue
        minutes = int((end - begin) / pd.Timedelta(minutes=1))
        if minutes <= 0:
            parts.append(events_frame([begin], "insulin", [dose], person))
        else:
            stamps = begin + pd.to_timedelta(np.arange(1, minutes + 1), unit="min")
            parts.append(events_frame(stamps, "insulin", np.full(minutes, dose / minutes), person))
    parts.append(_basal(root, name, times[plausible(times)].max(), person, notes))
    return ImportedReadings(
        format=FORMAT,
        source=name,
        readings=readings,
        events=pd.concat(parts, ignore_index=True),
        notes=notes,
        choices={"basal": "rate integrated per minute into insulin"},
        native_minutes=5,
        sha256=digest,
    )


def _basal(root: ET.Element, name: str, last: pd.Timestamp, person: str, notes) -> pd.DataFrame:
    section = root.find("basal")
    rates = [] if section is None else section.findall("event")
    if not rates:
        return events_frame([], "insulin", [], person)
    starts = _times([e.get("ts", "") for e in rates], name, "basal")
    values = amounts_of(pd.Series([e.get("value") or "" for e in rates]), "basal", notes)
    negative = values < 0
    notes["basal_negative_dropped"] = int(negative.sum())
    # an unreadable or negative rate is not known: no insulin counted until the next rate
    values = values.where(~negative).fillna(0)
    inside = plausible(starts).to_numpy()
    notes["basal_events_dated_before_2000_or_ahead_dropped"] = int((~inside).sum())
    starts, values = starts[inside].reset_index(drop=True), values[inside].reset_index(drop=True)
    if starts.empty:
        return events_frame([], "insulin", [], person)
    order = np.argsort(starts.to_numpy(), kind="stable")
    starts, values = starts.iloc[order].reset_index(drop=True), values.iloc[order].to_numpy()
    origin = starts.iloc[0].floor("min")
    end = starts.iloc[-1] if pd.isna(last) else max(last, starts.iloc[-1])
    total = int((end - origin) / pd.Timedelta(minutes=1))
    if total <= 0:
        return events_frame([], "insulin", [], person)
    minute_of = ((starts - origin) / pd.Timedelta(minutes=1)).astype(int).to_numpy()
    rate = np.zeros(total)
    for index, start in enumerate(minute_of):
        stop = minute_of[index + 1] if index + 1 < len(minute_of) else total
        rate[start:stop] = values[index]
    temps = root.find("temp_basal")
    for event in [] if temps is None else temps.findall("event"):
        begin = _times([event.get("ts_begin", "")], name, "temp_basal").iloc[0]
        end = _times([event.get("ts_end", "")], name, "temp_basal").iloc[0]
        if not plausible(pd.Series([begin, end])).all():
            notes["temp_basal_implausible_dropped"] = (
                notes.get("temp_basal_implausible_dropped", 0) + 1
            )
            continue
        lo = max(0, int((begin - origin) / pd.Timedelta(minutes=1)))
        hi = min(total, int((end - origin) / pd.Timedelta(minutes=1)))
        value = float(pd.to_numeric(event.get("value"), errors="coerce") or 0.0)
        rate[lo:hi] = value
        notes["temp_basal_events"] = notes.get("temp_basal_events", 0) + 1
    stamps = origin + pd.to_timedelta(np.arange(1, total + 1), unit="min")
    return events_frame(stamps, "insulin", rate / 60.0, person)
