"""The shapes Nightscout uploaders speak: entries (CGM readings), treatments (carbs, insulin,
temp basals, targets, profile switches…), devicestatus and profile documents, validated
field by field, and the `find[...]` filters of the Nightscout API.

Why our own validation instead of pydantic models: an uploader posting 288 entries needs
to know *which* entry and field is wrong ("entries[17].sgv: ..."); these checks return
exactly that message and run before any write. A batch is checked record by record
(`partial`): the good records are stored, the bad ones reported by index, so one bad
record cannot hold an uploader's queue forever (Nightscout stores what it can).

What is kept: for entries, the known Nightscout fields, checked (type, sgv/mbg, date,
dateString, direction, device, noise, filtered, unfiltered, rssi, delta, utcOffset,
sysTime...); other entry fields are dropped (the decision reads only these). Treatments,
devicestatus and profile documents are kept whole: their known fields are checked as
before (times, amounts, text), every other field is kept as sent within limits
(`document`: at most 64 KiB of JSON, nested at most 12 deep, names of at most 64 printable
characters not starting with `$`), because uploaders put what they need to sync in them
(AndroidAPS' `isSMB`, `pumpId`, `pumpSerial`; Loop's `syncIdentifier`, `automatic`; xDrip's
`uuid`; temp-target ranges; a profile switch's whole profile). The client's `_id` is not
stored: ids are the service's own (random, per person).
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
# The audit log is read to see who read one's data, so a listing without `count` shows far
# more of it than a page of readings (every upload and read adds a line: about 600 a day)
AUDIT_DEFAULT_COUNT = 1_000
EARLIEST_MS = 946_684_800_000  # 2000-01-01: no CGM reading is older
FUTURE_SLACK_MS = 24 * 3_600_000  # phone clocks run ahead; a day ahead is an error
# sgv and mbg are mg/dL whatever the site shows. No sensor reads above 500 (Libre; Dexcom
# stops at 400 and sends 401 for HIGH, 39 for LOW) nor a meter above 600: a larger value
# is an error of the uploader, and would be decided as a real hyper
SGV_MAX = 600.0
# Below it, a whole number is a sensor's error code (Dexcom 1 "sensor not active", 9
# "absolute deviation"; xDrip's 38): stored as Nightscout stores them, never decided; a
# fraction there is no code and no mg/dL reading (mmol/L sent as mg/dL)
ERROR_CODE_BELOW = 20.0
# A whole number of more digits is no value any field holds: described by its length (an
# integer past Python's 4,300-digit limit is not converted at all)
LONG_NUMBER_DIGITS = 40
WHOLE_NUMBER = re.compile(r"-?[0-9]{1,40}")
TYPE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
MAX_DOCUMENT_BYTES = 64 * 1024
MAX_DEPTH = 12
MAX_NAME = 64


class PayloadError(TailormlError):
    """422/400: what is wrong with the request, naming the record and field."""


class LongNumber:
    """A whole number of a body too long for Python to convert (`read_json`), kept as its
    number of digits so that the check of the field it was sent in can name that field."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"<a number of {self.digits:,} digits>"


class Unrepresentable(float):
    """A JSON number no float holds: `1e-5000` reads as 0 and `1e400` as inf, which is not
    what the client meant (an sgv of 1e-5000 would be stored as the error code 0). Kept as
    the float Python read, with its text, so that the check of its field refuses it by
    name (`_refuse_unrepresentable`) and code that does not check it sees the old value."""

    text: str

    def __new__(cls, value: float, text: str) -> Unrepresentable:
        number = super().__new__(cls, value)
        number.text = text
        return number


def _decimal_number(text: str) -> float:
    """A JSON number with a fraction or exponent: -0.0 is 0 (stored and answered as 0), a
    number that underflows to 0 or overflows to inf is marked `Unrepresentable`."""
    value = float(text)
    if value == 0.0:
        mantissa = text.lower().partition("e")[0]
        return Unrepresentable(0.0, text) if any(c in mantissa for c in "123456789") else 0.0
    return Unrepresentable(value, text) if math.isinf(value) else value


def _unrepresentable(value: Unrepresentable, where: str) -> PayloadError:
    shown = value.text if len(value.text) <= 24 else f"{value.text[:20]}…"
    what = "underflows to 0" if value == 0 else "is beyond the largest number"
    return PayloadError(
        f"{where}: {shown} {what} (a 64-bit float holds about 1e-308 to 1e308); send the "
        "value meant, e.g. 0"
    )


