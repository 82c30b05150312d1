"""Atomic file writes, content hashes and safe file names.

A run that fails or is interrupted must never leave a half-written file where a finished
one is expected: everything is written to a temporary file in the same directory and then
renamed over the target (rename is atomic on POSIX file systems).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from tailorml.errors import TailormlError

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
UNSAFE_NAME = (
    "{what} {name!r} cannot be used in a file name: use 1-100 letters, digits, '.', '_' or "
    "'-', starting with a letter or digit (no '/', '..', spaces or leading dot)"
)


def safe_component(name: str, what: str) -> str:
    """`name` unchanged if it is a safe single path component, else a TailormlError naming
    `what` (e.g. "run.name"). For names the user chooses (run names): refuse, don't rewrite."""
    if not isinstance(name, str) or not _SAFE.fullmatch(name) or name.strip(".") == "":
        raise TailormlError(UNSAFE_NAME.format(what=what, name=name))
    return name


def encode_component(value: str) -> str:
    """A safe, reversible file name for data that is not a name (a patient id from a cohort
    file): lower-case letters, digits, '_', '-' and '.' (except a leading '.') stay as they
    are, every other byte of its UTF-8 becomes '%XX' ("../x" -> "%2E.%2Fx", "a/b" ->
    "a%2Fb"). Upper-case letters are escaped too ("Alice" -> "%41lice"): on a file system
    that ignores case (macOS, Windows) "Alice" and "alice" would otherwise be one file, and
    one person's results would overwrite the other's. The only letters left are lower case
    and the hex digits of escapes (always upper case, always after '%'), so distinct values
    give names that differ even ignoring case; `decode_component` is the inverse."""
    text = str(value)
    if not text:
        raise TailormlError("an empty id cannot be used in a file name")
    out = []
    for index, byte in enumerate(text.encode("utf-8")):
        char = chr(byte)
        keep = char.islower() or char.isdigit() or char in "_-" or (char == "." and index)
        keep = keep and char.isascii()
        out.append(char if keep else f"%{byte:02X}")
    encoded = "".join(out)
    if len(encoded) > 200:
        raise TailormlError(f"id {text[:40]!r}... is too long for a file name (max 200)")
    return encoded


def decode_component(name: str) -> str:
    """The value `encode_component` encoded into `name`."""
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(name).decode("utf-8")


# Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


def text_encoding(data: bytes) -> tuple[str, int]:
    """(encoding, length of its byte-order mark) of exported text. Exports come as UTF-8,
    UTF-8 with BOM (Clarity, Excel), or UTF-16 LE with BOM (LibreView, Excel "Unicode text");
    UTF-16 without a BOM is told by its NUL bytes (ASCII text in UTF-16 has one NUL per
    character, on the odd bytes for LE, the even ones for BE). Anything else reads as UTF-8."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding, len(bom)
    sample = data[:4096]
    if len(sample) >= 4 and sample.count(0) >= len(sample) // 4:
        odd, even = sample[1::2].count(0), sample[0::2].count(0)
        if odd > 0.9 * (len(sample) // 2) and even == 0:
            return "utf-16-le", 0
        if even > 0.9 * (len(sample) // 2) and odd == 0:
            return "utf-16-be", 0
    return "utf-8", 0


def decode_text(data: bytes, errors: str = "strict") -> str:
    """`data` decoded with the encoding `text_encoding` finds, without its byte-order mark."""
    encoding, skip = text_encoding(data)
    return data[skip:].decode(encoding, errors=errors)


TARGET_IS_A_FOLDER = "{path} is a folder; pass a file name to write to"
TARGET_INSIDE_A_FILE = "cannot write {path}: {parent} is a file, not a folder"


def check_writable(folder: str | Path, what: str, target: str | Path | None = None) -> None:
    """Fail now, in one line, if files cannot be written in `folder` (created later): the
    nearest existing ancestor must be a folder we can write in. Called before minutes of
    work whose results would otherwise have nowhere to go (`what`: the option, e.g. --out;
    `target`: the file to be written, if the message should name it instead)."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        shown = target if target is not None else f"{what} {folder}"
        raise TailormlError(TARGET_INSIDE_A_FILE.format(path=shown, parent=existing))
    try:
        handle, name = tempfile.mkstemp(prefix=".tailorml-probe.", dir=existing)
    except OSError as error:
        raise TailormlError(
            f"{what} {folder}: cannot write in {existing} ({error.strerror}); choose a "
            "folder you can write to"
        ) from None
    os.close(handle)
    os.unlink(name)


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only on success."""
    target = Path(target)
    if target.is_dir():
        raise TailormlError(TARGET_IS_A_FOLDER.format(path=target))
    check_writable(target.parent, "cannot write", target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TailormlError(f"cannot create {target.parent} ({error.strerror})") from None
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write(target: str | Path, write: Callable[[Path], None]) -> Path:
    with atomic_path(target) as temporary:
        write(temporary)
    return Path(target)


def atomic_write_text(target: str | Path, text: str) -> Path:
    return atomic_write(target, lambda path: path.write_text(text, encoding="utf-8"))


def atomic_write_bytes(target: str | Path, data: bytes) -> Path:
    return atomic_write(target, lambda path: path.write_bytes(data))


def atomic_write_private(target: str | Path, data: bytes) -> Path:
    """As `atomic_write_bytes`, readable by the owner only (mode 0600) before any byte is
    written: for secrets such as a device's keys."""
    with atomic_path(target) as temporary:
        os.chmod(temporary, 0o600)
        temporary.write_bytes(data)
    return Path(target)


def finite_or_null(value: Any) -> Any:
    """`value` with every NaN/inf float replaced by None, recursively: a non-finite number
    never becomes a metric, and the JSON stays strict (no bare NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(item) for item in value]
    return value


def atomic_write_json(target: str | Path, data: Any) -> Path:
    text = json.dumps(finite_or_null(data), indent=2, sort_keys=True, default=str, allow_nan=False)
    return atomic_write_text(target, text + "\n")


def atomic_write_parquet(target: str | Path, frame: pd.DataFrame) -> Path:
    return atomic_write(
        target, lambda path: frame.to_parquet(path, index=False, compression="zstd")
    )


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(data: Any) -> str:
    """A stable hash of JSON-able data (configs), to tell whether cached work still applies."""
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class InflatesTooLarge(ValueError):
    """Gzip data that inflates beyond the caller's limit (a gzip bomb, or too much data)."""


def bounded_gunzip(data: bytes, limit: int) -> bytes:
    """Gzip `data` inflated, never to more than `limit` bytes: each member is inflated with
    an output bound, so a small input that would inflate to gigabytes stops at the limit
    (`InflatesTooLarge`); members one after another are joined, as gzip does. Data that ends
    before its end-of-stream marker is an `EOFError`, data that is no gzip a `zlib.error`.
    The one bounded inflater of the service's bodies and the importers' files."""
    import zlib

    parts, size, rest = [], 0, data
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        part = inflater.decompress(rest, limit + 1 - size)
        size += len(part)
        if size > limit or inflater.unconsumed_tail:
            raise InflatesTooLarge(f"inflates to more than {limit:,} bytes")
        if not inflater.eof:
            raise EOFError("compressed data ended before the end-of-stream marker")
        parts.append(part)
        rest = inflater.unused_data
    return b"".join(parts)
