"""Compact plaintext layouts for the two records stored once per CGM reading: an sgv entry
and its alert decision (less per reading; issue "Beyond one machine", item 4).

Before, both were sealed as JSON padded with spaces (entries to 512 bytes, decisions to
768) so that a row's length told nothing about its values: about 540 and 800 bytes sealed.
Here each is laid out at fixed width — every number a float64 or an int64 whatever its
value, codes for the words of a small vocabulary (entry type, trend arrow, decision,
class) — and only what has no slot (the uploader's device name, an unusual field) goes as
JSON text after the fixed part. The plaintext is then padded with zeros to a bucket
(`ENTRY_BUCKET`, `ALERT_BUCKET`), so its length depends on which fields an uploader sends
(the same for every reading it uploads), never on their values: a 2-digit sgv and a
3-digit one, "no decision" and an alert, seal to the same length
(`tests/service/test_sealed_lengths.py`).

Pure codecs, no keys: `service.crypto.DataCipher` seals these plaintexts and falls back to
padded JSON for any record a layout cannot reproduce byte for byte (it checks by decoding
what it encoded). The registry uses `alert_context` and `attach`/`detach`: a decision's
reading time and model (id, sha256, kind) are columns of `alerts` already, so its sealed
bytes do not repeat them — they are bound to the ciphertext as associated data instead
(a decision moved to another reading or model does not open), stripped from what is
stored and put back from the columns when the row is read.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from datetime import UTC, datetime
from typing import Any

# the first byte of a compact sealed record (then the nonce, the ciphertext and the tag).
# An older row starts with its random nonce, so a row starting with one of these bytes may
# still be an older one (1 in 256): the cipher tries the compact reading first and the old
# one when the tag does not verify.
ENTRY_FORMAT = 0xE1
ALERT_FORMAT = 0xA1
ENTRY_BUCKET = 64
ALERT_BUCKET = 96

ENTRY_TYPES = ("sgv", "mbg", "cal")
DIRECTIONS = (
    "NONE",
    "DoubleUp",
    "SingleUp",
    "FortyFiveUp",
    "Flat",
    "FortyFiveDown",
    "SingleDown",
    "DoubleDown",
    "NOT COMPUTABLE",
    "RATE OUT OF RANGE",
)
ENTRY_NUMBERS = (
    "sgv",
    "mbg",
    "noise",
    "filtered",
    "unfiltered",
    "rssi",
    "delta",
    "utcOffset",
    "slope",
    "intercept",
    "scale",
)
DECISIONS = ("alert", "snoozed", "none", "no_decision", "urgent")
CLASSES = ("in_range", "hypo", "hyper", "low", "high", "normal")
ALERT_KEYS = (
    "reading_ms",
    "decision",
    "kind",
    "probabilities",
    "threshold",
    "reason",
    "model_id",
    "model_sha256",
    "model_kind",
    "cgm",
)
# the fixed words of a decision's reason (tailorml.policy, service.live), one byte each:
# which of them a reason holds depends on the decision, which the bucket hides
REASON_WORDS = (
    " predicted within ",
    " min (P ",
    ": held on until it falls below ",
    "; still falling, ",
    " mg/dL below the last alert",
    "; an alert was raised less than ",
    " min ago",
    "urgent low: ",
    " mg/dL, at or below ",
    " mg/dL, below ",
    " mg/dL and falling",
    " readings missing in the last ",
    " min; no decision without a full window",
    "in range predicted",
    "the model could not run (",
    "); see the service log",
    "hypo",
    "hyper",
)
UNKNOWN = 0xFF
_INT_LIMIT = 2**53


def canonical(record: Any) -> bytes:
    """JSON as the service seals a record (`service.nightscout.canonical`)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def iso_ms(ms: int) -> str:
    """An entry's dateString as the service writes it (`service.nightscout.iso`)."""
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _pad(body: bytes, bucket: int) -> bytes:
    return body + b"\0" * (-len(body) % bucket)


def _rest(extra: dict) -> bytes:
    text = canonical(extra) if extra else b""
    return struct.pack(">H", len(text)) + text