def _whole_number(text: str) -> int | LongNumber:
    digits = len(text.lstrip("-"))
    return LongNumber(digits) if digits > LONG_NUMBER_DIGITS else int(text)


def _too_long(value: LongNumber, where: str) -> PayloadError:
    return PayloadError(f"{where}: a number of {value.digits:,} digits is too long for any field")


def read_json(body: bytes, what: str) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise PayloadError(
            f"{what}: body of {len(body):,} bytes exceeds {MAX_BODY_BYTES:,}; send fewer records "
            "per request"
        )
    try:
        try:
            payload = json.loads(body, parse_float=_decimal_number)
        except ValueError as error:
            if isinstance(error, json.JSONDecodeError | UnicodeDecodeError):
                raise
            # an integer of more digits than Python converts: read again, each such number
            # kept as its length, so that the record and field checks name where it is
            payload = json.loads(body, parse_int=_whole_number, parse_float=_decimal_number)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PayloadError(f"{what}: body is not JSON ({error})") from None
    except RecursionError:
        raise PayloadError(f"{what}: JSON nested too deeply; send flat records") from None
    try:
        json.dumps(payload, ensure_ascii=False, default=repr).encode("utf-8")
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


def _batch(payload: Any, what: str) -> list[Any]:
    """A body's records (one record or a list), refused whole when empty or too many."""
    records = payload if isinstance(payload, list) else [payload]
    if not records:
        raise PayloadError(f"{what}: empty list; send at least one record")
    if len(records) > MAX_RECORDS:
        raise PayloadError(
            f"{what}: {len(records):,} records in one request; send at most {MAX_RECORDS:,}"
        )
    return records


def _records(payload: Any, what: str) -> list[Mapping[str, Any]]:
    records = _batch(payload, what)
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
    if isinstance(value, LongNumber):
        raise _too_long(value, f"{where}.{key}")
    if isinstance(value, Unrepresentable):
        raise _unrepresentable(value, f"{where}.{key}")
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


CALENDAR_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def parse_time_ms(value: Any, where: str) -> int:
    """Epoch milliseconds from a number or an ISO 8601 string with an offset (or Z)."""
    if isinstance(value, bool):
        raise PayloadError(f"{where}: must be epoch milliseconds or ISO 8601, not a boolean")
    if isinstance(value, LongNumber):
        raise _too_long(value, where)
    if isinstance(value, Unrepresentable):
        raise _unrepresentable(value, where)
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise PayloadError(f"{where}: must be finite")
        if not EARLIEST_MS <= value <= int(time.time() * 1000) + FUTURE_SLACK_MS:
            shown = repr(value) if len(repr(value)) <= 24 else f"{repr(value)[:20]}…"
            raise PayloadError(f"{where}: {shown} is before 2000 or more than a day in the future")
        stamp = int(value)
    elif isinstance(value, str) and len(value) <= 64:
        # a calendar date and a time, as uploaders write them: Python also reads week and
        # ordinal dates (2026-W48-5), which the importers (pandas) do not, so a stored one
        # would make every later personalization of the person fail
        if not CALENDAR_TIME.match(value.strip()):
            raise PayloadError(
                f"{where}: {value[:40]!r} is not an ISO 8601 date and time "
                "(YYYY-MM-DDThh:mm:ss with Z or +hh:mm)"
            )
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
        clean[value_key] = _glucose(record, value_key, where)
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


def _glucose(record: Mapping[str, Any], key: str, where: str) -> int | float:
    """A reading in mg/dL up to SGV_MAX, or a sensor's error code (a whole number below
    ERROR_CODE_BELOW)."""
    value = record.get(key)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and value > SGV_MAX and value != math.inf:
        raise PayloadError(
            f"{where}.{key}: {_shown(value)} mg/dL is above {SGV_MAX:g}, more than any sensor "
            "or meter reads (send mg/dL; a sensor's HIGH is 401)"
        )
    value = _number(record, key, where, 0.0, SGV_MAX, required=True)
    if value < ERROR_CODE_BELOW and value != int(value):
        raise PayloadError(
            f"{where}.{key}: {_shown(value)} is no mg/dL reading (below {ERROR_CODE_BELOW:g} "
            "only a sensor's whole-number error codes are stored); send mg/dL, not mmol/L"
        )
    return value


