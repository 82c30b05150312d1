"""Encrypted alerts on the wire. The server's answer: one serialized CKKS vector per
class, framed in one byte string (TenSEAL serialises single vectors only):

    b"TMLHE1" | count (uint32 big-endian) | count × (length (uint32) | bytes)

A request names, by SHA-256, the public context it was encrypted under and the model it
expects (`CONTEXT_HEADER`, `MODEL_HEADER`); the answer names the model that computed it.
"""

from __future__ import annotations

import hashlib
import struct

from tailorml.privacy.params import PrivacyError

MAGIC = b"TMLHE1"
CONTEXT_HEADER = "X-Context-SHA256"
MODEL_HEADER = "X-Model-SHA256"
_LENGTH = struct.Struct(">I")


def fingerprint(data: bytes) -> str:
    """What names a public context (or a model file): the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def is_fingerprint(value: str | bytes) -> bool:
    """Whether `value` reads as a `fingerprint`: 64 lowercase hex digits."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def pack_parts(parts: list[bytes]) -> bytes:
    """`parts` framed as one byte string."""
    chunks = [MAGIC, _LENGTH.pack(len(parts))]
    for part in parts:
        chunks += [_LENGTH.pack(len(part)), part]
    return b"".join(chunks)


def unpack_parts(data: bytes) -> list[bytes]:
    """The parts of a `pack_parts` byte string; anything else is a one-line error."""
    data = bytes(data)
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LENGTH.size:
        raise PrivacyError(
            "encrypted logits do not start with the tailorml header; pass the bytes "
            "evaluate_encrypted returned, unchanged"
        )
    offset = len(MAGIC)
    (count,) = _LENGTH.unpack_from(data, offset)
    offset += _LENGTH.size
    parts = []
    for _ in range(count):
        if offset + _LENGTH.size > len(data):
            raise PrivacyError("encrypted logits are truncated; fetch the whole answer again")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + length > len(data):
            raise PrivacyError("encrypted logits are truncated; fetch the whole answer again")
        parts.append(data[offset : offset + length])
        offset += length
    if offset != len(data):
        raise PrivacyError("encrypted logits have trailing bytes; pass the answer unchanged")
    return parts