def _read_rest(data: bytes, at: int) -> dict:
    (size,) = struct.unpack_from(">H", data, at)
    return _parsed(data[at + 2 : at + 2 + size]) if size else {}


@functools.lru_cache(maxsize=256)
def _parsed_once(text: bytes) -> dict:
    return json.loads(text)


def _parsed(text: bytes) -> dict:
    """The fields without a slot: one uploader sends the same ones (its device name) with
    every reading, so their JSON is read once and copied."""
    found = _parsed_once(text)
    return {
        k: (v if isinstance(v, str | int | float | None) else json.loads(json.dumps(v)))
        for k, v in found.items()
    }


def _number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, int):
        return abs(value) < _INT_LIMIT
    return math.isfinite(value)


# -- an entry --------------------------------------------------------------------------


def encode_entry(record: dict) -> bytes | None:
    """The fixed-width plaintext of an entry (padded to `ENTRY_BUCKET`), or None when it
    has no `date` in epoch ms (the cipher then seals its JSON)."""
    date = record.get("date")
    if isinstance(date, bool) or not isinstance(date, int) or abs(date) >= 2**62:
        return None
    extra = {k: v for k, v in record.items() if k not in ("date", "type", "direction")}
    kind = record.get("type")
    type_code = ENTRY_TYPES.index(kind) if kind in ENTRY_TYPES else UNKNOWN
    if type_code == UNKNOWN and "type" in record:
        extra["type"] = kind
    direction = record.get("direction")
    if direction is None and "direction" not in record:
        direction_code = 0
    elif direction in DIRECTIONS:
        direction_code = DIRECTIONS.index(direction) + 1
    else:
        direction_code, extra["direction"] = UNKNOWN, direction
    flags = 0
    if extra.get("dateString") == iso_ms(date):
        flags |= 1
        del extra["dateString"]
    present = as_int = 0
    numbers = b""
    for index, name in enumerate(ENTRY_NUMBERS):
        if name in extra and _number(extra[name]):
            value = extra.pop(name)
            present |= 1 << index
            if isinstance(value, int):
                as_int |= 1 << index
            numbers += struct.pack(">d", float(value))
    header = struct.pack(">BBBBHHq", 1, type_code, direction_code, flags, present, as_int, date)
    return _pad(header + numbers + _rest(extra), ENTRY_BUCKET)


def decode_entry(data: bytes) -> dict:
    layout, type_code, direction_code, flags, present, as_int, date = struct.unpack_from(
        ">BBBBHHq", data
    )
    if layout != 1:
        raise ValueError(f"unknown entry layout {layout}")
    record: dict[str, Any] = {"date": date}
    at = 16
    for index, name in enumerate(ENTRY_NUMBERS):
        if present & (1 << index):
            (value,) = struct.unpack_from(">d", data, at)
            record[name] = int(value) if as_int & (1 << index) else value
            at += 8
    if type_code != UNKNOWN:
        record["type"] = ENTRY_TYPES[type_code]
    if direction_code and direction_code != UNKNOWN:
        record["direction"] = DIRECTIONS[direction_code - 1]
    if flags & 1:
        record["dateString"] = iso_ms(date)
    record.update(_read_rest(data, at))
    return dict(sorted(record.items()))


# -- an alert decision -------------------------------------------------------------------


def alert_context(reading_ms: int, model_id: int, model_sha256: str, model_kind: str) -> bytes:
    """What a decision shares with its row's clear columns: bound to the sealed decision as
    associated data, not stored inside it."""
    return canonical([reading_ms, model_id, model_sha256, model_kind])


def _tokens(reason: str) -> bytes | None:
    text = reason.encode()
    if any(byte < 0x20 for byte in text):
        return None
    for index, word in enumerate(REASON_WORDS):
        text = text.replace(word.encode(), bytes([index + 1]))
    return text


def _words(text: bytes) -> str:
    for index, word in reversed(list(enumerate(REASON_WORDS))):
        text = text.replace(bytes([index + 1]), word.encode())
    return text.decode()