def _shown(value: int | float) -> str:
    return repr(value) if len(repr(value)) <= 24 else f"{repr(value)[:20]}…"


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


TREATMENT_TIMES = ("created_at", "timestamp", "date", "mills")  # Loop sends timestamp too


def _one_instant(record: Mapping[str, Any], where: str, keys: tuple[str, ...]) -> int | None:
    """The record's time from the first of `keys` it has; every other of `keys` it has must
    name the same instant (a minute apart at most): a record stored with two times would
    answer with a contradiction, and the one the server keeps might be the wrong one."""
    key = _time_key(record, keys)
    if key is None:
        return None
    date_ms = parse_time_ms(record[key], f"{where}.{key}")
    for other in keys:
        if other != key and record.get(other) is not None:
            _same_instant(record[other], date_ms, where, other)
    return date_ms


def clean_treatment(record: Mapping[str, Any], where: str) -> dict[str, Any]:
    date_ms = _one_instant(record, where, TREATMENT_TIMES)
    if date_ms is None:
        raise PayloadError(f"{where}: needs created_at (ISO 8601) or date (epoch ms)")
    # every field kept (checked as a document); the known ones checked and normalised below
    clean: dict[str, Any] = document(record, where) | {
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
    for key, limit in (
        ("notes", 2_000),
        ("enteredBy", 128),
        ("glucoseType", 32),
        ("units", 16),
        ("identifier", 128),
    ):
        text = _text(record, key, where, limit)
        if text is not None:
            clean[key] = text
    if "mills" in clean:
        clean["mills"] = date_ms
    return {key: value for key, value in clean.items() if value is not None}


def treatment_key(treatment: Mapping[str, Any]) -> tuple[str, ...]:
    """Which stored treatment an upload is, as Nightscout decides it: its `identifier`
    (AndroidAPS, Loop) when it has one, else its time and eventType."""
    if treatment.get("identifier"):
        return ("treatment-identifier", treatment["identifier"])
    return ("treatment", str(treatment["date"]), treatment["eventType"])


def clean_document(record: Mapping[str, Any], where: str, now_ms: int) -> dict[str, Any]:
    """A devicestatus or profile document, kept whole: its time is created_at, startDate,
    date or mills when given (checked; the first one found), else the server's clock.

    `mills` is answered as that time (Nightscout derives it so), so a `mills` (or, beside
    `created_at`, a `date`) naming another instant is refused rather than replaced. A
    profile's `startDate` (when it takes effect) may differ from its `created_at`."""
    kept = document(record, where)
    first = _time_key(record, ("created_at", "startDate", "date", "mills"))
    same = {"created_at": ("created_at", "date", "mills"), "startDate": ("startDate", "mills")}
    date_ms = _one_instant(record, where, same.get(first, ("date", "mills")))
    if date_ms is None:
        date_ms = now_ms
        kept["created_at"] = iso(now_ms)
    elif first in ("date", "mills"):  # readers (followers, Loop) read a status's created_at
        kept["created_at"] = iso(date_ms)
    kept["mills"] = date_ms
    return kept


def object_id_from(value: Any) -> str | None:
    """A client's `_id` when it is shaped like one of ours (24 lower-case hex digits)."""
    if isinstance(value, str) and OBJECT_ID.match(value.lower()):
        return value.lower()
    return None


def partial(payload: Any, what: str, clean) -> tuple[list[tuple[int, dict]], list[dict]]:
    """Each record of a batch cleaned by `clean(record, where)`: the good ones as
    (index, record), the bad ones as {"index", "message"}. The body itself (not JSON, empty,
    too many records) is still refused whole."""
    records = _batch(payload, what)
    good, bad = [], []
    for index, record in enumerate(records):
        where = f"{what}[{index}]"
        try:
            if not isinstance(record, dict):
                raise PayloadError(f"{where}: must be a JSON object")
            good.append((index, clean(record, where)))
        except PayloadError as error:
            bad.append({"index": index, "message": str(error)})
    return good, bad


def last_of_each(
    good: list[tuple[int, dict]], key_of, what: str
) -> tuple[list[tuple[int, dict]], list[dict]]:
    """Of the records of one batch that are the same stored record (`key_of(index,
    record)`), the last: what Nightscout's upserts in order leave stored. An earlier one
    with other content is refused, naming the later one (stored, it would be replaced at
    once and kept as history: one batch of 900 values for one reading was 899 rows of it);
    one with the same content is a retry, stored once as before."""
    last: dict[Any, tuple[int, dict]] = {}
    for index, record in good:
        last[key_of(index, record)] = (index, record)
    kept, refused = [], []
    for index, record in good:
        later, final = last[key_of(index, record)]
        if later == index or canonical(record) == canonical(final):
            kept.append((index, record))
        else:
            refused.append(
                {
                    "index": index,
                    "message": f"{what}[{index}]: {what}[{later}] of this batch is another "
                    "value for the same record; only the last one is stored",
                }
            )
    return kept, refused


def document(record: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A document kept whole, checked against the limits every stored document has: at
    most MAX_DOCUMENT_BYTES of JSON, nested at most MAX_DEPTH deep, finite numbers, field
    names of at most MAX_NAME printable characters that do not start with `$`. The
    client's `_id` is dropped (ids are the service's)."""
    kept = {key: value for key, value in record.items() if key != "_id"}
    _check_value(kept, where, 0)
    size = len(canonical(kept))
    if size > MAX_DOCUMENT_BYTES:
        raise PayloadError(
            f"{where}: {size:,} bytes of JSON; a document holds at most {MAX_DOCUMENT_BYTES:,}"
        )
    return kept


def _check_value(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise PayloadError(f"{where}: nested more than {MAX_DEPTH} deep")
    if isinstance(value, dict):
        for key, inner in value.items():
            if (
                not isinstance(key, str)
                or not key
                or len(key) > MAX_NAME
                or key.startswith("$")
                or any(ord(c) < 32 for c in key)
            ):
                raise PayloadError(
                    f"{where}: field name {str(key)[:40]!r} must be 1 to {MAX_NAME} printable "
                    "characters, not starting with $"
                )
            _check_value(inner, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _check_value(inner, f"{where}[{index}]", depth + 1)
    elif isinstance(value, LongNumber):
        raise _too_long(value, where)
    elif isinstance(value, Unrepresentable):
        raise _unrepresentable(value, where)
    elif isinstance(value, float) and not math.isfinite(value):
        raise PayloadError(f"{where}: must be a finite number")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        raise PayloadError(f"{where}: {str(value)[:20]}… is larger than a 64-bit integer")


def entries_from(payload: Any) -> list[dict[str, Any]]:
    """Every entry of a POST body, cleaned; the first bad one is an error (nothing stored)."""
    return [clean_entry(r, f"entries[{i}]") for i, r in enumerate(_records(payload, "entries"))]


def treatments_from(payload: Any) -> list[dict[str, Any]]:
    records = _records(payload, "treatments")
    return [clean_treatment(r, f"treatments[{i}]") for i, r in enumerate(records)]


def canonical(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


# Nightscout's trend arrows: the name uploaders send, its number (Dexcom's, as /pebble
# answers it) and the arrow (as /api/v2/properties' direction shows it)
DIRECTIONS = {
    "NONE": (0, "⇼", "&#8700;"),
    "DoubleUp": (1, "⇈", "&#8648;"),
    "SingleUp": (2, "↑", "&#8593;"),
    "FortyFiveUp": (3, "↗", "&#8599;"),
    "Flat": (4, "→", "&#8594;"),
    "FortyFiveDown": (5, "↘", "&#8600;"),
    "SingleDown": (6, "↓", "&#8595;"),
    "DoubleDown": (7, "⇊", "&#8650;"),
    "NOT COMPUTABLE": (8, "-", "-"),
    "RATE OUT OF RANGE": (9, "⇕", "&#8661;"),
}


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


def count_of(value: str | None, default: int = DEFAULT_COUNT) -> int:
    """`count` of a listing: `default` when absent, else a whole number 1..MAX_COUNT."""
    if value is None:
        return default
    try:
        # ASCII digits only: "²" is a digit that int() refuses
        count = int(value) if WHOLE_NUMBER.fullmatch(value) and value[0] != "-" else 0
    except ValueError:  # more digits than int() converts (4,300)
        count = 0
    if not 1 <= count <= MAX_COUNT:
        raise PayloadError(f"count must be a whole number from 1 to {MAX_COUNT:,}, not {value!r}")
    return count


def _number_at(document: Mapping[str, Any], *path: str) -> float | None:
    value: Any = document
    for key in path:
        if isinstance(value, list):
            value = value[0] if value else None
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def _on_board(statuses: list[dict], what: str) -> dict | None:
    """IOB or COB from the newest devicestatus that has it: Loop's `loop.iob.iob` /
    `loop.cob.cob`, OpenAPS/AndroidAPS' `openaps.iob.iob` / `openaps.suggested.COB`, a
    pump's `pump.iob.bolusiob` (Nightscout's iob and cob plugins read the same places)."""
    paths = {
        "iob": [
            ("Loop", ("loop", "iob", "iob")),
            ("OpenAPS", ("openaps", "iob", "iob")),
            ("Pump", ("pump", "iob", "bolusiob")),
        ],
        "cob": [
            ("Loop", ("loop", "cob", "cob")),
            ("OpenAPS", ("openaps", "suggested", "COB")),
            ("OpenAPS", ("openaps", "enacted", "COB")),
        ],
    }[what]
    for status in statuses:
        for source, path in paths:
            value = _number_at(status, *path)
            if value is not None:
                shown = round(value, 2) if what == "iob" else round(value)
                return {
                    what: shown,
                    "display": f"{shown:.2f}" if what == "iob" else str(shown),
                    "source": source,
                    "mills": status.get("mills"),
                    "device": status.get("device"),
                }
    return None


def uploader_battery(statuses: list[dict]) -> int | None:
    """The phone's battery in percent: `uploader.battery` (Loop, AndroidAPS, xDrip+) or the
    older `uploaderBattery` (xDrip+). Documents are stored whole, so a value that is no
    percentage (negative, above 100) is skipped here, never shown to a follower."""
    for status in statuses:
        value = _number_at(status, "uploader", "battery")
        if value is None:
            value = _number_at(status, "uploaderBattery")
        if value is not None and 0 <= value <= 100:
            return round(value)
    return None


def _delta(recent: Mapping[str, Any], previous: Mapping[str, Any] | None) -> dict | None:
    """Nightscout's bgnow delta: per 5 minutes, interpolated when the readings are more
    than 9 minutes apart."""
    if not previous:
        return None
    absolute = recent["sgv"] - previous["sgv"]
    elapsed = (recent["date"] - previous["date"]) / 60_000
    if elapsed <= 0:
        return None
    interpolated = elapsed > 9
    ago = recent["sgv"] - absolute / elapsed * 5 if interpolated else previous["sgv"]
    mgdl = round(recent["sgv"] - ago)
    return {
        "absolute": absolute,
        "elapsedMins": elapsed,
        "interpolated": interpolated,
        "mean5MinsAgo": ago,
        "times": {"recent": recent["date"], "previous": previous["date"]},
        "mgdl": mgdl,
        "scaled": mgdl,
        "display": f"{'+' if mgdl >= 0 else ''}{mgdl}",
        "previous": {"mean": previous["sgv"], "last": previous["sgv"], "mills": previous["date"]},
    }


def properties(readings: list[dict], statuses: list[dict], alert: dict | None) -> dict:
    """Nightscout's /api/v2/properties from the newest two CGM readings (newest first),
    the newest devicestatus documents and tailorml's current decision (`tailorml`, shown
    the way Nightscout's `ar2` forecast plugin offers its own)."""
    found: dict[str, Any] = {}
    if readings:
        recent = readings[0]
        found["bgnow"] = {
            "mean": recent["sgv"],
            "last": recent["sgv"],
            "mills": recent["date"],
            "sgvs": [
                {
                    "_id": recent.get("_id"),
                    "mgdl": recent["sgv"],
                    "mills": recent["date"],
                    "device": recent.get("device"),
                    "direction": recent.get("direction"),
                    "type": "sgv",
                    "scaled": recent["sgv"],
                }
            ],
        }
        delta = _delta(recent, readings[1] if len(readings) > 1 else None)
        if delta is not None:
            found["delta"] = delta
        direction = recent.get("direction")
        if direction in DIRECTIONS:
            _, arrow, entity = DIRECTIONS[direction]
            found["direction"] = {
                "display": arrow,
                "value": direction,
                "label": arrow,
                "entity": entity,
            }
    for what in ("iob", "cob"):
        value = _on_board(statuses, what)
        if value is not None:
            found[what] = value
    battery = uploader_battery(statuses)
    if battery is not None:
        found["upbat"] = {"level": battery, "display": f"{battery}%"}
    if alert is not None:
        found["tailorml"] = _alert_property(alert)
    return found


