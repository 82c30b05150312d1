"""Encryption at rest: a server key wraps one data key per person; data keys seal records.

AES-256-GCM from `cryptography` (authenticated: a flipped bit or a record moved to another
person fails to decrypt instead of reading as wrong glucose). Each sealed record binds its
owner and purpose as associated data, so a ciphertext copied between people or tables does
not open. Erasing a person deletes their wrapped data key: their ciphertexts, including any
left in free database pages or backups, can no longer be opened (crypto-shredding).

The server key comes from a file (`--key-file`) or the environment (`TAILORML_SERVER_KEY`),
never from the data directory: a key stored beside the data protects nothing, so a key file
inside it is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tailorml.errors import TailormlError
from tailorml.registry import sealed_formats as formats

KEY_ENV = "TAILORML_SERVER_KEY"
KEY_BYTES = 32
NONCE_BYTES = 12
PAD_BYTES = 768  # a decision's JSON is 300 to about 560 bytes: one bucket
# Records sealed as JSON and padded by `DataCipher.seal` to a multiple of this many bytes:
# an entry's JSON is about 100 to 450 bytes (one bucket), so its sealed length no longer
# tells a 2-digit sgv from a 3-digit one, nor a treatment's 5 g from 50 g. Alerts are
# padded by their writer (`padded_json`, PAD_BYTES); sealed files are not JSON.
RECORD_PAD_BYTES = 512
PADDED_PURPOSES = frozenset(("entry", "treatment", "devicestatus", "profile"))
# An entry and an alert decision, the records stored once per reading, are sealed in a
# compact fixed-width layout instead (`registry.sealed_formats`): a format byte, the nonce,
# one bucket of plaintext, the tag. Their length depends on which fields an uploader sends,
# never on the values. Any record a layout cannot reproduce byte for byte is sealed as
# padded JSON, as before.
ENTRY_SEALED_BYTES = 1 + NONCE_BYTES + formats.ENTRY_BUCKET + 16
ALERT_SEALED_BYTES = 1 + NONCE_BYTES + formats.ALERT_BUCKET + 16  # as `alerts` stores it
_ENTRY_FORMAT = bytes([formats.ENTRY_FORMAT])
OPENED_ENTRIES = 600  # a person's compact entries kept opened (two days of readings)
FINGERPRINT_HEX = 32  # 128 bits of HMAC-SHA-256: see `DataCipher.fingerprint`


class DecryptionError(TailormlError):
    """A sealed record did not open: wrong key, wrong owner, or tampered bytes."""


def new_key_text() -> str:
    """A fresh server key, as the text a key file or the environment variable holds."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise TailormlError(
            f"{where} must hold a base64-encoded {KEY_BYTES}-byte key; create one with "
            "`tailorml keygen --out FILE`"
        )
    return key


def write_key_file(path: str | Path) -> Path:
    """Create a new key file readable by its owner only; never overwrite one."""
    path = Path(path)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise TailormlError(
            f"{path} exists; a server key is never overwritten (the data it wrapped would be "
            "lost) — choose another --out"
        ) from None
    with os.fdopen(descriptor, "w") as handle:
        handle.write(new_key_text() + "\n")
    return path


@dataclass(frozen=True)
class ServerKey:
    """The key that wraps every person's data key; `key_id` names it without revealing it."""

    key: bytes

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"tailorml key id|" + self.key).hexdigest()[:16]

    @classmethod
    def load(cls, key_file: str | Path | None, data_dir: str | Path) -> ServerKey:
        """From `key_file`, else from $TAILORML_SERVER_KEY; refuse a file inside `data_dir`."""
        if key_file is not None:
            path = Path(key_file)
            if not path.is_file():
                raise TailormlError(
                    f"--key-file {path} not found; create one with `tailorml keygen --out {path}`"
                )
            data = Path(data_dir).resolve()
            if data == path.resolve().parent or data in path.resolve().parents:
                raise TailormlError(
                    f"--key-file {path} lies inside the data directory {data_dir}: a key stored "
                    "beside the data it protects protects nothing; keep it elsewhere"
                )
            if path.stat().st_mode & 0o077:
                raise TailormlError(
                    f"--key-file {path} can be read by other users (mode "
                    f"{path.stat().st_mode & 0o777:o}); restrict it: chmod 600 {path}"
                )
            return cls(_decode_key(path.read_text(), f"--key-file {path}"))
        text = os.environ.get(KEY_ENV)
        if not text:
            raise TailormlError(
                f"no server key: pass --key-file FILE or set {KEY_ENV} (create a key with "
                "`tailorml keygen --out FILE`)"
            )
        return cls(_decode_key(text, f"${KEY_ENV}"))

    def wrap(self, data_key: bytes, owner: str) -> bytes:
        return _seal(self.key, data_key, b"data key|" + owner.encode())

    def unwrap(self, wrapped: bytes, owner: str) -> bytes:
        try:
            return _open(self.key, wrapped, b"data key|" + owner.encode())
        except DecryptionError:
            raise DecryptionError(
                f"the data key of {owner} does not open with this server key; start the "
                "service with the key it was created with (--key-file or $" + KEY_ENV + ")"
            ) from None