def encode_alert(decision: dict) -> tuple[bytes, bytes] | None:
    """(context, fixed-width plaintext padded to `ALERT_BUCKET`) of a decision, or None
    when it is not shaped as `service.live.Decision` (the cipher then seals its JSON)."""
    if tuple(decision) != ALERT_KEYS:
        return None
    reading, model_id, sha, model_kind = (
        decision[k] for k in ("reading_ms", "model_id", "model_sha256", "model_kind")
    )
    if not (
        isinstance(reading, int)
        and isinstance(model_id, int)
        and isinstance(sha, str)
        and isinstance(model_kind, str)
        and isinstance(decision["reason"], str)
    ):
        return None
    extra: dict[str, Any] = {}
    code = DECISIONS.index(decision["decision"]) if decision["decision"] in DECISIONS else UNKNOWN
    if code == UNKNOWN:
        extra["decision"] = decision["decision"]
    kind = decision["kind"]
    kind_code = 0 if kind is None else (CLASSES.index(kind) + 1 if kind in CLASSES else UNKNOWN)
    if kind_code == UNKNOWN:
        extra["kind"] = kind
    flags = 0
    probabilities = decision["probabilities"]
    names, values = b"", b""
    if probabilities is not None:
        if not isinstance(probabilities, dict) or len(probabilities) > 8:
            return None
        flags |= 1
        for name, value in probabilities.items():
            if name not in CLASSES or not isinstance(value, float) or not math.isfinite(value):
                return None
            names += bytes([CLASSES.index(name)])
            values += struct.pack(">d", value)
    numbers = b""
    for bit, key in ((2, "threshold"), (4, "cgm")):
        value = decision[key]
        if value is not None:
            if not isinstance(value, float) or not math.isfinite(value):
                return None
            flags |= bit
        numbers += struct.pack(">d", 0.0 if value is None else value)
    reason = _tokens(decision["reason"])
    if reason is None or len(reason) > 255:
        reason = b""
        extra["reason"] = decision["reason"]
    body = (
        struct.pack(">BBBBB", 1, code, kind_code, flags, len(names))
        + names
        + values
        + numbers
        + bytes([len(reason)])
        + reason
        + _rest(extra)
    )
    return alert_context(reading, model_id, sha, model_kind), _pad(body, ALERT_BUCKET)


def decode_alert(context: bytes, data: bytes) -> dict:
    reading, model_id, sha, model_kind = json.loads(context)
    layout, code, kind_code, flags, count = struct.unpack_from(">BBBBB", data)
    if layout != 1:
        raise ValueError(f"unknown alert layout {layout}")
    at = 5
    names = [CLASSES[i] for i in data[at : at + count]]
    at += count
    probabilities = None
    if flags & 1:
        probabilities = {}
        for name in names:
            (probabilities[name],) = struct.unpack_from(">d", data, at)
            at += 8
    threshold, cgm = struct.unpack_from(">dd", data, at)
    at += 16
    size = data[at]
    reason = _words(data[at + 1 : at + 1 + size])
    extra = _read_rest(data, at + 1 + size)
    decision = {
        "reading_ms": reading,
        "decision": DECISIONS[code] if code != UNKNOWN else None,
        "kind": None
        if kind_code == 0
        else (CLASSES[kind_code - 1] if kind_code != UNKNOWN else None),
        "probabilities": probabilities,
        "threshold": threshold if flags & 2 else None,
        "reason": reason,
        "model_id": model_id,
        "model_sha256": sha,
        "model_kind": model_kind,
        "cgm": cgm if flags & 4 else None,
    }
    decision.update(extra)
    return decision


# -- the context of a sealed decision: carried by the caller, kept out of the row --------


def attach(blob: bytes, context: bytes) -> bytes:
    """A stored compact decision with its context put back (the sealed value as the cipher
    made it): blob, context, the context's length in two bytes."""
    return blob + context + struct.pack(">H", len(context))


def detach(sealed: bytes) -> tuple[bytes, bytes] | None:
    """(blob, context) of a compact decision as the cipher made it, else None."""
    if len(sealed) < 2 or sealed[0] != ALERT_FORMAT:
        return None
    (size,) = struct.unpack(">H", sealed[-2:])
    if size + 2 > len(sealed) - 1:
        return None
    return sealed[: -2 - size], sealed[-2 - size : -2]