def _alert_property(alert: dict) -> dict:
    probabilities = alert.get("probabilities") or {}
    kind = alert.get("kind")
    probability = probabilities.get(kind) if kind else probabilities.get("hypo")
    level = {"urgent": "urgent", "alert": "warn", "snoozed": "warn"}.get(alert["decision"])
    words = {
        "urgent": "Urgent low now",
        "alert": f"{(kind or 'alert').capitalize()} predicted within 30 min",
        "snoozed": f"{(kind or 'alert').capitalize()} predicted (snoozed)",
        "none": "In range predicted",
        "no_decision": "No prediction: readings missing",
    }.get(alert["decision"], alert["decision"])
    return {
        "decision": alert["decision"],
        "kind": kind,
        "probability": probability,
        "threshold": alert.get("threshold"),
        "mills": alert["reading_ms"],
        "level": level,
        "stale": alert.get("stale", False),
        "display": words,
        "reason": alert.get("reason"),
        "model_kind": alert.get("model_kind"),
    }


def pebble(readings: list[dict], statuses: list[dict], count: int, now_ms: int) -> dict:
    """Nightscout's /pebble: `status` (the server's clock), `bgs` newest first (sgv as
    text in mg/dL, trend as Dexcom's number, bgdelta to the reading before), `cals`."""
    battery = uploader_battery(statuses)
    iob, cob = _on_board(statuses, "iob"), _on_board(statuses, "cob")
    bgs = []
    for index, reading in enumerate(readings[:count]):
        before = readings[index + 1] if index + 1 < len(readings) else None
        direction = reading.get("direction") or "NONE"
        bg: dict[str, Any] = {
            "sgv": str(round(reading["sgv"])),
            "trend": DIRECTIONS.get(direction, DIRECTIONS["NONE"])[0],
            "direction": direction,
            "datetime": reading["date"],
            "bgdelta": round(reading["sgv"] - before["sgv"]) if before else 0,
        }
        if index == 0:
            if battery is not None:
                bg["battery"] = str(battery)
            if iob is not None:
                bg["iob"] = iob["display"]
            if cob is not None:
                bg["cob"] = cob["cob"]
        bgs.append(bg)
    return {"status": [{"now": now_ms}], "bgs": bgs, "cals": []}


