"""Nightscout JSON: entries (`/api/v1/entries.json`) and treatments (`/api/v1/treatments.json`).

Entries come newest first. Each has `date` (epoch milliseconds, UTC), `dateString` (ISO
8601), `type` and, for `type: "sgv"`, `sgv` (mg/dL: Nightscout stores mg/dL whatever the
site displays), `direction`, and usually `utcOffset` (minutes east of UTC at the uploader).
Only `sgv` entries are CGM readings: `mbg` (finger sticks), `cal` (calibrations) and any other
type are skipped and counted per type (`skipped_type_<type>`). An `sgv` below 20 is a
Dexcom/xDrip error code (e.g. 1 "sensor not active", 9 "absolute"), not glucose: skipped
and counted (`sgv_error_codes`).

Treatments (`eventType`, `created_at` UTC, `carbs` g, `insulin` U, `utcOffset`): carbs and
insulin doses become events; treatments with neither (temp basals, notes, sensor starts)
are counted as `treatments_without_carbs_or_insulin`. Basal rates are not integrated.

Time: every record's UTC instant (`date`, else `created_at`/`dateString`) is turned into
the person's local wall time with that record's own `utcOffset`, so a DST change or a trip
moves the wall clock exactly as the uploader's phone did. Records without `utcOffset` use
`timezone` (an IANA name such as Europe/Berlin, `--timezone`), else the offset written in
`dateString` when it is not UTC; if none of these exists the import stops and asks for
`--timezone` rather than guessing. In the repeated autumn hour the second reading of a grid
slot is dropped and counted; the skipped spring hour is simply absent.

A file may hold entries, treatments, or both; the `{"entries": [...], "treatments": [...]}`
shape is accepted too.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from tailorml.data.importers.common import (
    AHEAD_DAYS,
    EARLIEST_READING,
    ImportedReadings,
    amounts_of,
    empty_events,
    empty_readings,
    events_frame,
    read_source,
    readings_frame,
    to_mgdl,
    value_shape,
)
from tailorml.errors import CohortError

# the importers' plausible span (common.plausible), as epoch milliseconds
EARLIEST_MS = int(EARLIEST_READING.tz_localize("UTC").timestamp() * 1000)
AHEAD_MS = AHEAD_DAYS * 86_400_000

FORMAT = "nightscout"
SGV_ERROR_BELOW = 20.0


def sniff(text: str) -> bool:
    head = text.lstrip()[:4000]
    return head[:1] in "[{" and any(
        key in head for key in ('"sgv"', '"eventType"', '"dateString"', '"created_at"', '"date"')
    )


def _records(text: str, name: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise CohortError(f"{name}: not valid Nightscout JSON ({error})") from None
    except RecursionError:
        raise CohortError(f"{name}: Nightscout JSON nested too deeply to be an export") from None
    except ValueError as error:  # an integer of thousands of digits
        raise CohortError(f"{name}: a number in the file is too long ({error})") from None
    if isinstance(data, dict):
        parts = [data.get("entries") or [], data.get("treatments") or []]
        if not all(isinstance(part, list) for part in parts):
            raise CohortError(
                f"{name}: Nightscout JSON 'entries' and 'treatments' must be lists of records"
            )
        data = parts[0] + parts[1]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise CohortError(
            f"{name}: Nightscout JSON must be a list of records as /api/v1/entries.json "
            f"returns it, not {_json_kind(data)}"
        )
    return data


def _local_times(
    records: list[dict], name: str, timezone: str | None
) -> tuple[pd.Series, np.ndarray]:
    """Local wall time of each record (rules in the module docstring), and the order of
    the records by their UTC instant (so the first reading in real time wins a repeated
    wall-clock time in the autumn DST hour)."""
    zone = None
    if timezone:
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CohortError(
                f"--timezone {timezone!r} is not an IANA time zone (e.g. Europe/Berlin, UTC)"
            ) from None
    result, instants = [], []
    for record in records:
        stamp = record.get("dateString") or record.get("created_at") or record.get("timestamp")
        written = None
        if isinstance(stamp, str) and stamp:
            try:
                written = pd.Timestamp(stamp)
            except (ValueError, OverflowError):
                raise CohortError(
                    f"{name}: Nightscout record time {value_shape(stamp)} is not ISO 8601"
                ) from None
        if isinstance(record.get("date"), int | float):
            instant = pd.Timestamp(int(record["date"]), unit="ms", tz="UTC")
        elif isinstance(record.get("mills"), int | float):
            instant = pd.Timestamp(int(record["mills"]), unit="ms", tz="UTC")
        elif written is not None:
            instant = written if written.tzinfo else written.tz_localize("UTC")
        elif record.get("date") is not None or record.get("mills") is not None:
            given = record.get("date", record.get("mills"))
            raise CohortError(  # e.g. "1710921600000" in quotes: text, not a number
                f"{name}: a Nightscout record's date {value_shape(given)} is "
                f"{type(given).__name__}, not epoch milliseconds (a JSON number); fix the export"
            )
        else:
            raise CohortError(f"{name}: a Nightscout record has no date, dateString or created_at")
        offset = record.get("utcOffset")
        if isinstance(offset, bool):
            offset = None
        if isinstance(offset, int | float) and not (
            math.isfinite(offset) and abs(offset) <= 24 * 60
        ):
            raise CohortError(
                f"{name}: Nightscout record at {instant.isoformat()} has utcOffset {offset!r}; "
                "it must be minutes within ±1440 (fix or remove it)"
            )
        if isinstance(offset, int | float):
            local = instant.tz_convert(None) + pd.Timedelta(minutes=float(offset))
        elif zone is not None:
            local = instant.tz_convert(zone).tz_localize(None)
        elif written is not None and written.tzinfo and written.utcoffset() != pd.Timedelta(0):
            local = written.tz_localize(None)
        else:
            raise CohortError(
                f"{name}: Nightscout record at {instant.isoformat()} has no utcOffset and its "
                "time is UTC; pass --timezone with the person's IANA zone (e.g. Europe/Berlin, "
                "or UTC) so readings get local wall time"
            )
        result.append(local)
        instants.append(instant.value)
    order = np.argsort(np.asarray(instants, dtype=np.int64), kind="stable")
    return pd.Series(pd.to_datetime(result), dtype="datetime64[ns]"), order


def parse(source: str | Path, timezone: str | None = None) -> ImportedReadings:
    text, name, digest = read_source(source)
    records = _records(text, name)
    treatments = [r for r in records if "eventType" in r or ("created_at" in r and "sgv" not in r)]
    entries = [
        r for r in records if not ("eventType" in r or ("created_at" in r and "sgv" not in r))
    ]
    notes: Counter = Counter()
    kinds = [str(r.get("type", "sgv" if "sgv" in r else "unknown")) for r in entries]
    for kind in kinds:
        if kind != "sgv":
            notes[f"skipped_type_{kind}"] += 1
    sgv = [r for r, kind in zip(entries, kinds, strict=True) if kind == "sgv"]
    readings = empty_readings()
    if sgv:
        values = pd.to_numeric(pd.Series([r.get("sgv") for r in sgv]), errors="coerce")
        notes["sgv_without_value"] += int(values.isna().sum())
        codes = values < SGV_ERROR_BELOW
        notes["sgv_error_codes"] += int(codes.sum())
        keep = (values.notna() & ~codes).to_numpy()
        dated = np.array([_epoch_ok(r, notes) for r in sgv], dtype=bool)
        keep = keep & dated
        kept = [r for r, k in zip(sgv, keep, strict=True) if k]
        if not kept:
            raise CohortError(f"{name}: {_no_readings(values, codes)}")
        times, order = _local_times(kept, name, timezone)
        fix = "Nightscout sgv is mg/dL; this file seems to hold mmol/L values"
        values = to_mgdl(values[keep].reset_index(drop=True), "mg/dL", name, "sgv", fix)
        readings = readings_frame(times.iloc[order], values.iloc[order])
    elif not treatments:
        seen = _types_seen(kinds)
        raise CohortError(
            f"{name}: Nightscout entries with no CGM (sgv) readings (types seen: {seen}); "
            "export /api/v1/entries/sgv.json?count=... for a time range with sensor data"
        )

    events = [empty_events()]
    treatments = [r for r in treatments if _epoch_ok(r, notes)]
    if treatments:
        times, _ = _local_times(treatments, name, timezone)
        for key, target in (("carbs", "cho"), ("insulin", "insulin")):
            cells = pd.Series(["" if r.get(key) is None else str(r.get(key)) for r in treatments])
            amounts = amounts_of(cells, target, notes)
            events.append(events_frame(times, target, amounts, notes=notes))
        neither = [
            not (_positive(r.get("carbs")) or _positive(r.get("insulin"))) for r in treatments
        ]
        notes["treatments_without_carbs_or_insulin"] += int(np.sum(neither))
    return ImportedReadings(
        format=FORMAT,
        source=name,
        readings=readings,
        events=pd.concat(events, ignore_index=True),
        notes=dict(notes),
        choices={"timezone_fallback": timezone or "none (utcOffset required)"},
        native_minutes=5,
        sha256=digest,
    )


def _no_readings(values: pd.Series, codes: pd.Series) -> str:
    """Why no sgv record is a reading: no value, only values below 20 (error codes, or
    mmol/L sent as mg/dL), or no usable time. It said "no usable time" for all three."""
    valued = values.notna() & ~codes
    if valued.to_numpy().any():
        return (
            "no sgv record has a usable time (see the counts: dates in seconds or out of "
            "range); Nightscout's date is epoch milliseconds"
        )
    below = values[codes]
    if len(below) and (below != below.round()).any():
        return (
            f"every sgv value is below {SGV_ERROR_BELOW:g} (e.g. {below.iloc[0]:g}): Nightscout "
            "sgv is mg/dL and this file seems to hold mmol/L values; convert them (x 18.016)"
        )
    return (
        f"no sgv record has a glucose value ({int(values.isna().sum())} without one, "
        f"{int(codes.sum())} sensor error codes below {SGV_ERROR_BELOW:g} mg/dL)"
    )


def _epoch_ok(record: dict, notes: Counter) -> bool:
    """Whether a record's numeric `date`/`mills` is an epoch in milliseconds from 2000 to
    two days ahead; one that is not is counted and dropped, never turned into a reading in
    1970 or a traceback (a date in seconds, `-1`, `1e20`)."""
    latest = time.time() * 1000 + AHEAD_MS
    for key in ("date", "mills"):
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if EARLIEST_MS <= value <= latest:
            return True
        seconds = EARLIEST_MS <= value * 1000 <= latest
        notes["dates_in_seconds_dropped" if seconds else "dates_out_of_range_dropped"] += 1
        return False
    return True


# entry types Nightscout and its uploaders write; an error names these, and only counts others
KNOWN_TYPES = frozenset({"sgv", "mbg", "cal", "sensor", "etc", "unknown", "rawbg", "note"})


def _types_seen(kinds: list[str]) -> str:
    counts = Counter(kind if kind in KNOWN_TYPES else "(other)" for kind in kinds)
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


def not_records(text: str) -> str | None:
    """Why a JSON file that `sniff` did not take is not a Nightscout export (for the format
    detection's error), without quoting it; None when it is one after all (its keys come
    after the first 4,000 characters `sniff` looks at)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:  # its message names a position, not the content
        return f"starts like JSON but does not parse ({error}); check the file"
    except (ValueError, RecursionError):
        return "starts like JSON but does not parse; check the file"
    if isinstance(data, dict) and "entries" not in data and "treatments" not in data:
        data = [data] if data else []
    if isinstance(data, dict):
        parts = [data.get("entries") or [], data.get("treatments") or []]
        if not all(isinstance(part, list) for part in parts):
            return "JSON whose 'entries' and 'treatments' are not lists of records"
        data = parts[0] + parts[1]
    if isinstance(data, list) and not data:
        return "JSON with no records (an empty Nightscout export?); export a time range with data"
    keys = {"sgv", "date", "dateString", "created_at", "eventType"}
    if isinstance(data, list) and any(isinstance(r, dict) and keys & r.keys() for r in data[:10]):
        return None
    return (
        "JSON, but not Nightscout records (no 'sgv', 'date', 'dateString', 'created_at' or "
        "'eventType' near the start of the file)"
    )


def _json_kind(data) -> str:
    """What a JSON document is, without its values (they can be a person's data)."""
    if isinstance(data, list):
        odd = next(item for item in data if not isinstance(item, dict))
        return f"a list holding {type(odd).__name__} values"
    return f"a JSON {type(data).__name__}"


def _positive(value) -> bool:
    try:
        return float(str(value).replace(",", ".")) > 0
    except (TypeError, ValueError):
        return False
