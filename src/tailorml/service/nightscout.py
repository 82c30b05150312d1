"""The shapes Nightscout uploaders speak: entries (CGM readings) and treatments (carbs,
insulin), validated field by field, and the `find[...]` filters of the Nightscout API.

Why our own validation instead of pydantic models: an uploader posting 288 entries needs
to know *which* entry and field is wrong ("entries[17].sgv: ..."), and nothing of a bad
batch may be stored; these checks return exactly that message and run before any write.

What is kept: the known Nightscout fields, checked (type, sgv/mbg, date, dateString,
direction, device, noise, filtered, unfiltered, rssi, delta, utcOffset, sysTime for
entries; eventType, created_at, carbs, insulin, duration, notes, enteredBy, glucose,
glucoseType, units, utcOffset for treatments). Unknown fields are dropped, not stored: a
medical service stores what it understands. Client-side ids (`_id`, `identifier`) are
replaced by the service's own.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tailorml.errors import TailormlError

MAX_BODY_BYTES = 1_000_000
MAX_RECORDS = 2_000
MAX_COUNT = 10_000
DEFAULT_COUNT = 10
EARLIEST_MS = 946_684_800_000  # 2000-01-01: no CGM reading is older
FUTURE_SLACK_MS = 24 * 3_600_000  # phone clocks run ahead; a day ahead is an error
SGV_MAX = 1_000.0  # mg/dL; Nightscout stores mg/dL whatever the site shows
ERROR_CODE_BELOW = 20.0  # Dexcom/xDrip error codes, not glucose (see data.importers)
WHOLE_NUMBER = re.compile(r"-?[0-9]{1,40}")
TYPE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


class PayloadError(TailormlError):
    """422/400: what is wrong with the request, naming the record and field."""


def read_json(body: bytes, what: str) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise PayloadError(
            f"{what}: body of {len(body):,} bytes exceeds {MAX_BODY_BYTES:,}; send fewer records "
            "per request"
        )
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PayloadError(f"{what}: body is not JSON ({error})") from None
    except RecursionError:
        raise PayloadError(f"{what}: JSON nested too deeply; send flat records") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise PayloadError(f"{what}: a number in the body is too long ({error})") from None
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        # a lone UTF-16 surrogate ("\ud800") would be stored and then break every answer
        # that contains it: refused before anything is stored
        raise PayloadError(
            f"{what}: text with a lone UTF-16 surrogate (e.g. \\ud800) is not valid Unicode; "
            "send UTF-8 text"
        ) from None
    except RecursionError:
        raise PayloadError(f"{what}: JSON nested too deeply; send flat records") from None
    return payload


def _records(payload: Any, what: str) -> list[Mapping[str, Any]]:
    records = payload if isinstance(payload, list) else [payload]
    if not records:
        raise PayloadError(f"{what}: empty list; send at least one record")
    if len(records) > MAX_RECORDS:
        raise PayloadError(
            f"{what}: {len(records):,} records in one request; send at most {MAX_RECORDS:,}"
        )
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise PayloadError(f"{what}[{index}]: must be a JSON object")
    return records


def _number(record, key, where, low, high, required=False) -> int | float | None:
    """The value as sent (an uploader's integer mg/dL stays an integer), checked."""
    value = record.get(key)
    if value is None:
        if required:
            raise PayloadError(f"{where}.{key}: required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(f"{where}.{key}: must be a number, not {type(value).__name__}")
    # an integer is compared as an integer: a 400-digit one cannot become a float
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        shown = repr(value) if len(repr(value)) <= 24 else f"{repr(value)[:20]}…"
        raise PayloadError(f"{where}.{key}: {shown} is outside {low:g}..{high:g}")
    return value


def _text(record, key, where, limit) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{where}.{key}: must be a string, not {type(value).__name__}")
    if len(value) > limit or any(ord(c) < 32 for c in value):
        raise PayloadError(f"{where}.{key}: at most {limit} printable characters")
    return value


def parse_time_ms(value: Any, where: str) -> int:
    """Epoch milliseconds from a number or an ISO 8601 string with an offset (or Z)."""
    if isinstance(value, bool):
        raise PayloadError(f"{where}: must be epoch milliseconds or ISO 8601, not a boolean")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise PayloadError(f"{where}: must be finite")
        if not EARLIEST_MS <= value <= int(time.time() * 1000) + FUTURE_SLACK_MS:
            shown = repr(value) if len(repr(value)) <= 24 else f"{repr(value)[:20]}…"
            raise PayloadError(f"{where}: {shown} is before 2000 or more than a day in the future")
        stamp = int(value)
    elif isinstance(value, str) and len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise PayloadError(f"{where}: {value!r} is not ISO 8601") from None
        if parsed.tzinfo is None:
            raise PayloadError(
                f"{where}: {value!r} has no UTC offset; add Z or +hh:mm (Nightscout times are "
                "UTC instants)"
            )
        stamp = int(parsed.timestamp() * 1000)
    else:
        raise PayloadError(f"{where}: must be epoch milliseconds or an ISO 8601 string")
    latest = int(time.time() * 1000) + FUTURE_SLACK_MS
    if not EARLIEST_MS <= stamp <= latest:
        raise PayloadError(f"{where}: {value!r} is before 2000 or more than a day in the future")
    return stamp


def iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def clean_entry(record: Mapping[str, Any], where: str) -> dict[str, Any]:
    kind = record.get("type", "sgv")
    if not isinstance(kind, str) or not TYPE_PATTERN.match(kind):
        raise PayloadError(f"{where}.type: {str(kind)[:40]!r} is not an entry type (e.g. sgv)")
    if kind.lower() in ("sgv", "mbg", "cal"):  # "SGV" would keep no value and never decide
        kind = kind.lower()
    if record.get("date") is not None:
        date_ms = parse_time_ms(record["date"], f"{where}.date")
    elif record.get("dateString") is not None:
        date_ms = parse_time_ms(record["dateString"], f"{where}.dateString")
    elif record.get("sysTime") is not None:
        date_ms = parse_time_ms(record["sysTime"], f"{where}.sysTime")
    else:
        raise PayloadError(f"{where}: needs date (epoch ms) or dateString (ISO 8601)")
    clean: dict[str, Any] = {"type": kind, "date": date_ms}
    written = _text(record, "dateString", where, 64)
    # every time given must name the same instant (a minute apart at most), or one of them
    # is wrong and storing both would answer with a contradiction
    for key in ("dateString", "sysTime"):
        if record.get(key) is not None and key != _time_key(record, ("date", "dateString")):
            try:
                _same_instant(record[key], date_ms, where, key)
            except PayloadError:
                if key == "dateString" or _readable_time(record[key]):
                    raise  # a sysTime in a form we do not read stays text, as before
    clean["dateString"] = written or iso(date_ms)
    value_key = {"sgv": "sgv", "mbg": "mbg"}.get(kind)
    if value_key:
        clean[value_key] = _number(record, value_key, where, 0.0, SGV_MAX, required=True)
    for key, limit in (("direction", 32), ("device", 128), ("sysTime", 64)):
        text = _text(record, key, where, limit)
        if text is not None:
            clean[key] = text
    for key, low, high in (
        ("noise", 0, 10),
        ("filtered", 0, 1e7),
        ("unfiltered", 0, 1e7),
        ("rssi", -1e4, 1e4),
        ("delta", -1e3, 1e3),
        ("utcOffset", -1440, 1440),
        ("slope", -1e9, 1e9),
        ("intercept", -1e9, 1e9),
        ("scale", -1e9, 1e9),
    ):
        number = _number(record, key, where, low, high)
        if number is not None:
            clean[key] = int(number) if key == "utcOffset" else number
    return clean


def _time_key(record: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    return next((key for key in keys if record.get(key) is not None), None)


def _readable_time(value: Any) -> bool:
    try:
        parse_time_ms(value, "")
    except PayloadError:
        return False
    return True


def _same_instant(value: Any, date_ms: int, where: str, key: str) -> None:
    """`value` (another time field of the record) within a minute of `date_ms`."""
    other = parse_time_ms(value, f"{where}.{key}")
    if abs(other - date_ms) > 60_000:
        raise PayloadError(
            f"{where}: {key} ({iso(other)}) is {abs(other - date_ms) / 60_000:,.0f} min from "
            f"the record's time ({iso(date_ms)}); send one time, or all for the same instant"
        )


def clean_treatment(record: Mapping[str, Any], where: str) -> dict[str, Any]:
    for key in ("created_at", "date", "mills"):
        if record.get(key) is not None:
            date_ms = parse_time_ms(record[key], f"{where}.{key}")
            break
    else:
        raise PayloadError(f"{where}: needs created_at (ISO 8601) or date (epoch ms)")
    for other in ("date", "mills"):
        if other != key and record.get(other) is not None:
            _same_instant(record[other], date_ms, where, other)
    clean: dict[str, Any] = {
        "eventType": _text(record, "eventType", where, 64) or "<none>",
        "created_at": iso(date_ms),
        "date": date_ms,
    }
    for key, low, high in (
        ("carbs", 0, 1_000),
        ("insulin", 0, 200),
        ("duration", 0, 100_000),
        ("glucose", 0, 1_000),
        ("utcOffset", -1440, 1440),
        ("absolute", 0, 100),
        ("rate", 0, 100),
    ):
        number = _number(record, key, where, low, high)
        if number is not None:
            clean[key] = int(number) if key == "utcOffset" else number
    for key, limit in (("notes", 2_000), ("enteredBy", 128), ("glucoseType", 32), ("units", 16)):
        text = _text(record, key, where, limit)
        if text is not None:
            clean[key] = text
    return clean


def entries_from(payload: Any) -> list[dict[str, Any]]:
    """Every entry of a POST body, cleaned; the first bad one is an error (nothing stored)."""
    return [clean_entry(r, f"entries[{i}]") for i, r in enumerate(_records(payload, "entries"))]


def treatments_from(payload: Any) -> list[dict[str, Any]]:
    records = _records(payload, "treatments")
    return [clean_treatment(r, f"treatments[{i}]") for i, r in enumerate(records)]


def canonical(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def object_id(row_id: int) -> str:
    """A 24-hex id shaped like Nightscout's (MongoDB ObjectId), from the row id."""
    return f"{row_id:024x}"


FIND_PATTERN = re.compile(r"^find\[(?P<field>[A-Za-z_]+)\](?:\[\$(?P<op>gte|gt|lte|lt|eq)\])?$")


def time_filter(
    query: Mapping[str, str],
    time_fields: tuple[str, ...],
    equal_fields: tuple[str, ...] = (),
) -> tuple[int | None, int | None, dict[str, str]]:
    """(since_ms, until_ms, equality filters) from `find[...]` query parameters.

    Times accept epoch ms or ISO 8601 on any of `time_fields` ($gte/$gt/$lte/$lt); other
    fields accept equality only (e.g. find[type]=sgv). Unknown shapes are an error, not
    silently ignored: an ignored filter would return data the caller did not ask for."""
    since, until, equal = None, None, {}
    for key, value in query.items():
        if not key.startswith("find"):
            continue
        match = FIND_PATTERN.match(key)
        if not match:
            raise PayloadError(f"query {key[:60]!r}: use find[field] or find[field][$op]")
        field, op = match["field"], match["op"] or "eq"
        if field in time_fields:
            if op == "eq":
                raise PayloadError(f"{key}: time filters take $gte, $gt, $lte or $lt")
            if len(value) > 64:
                raise PayloadError(f"{key}: {value[:20]!r}… is not epoch ms or ISO 8601")
            # ASCII digits with at most one sign: "²" is a digit and "--5" strips to one,
            # and int() refuses both (a 500, not a 422)
            raw: Any = int(value) if WHOLE_NUMBER.fullmatch(value) else value
            # before 2000 or past 9999 means "everything": clamped, not an overflow
            stamp = min(max(_filter_time(raw, key), -(2**62)), 2**62)
            if op in ("gte", "gt"):
                stamp += op == "gt"
                since = stamp if since is None else max(since, stamp)
            else:
                stamp -= op == "lt"
                until = stamp if until is None else min(until, stamp)
        elif field in equal_fields and op == "eq":
            if len(value) > 64:
                raise PayloadError(f"{key}: value too long")
            equal[field] = value
        else:
            allowed = [f"find[{f}][$gte|$gt|$lte|$lt]" for f in time_fields]
            allowed += [f"find[{f}]" for f in equal_fields]
            raise PayloadError(f"unsupported filter {key}; supported: {', '.join(allowed)}")
    return since, until, equal


def _filter_time(raw: Any, key: str) -> int:
    if isinstance(raw, int):
        return raw
    try:
        parsed = datetime.fromisoformat(str(raw).strip().replace("Z", "+00:00"))
    except ValueError:
        raise PayloadError(f"{key}: {str(raw)[:40]!r} is not epoch ms or ISO 8601") from None
    if parsed.tzinfo is None:
        # as uploads: a time without an offset is not an instant
        raise PayloadError(
            f"{key}: {str(raw)[:40]!r} has no UTC offset; add Z or +hh:mm, or use epoch ms"
        )
    return int(parsed.timestamp() * 1000)


def count_of(value: str | None) -> int:
    if value is None:
        return DEFAULT_COUNT
    try:
        # ASCII digits only: "²" is a digit that int() refuses
        count = int(value) if WHOLE_NUMBER.fullmatch(value) and value[0] != "-" else 0
    except ValueError:  # more digits than int() converts (4,300)
        count = 0
    if not 1 <= count <= MAX_COUNT:
        raise PayloadError(f"count must be a whole number from 1 to {MAX_COUNT:,}, not {value!r}")
    return count