def status(version: str, now_ms: int | None) -> dict:
    """Nightscout's status.json: the server's clock (`serverTime`, `serverTimeEpoch`: apps
    compare it with the phone's), and `settings` with the units and the thresholds apps draw
    (`bgHigh`, `bgTargetTop`, `bgTargetBottom`, `bgLow`, as Nightscout's BG_HIGH...): the
    alert policy's hyper and hypo limits, the consensus 180 mg/dL top of range, and its
    urgent low. No personal data."""
    from tailorml.policy import AlertPolicy

    policy = AlertPolicy()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    thresholds = {
        "bgHigh": policy.hyper_mgdl,
        "bgTargetTop": 180,
        "bgTargetBottom": policy.hypo_mgdl,
        "bgLow": policy.urgent_low_mgdl,
    }
    return {
        "status": "ok",
        "name": "tailorml",
        "version": version,
        "serverTime": iso(now_ms),
        "serverTimeEpoch": now_ms,
        "apiEnabled": True,
        "careportalEnabled": True,
        "boluscalcEnabled": False,
        "settings": {
            "units": "mg/dl",
            "timeFormat": 24,
            "customTitle": "tailorml",
            "theme": "default",
            "alarmTypes": ["simple"],
            "alarmUrgentHigh": False,
            "alarmHigh": True,
            "alarmLow": True,
            "alarmUrgentLow": True,
            "thresholds": thresholds,
            "enable": ["careportal", "iob", "cob", "devicestatus", "tailorml"],
            "showPlugins": "delta direction upbat iob cob tailorml",
        },
        "extendedSettings": {"devicestatus": {"advanced": True}},
        "authorized": None,
    }
