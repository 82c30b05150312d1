"""The query of Nightscout API v3's SEARCH, read as Nightscout's `lib/api3/generic/search/
input.js` reads it: `<field>$<op>=value` filters (eq, ne, gt, gte, lt, lte, in, nin),
`sort`/`sort$desc`, `limit`, `skip` and `fields`. AndroidAPS sends `date$gt` (epoch ms),
`created_at$gt` (ISO 8601), `type=sgv` and `sort$desc=date`.

Time fields (date, created_at, mills, srvModified, srvCreated) bound the SQL query; any other
field is sealed at rest, so its filter runs on the opened records."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tailorml.errors import TailormlError
from tailorml.service import nightscout

MAX_LIMIT = 1_000  # Nightscout's API3_MAX_LIMIT, also its default
RESERVED = frozenset(("token", "sort", "sort$desc", "limit", "skip", "fields", "now", "patient"))
OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
TIME_COLUMNS = {
    "date": "date_ms",
    "created_at": "date_ms",
    "mills": "date_ms",
    "srvModified": "srv_modified",
    "srvCreated": "srv_created",
}
FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")


class BadQuery(TailormlError):
    """400, as Nightscout's API v3 answers a query it cannot read."""


@dataclass(frozen=True)
class Search:
    bounds: dict[str, tuple[int | None, int | None]]
    order: tuple[str, bool]
    matches: Callable[[dict], bool]
    skip: int
    limit: int
    fields: tuple[str, ...] | None


def whole(value: str | None, name: str, low: int, high: int, default: int) -> int:
    if value is None or value == "":
        return default
    if not nightscout.WHOLE_NUMBER.fullmatch(value) or not low <= int(value) <= high:
        raise BadQuery(f"Parameter {name} out of tolerance ({low} to {high})")
    return int(value)


def limit_of(params: Mapping[str, str]) -> int:
    return whole(params.get("limit"), "limit", 1, MAX_LIMIT, MAX_LIMIT)


def fields_of(params: Mapping[str, str]) -> tuple[str, ...] | None:
    """`fields=a,b` (only those), `_all` or none (everything)."""
    wanted = params.get("fields")
    if not wanted or wanted == "_all":
        return None
    return tuple(f for f in wanted.split(",")[:64] if f)


def project(records: list[dict], fields: tuple[str, ...] | None) -> list[dict]:
    if fields is None:
        return records
    return [{k: v for k, v in r.items() if k in fields} for r in records]


def _value(field: str, text: str) -> Any:
    """As Nightscout parses a filter's value: a number, true/false, 'quoted' text; a time
    field's value as epoch ms (a number or ISO 8601)."""
    if field in TIME_COLUMNS:
        if nightscout.WHOLE_NUMBER.fullmatch(text):
            return int(text)
        return nightscout.parse_time_ms(text, f"{field} filter")
    if re.fullmatch(r"-?[0-9]{1,15}(\.[0-9]{1,15})?", text):
        return float(text)
    if text in ("true", "false"):
        return text == "true"
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    return text


def _compare(op: str, have: Any, want: Any) -> bool:
    if op == "eq":
        return have == want
    if op == "ne":
        return have != want
    if op in ("in", "nin"):
        found = have in want
        return found if op == "in" else not found
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (have, want))
    if not numbers and not (isinstance(have, str) and isinstance(want, str)):
        return False
    return {"gt": have > want, "gte": have >= want, "lt": have < want, "lte": have <= want}[op]


def search_of(params: Mapping[str, str], keys: list[str]) -> Search:
    """The search a query asks for (`keys`: the query's parameter names, in order)."""
    if len(keys) != len(set(keys)):
        raise BadQuery("give each query parameter once")
    bounds: dict[str, list[int | None]] = {}
    checks: list[tuple[str, str, Any]] = []
    for key in keys:
        if key in RESERVED:
            continue
        field, _, op = key.partition("$")
        op = op or "eq"
        if op not in OPERATORS:
            raise BadQuery(f"Unsupported filter operator {op[:20]}")
        if not FIELD.fullmatch(field):
            raise BadQuery(f"{field[:40]!r} is not a field name")
        text = params[key]
        if len(text) > 256:
            raise BadQuery(f"{key}: a filter value holds at most 256 characters")
        if field in TIME_COLUMNS and op not in ("in", "nin", "ne"):
            column = TIME_COLUMNS[field]
            value = _value(field, text)
            low, high = bounds.setdefault(column, [None, None])
            if op in ("gt", "gte", "eq"):
                start = value + (op == "gt")
                low = start if low is None else max(low, start)
            if op in ("lt", "lte", "eq"):
                end = value - (op == "lt")
                high = end if high is None else min(high, end)
            bounds[column] = [low, high]
            continue
        if op in ("in", "nin"):
            value = [_value(field, part) for part in text.split("|")[:100]]
        else:
            value = _value(field, text)
        checks.append((field, op, value))

    def matches(record: dict) -> bool:
        for field, op, want in checks:
            have = record.get(field)
            if TIME_COLUMNS.get(field) == "date_ms":  # the record's time, in ms
                have = record.get("date", record.get("mills"))
            if not _compare(op, have, want):
                return False
        return True

    return Search(
        {c: (low, high) for c, (low, high) in bounds.items()},
        order_of(params),
        matches,
        whole(params.get("skip"), "skip", 0, 10**9, 0),
        limit_of(params),
        fields_of(params),
    )


def order_of(params: Mapping[str, str]) -> tuple[str, bool]:
    """(column, descending): `sort=F` or `sort$desc=F` on a time field; by date otherwise."""
    if params.get("sort") and params.get("sort$desc"):
        raise BadQuery("Parameters sort and sort_desc cannot be combined")
    field = params.get("sort$desc") or params.get("sort") or "date"
    if field not in TIME_COLUMNS and field != "identifier":
        raise BadQuery(
            f"sort by {field[:40]!r}: this service sorts by date, created_at, mills, "
            "srvModified or srvCreated"
        )
    return TIME_COLUMNS.get(field, "date_ms"), bool(params.get("sort$desc"))