def padded_json(value: Any, bucket: int = PAD_BYTES) -> bytes:
    """`value` as JSON text padded with spaces to a multiple of `bucket` bytes, to be
    sealed: AES-GCM keeps the plaintext's length, so an unpadded alert row's length told "no
    decision" (nulls) from a decision (probabilities) to whoever reads the database. JSON
    readers skip the spaces: rows sealed before padding read back the same."""
    text = json.dumps(value).encode()
    return text + b" " * (-len(text) % bucket)


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def _seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def _open(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError):
        raise DecryptionError("a sealed record did not open (wrong key or tampered)") from None


class DataCipher:
    """One person's data key: seals and opens their records, and fingerprints them.

    `fingerprint` is a keyed hash (HMAC-SHA-256 under a key derived from the data key): it
    lets the store recognise a repeated upload without storing what was uploaded, and it
    means nothing to someone without the key."""

    def __init__(self, data_key: bytes, owner: str) -> None:
        self._aead = AESGCM(data_key)
        self._entries: OrderedDict[bytes, dict] = OrderedDict()
        self._rendered: OrderedDict[tuple[bytes, str], bytes] = OrderedDict()
        self._entries_lock = threading.Lock()
        self._owner = owner.encode()
        self._mac_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"tailorml fingerprint"
        ).derive(data_key)

    def _associated(self, purpose: str) -> bytes:
        return purpose.encode() + b"|" + self._owner

    def seal(self, plaintext: bytes, purpose: str) -> bytes:
        """`plaintext` sealed for `purpose`. An entry's canonical JSON and a decision's
        JSON are sealed in their compact layouts (`registry.sealed_formats`): a format byte
        first, bound as associated data with a decision's context (its reading time and
        model, which its row holds in the clear), and the context appended after the tag,
        for the registry to strip (`sealed_formats.detach`). Other records of
        `PADDED_PURPOSES`, and any the layouts cannot reproduce exactly, are JSON padded
        with spaces, which JSON readers skip (rows sealed unpadded before read back the
        same). `open` gives back what was sealed, without the padding."""
        compact = self._compact(plaintext, purpose)
        if compact is not None:
            return compact
        if purpose in PADDED_PURPOSES:
            plaintext += b" " * (-len(plaintext) % RECORD_PAD_BYTES)
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, self._associated(purpose))

    def _compact(self, plaintext: bytes, purpose: str) -> bytes | None:
        if purpose not in ("entry", "alert"):
            return None
        try:
            record = json.loads(plaintext)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        if purpose == "entry":
            body = formats.encode_entry(record)
            if body is None or formats.canonical(formats.decode_entry(body)) != plaintext:
                return None
            format_byte, context = formats.ENTRY_FORMAT, b""
        else:
            encoded = formats.encode_alert(record)
            if encoded is None:
                return None
            context, body = encoded
            if formats.decode_alert(context, body) != record:
                return None
            format_byte = formats.ALERT_FORMAT
        head = bytes([format_byte]) + secrets.token_bytes(NONCE_BYTES)
        sealed = head + self._aead.encrypt(
            head[1:], body, self._associated(purpose) + b"|" + head[:1] + context
        )
        return formats.attach(sealed, context) if context else sealed

    def open(self, sealed: bytes, purpose: str) -> bytes:
        """What `seal` sealed: a compact record as its JSON (an entry's canonical JSON, a
        decision's as `json.dumps` writes it), a padded one without its padding."""
        sealed = bytes(sealed)
        record = self._open_compact(sealed, purpose)
        if record is not None:
            if purpose == "entry":
                return formats.canonical(record)
            return json.dumps(record).encode()
        return self._open_plain(sealed, purpose)

    def open_record(self, sealed: bytes, purpose: str) -> Any:
        """`json.loads(self.open(sealed, purpose))`, without writing and reading JSON for a
        compact record (a follower's day of readings is 288 of them)."""
        sealed = bytes(sealed)
        if purpose == "entry" and (cached := self._entries.get(sealed)) is not None:
            return dict(cached)
        record = self._open_compact(sealed, purpose)
        if record is None:
            return json.loads(self._open_plain(sealed, purpose))
        if purpose == "entry":
            # a follower polls the same day of readings every few minutes: the newest
            # entries opened are kept (ciphertext -> record), for this person only
            with self._entries_lock:
                self._entries[sealed] = record
                if len(self._entries) > OPENED_ENTRIES:
                    self._entries.popitem(last=False)
            return dict(record)
        return record

    def entry_json(self, sealed: bytes, public_id: str) -> bytes:
        """The entry sealed in `sealed` with its `_id`, as the API writes it in a list
        (`json.dumps(..., ensure_ascii=True, allow_nan=False)`): a follower's day of 288
        readings is one join of these. Kept per (ciphertext, id), the newest
        `OPENED_ENTRIES`: both come from the row read for this request, so what is kept can
        never be stale (a corrected reading is a new ciphertext), whichever process wrote
        it."""
        key = (sealed, public_id)
        found = self._rendered.get(key)
        if found is not None:
            return found
        record = self.open_record(sealed, "entry")
        record["_id"] = public_id
        text = json.dumps(record, ensure_ascii=True, allow_nan=False).encode("ascii")
        with self._entries_lock:
            self._rendered[key] = text
            if len(self._rendered) > OPENED_ENTRIES:
                self._rendered.popitem(last=False)
        return text

    def _open_plain(self, sealed: bytes, purpose: str) -> bytes:
        candidates = [sealed]
        if purpose == "alert" and (split := formats.detach(sealed)) is not None:
            candidates.append(split[0])  # an older row that happens to start as a compact one
        for candidate in candidates:
            try:
                plaintext = self._aead.decrypt(
                    candidate[:NONCE_BYTES], candidate[NONCE_BYTES:], self._associated(purpose)
                )
            except (InvalidTag, ValueError):
                continue
            if purpose in PADDED_PURPOSES or purpose == "alert":
                plaintext = plaintext.rstrip(b" ")
            return plaintext
        raise DecryptionError(
            f"a {purpose} record of {self._owner.decode()} did not open (tampered, or "
            "copied from another person)"
        )

    def _open_compact(self, sealed: bytes, purpose: str) -> dict | None:
        """A compact record opened; None when it is not one (an older row may start with
        the format byte by chance: its tag does not verify as a compact one)."""
        if purpose == "entry" and sealed[:1] == _ENTRY_FORMAT:
            tries = [(sealed, b"")]
        elif purpose == "alert" and (split := formats.detach(sealed)) is not None:
            tries = [split]
            if (inner := formats.detach(split[0])) is not None:
                tries.append(inner)  # stored whole (its columns did not match), context added
        else:
            return None
        associated = self._associated(purpose) + b"|"
        for blob, context in tries:
            try:
                body = self._aead.decrypt(
                    blob[1 : 1 + NONCE_BYTES],
                    blob[1 + NONCE_BYTES :],
                    associated + blob[:1] + context,
                )
            except (InvalidTag, ValueError):
                continue
            if purpose == "entry":
                return formats.decode_entry(body)
            return formats.decode_alert(context, body)
        return None

    def fingerprint(self, *parts: str) -> str:
        """HMAC-SHA-256 of `parts`, its first 128 bits in 32 hex digits (it was all 256 bits
        in 64: the registry migration cuts stored ones to their first 32 digits, so a repeat
        of an older record is still found). Fingerprints are compared within one person's
        records: with a million records a person, the chance that two of them share a
        128-bit fingerprint is about 10^12 / 2^129, 10^-27."""
        message = "\x1f".join(parts).encode()
        return hmac.new(self._mac_key, message, hashlib.sha256).hexdigest()[:FINGERPRINT_HEX]
