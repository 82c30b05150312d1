"""Encrypted alerts in the service: the cloud computes the alert on a window it cannot read.

The server holds the HE-friendly model in plaintext (inspectable, with its hash in every
audit line) and, per person, the public CKKS contexts their clients registered (public,
relinearisation and Galois keys; a context carrying a secret key is refused). A request is
one ciphertext in, encrypted logits out: evaluated in memory and never logged or stored; the
audit log records that it happened, its sizes and the model, not its content. The person's
client decrypts the logits and applies the model's alert policy (`tailorml.privacy.client`).

Each request names the context it was encrypted under and the model it expects, by their
SHA-256 (headers `X-Context-SHA256`, `X-Model-SHA256`). CKKS cannot tell that a ciphertext
was made under other keys: evaluated anyway, it decrypts to noise. So a person may have a
few devices, each with its own keys (`MAX_DEVICES` contexts, the least recently used one
replaced), and a request under a context the server no longer has, or for a model it no
longer serves, is a 409 the client recovers from instead of a wrong alert.

Contexts weigh 50-250 MB and take seconds to read, so recently used ones are kept loaded
(up to `LOADED_BYTES` of them). They are stored as `he-contexts/<person>/<chain>/<sha>.ctx`:
a context only serves the CKKS chain it was made for, so when the served model moves to
another chain, the contexts of the old one are deleted at start instead of holding device
slots.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import tenseal as ts

from tailorml.errors import TailormlError
from tailorml.io import atomic_write_bytes
from tailorml.privacy.context import load_public, public_bytes, secret_context
from tailorml.privacy.params import PrivacyError
from tailorml.privacy.wire import CONTEXT_HEADER, MODEL_HEADER, fingerprint, is_fingerprint
from tailorml.service.auth import AuthError

if TYPE_CHECKING:  # torch: only with an HE model (--he-model)
    from tailorml.privacy.server import EncryptedModel

log = logging.getLogger("tailorml.service")

# the five-level chain (a model with a hidden layer) has contexts of about 250 MB
MAX_CONTEXT_BYTES = 320 * 1024 * 1024
MAX_CIPHERTEXT_BYTES = 8 * 1024 * 1024
MAX_DEVICES = 3
LOADED_BYTES = 768 * 1024 * 1024


class ConflictError(TailormlError):
    """The request was made for state the server no longer has (the service answers 409);
    `reason` tells a client what to renew: `context_unknown` or `model_changed`."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class EncryptedAlerts:
    def __init__(self, data_dir: Path, model_file: Path | None) -> None:
        self.folder = data_dir / "he-contexts"
        self.model: EncryptedModel | None = None
        self.sha256: str | None = None
        if model_file is not None:
            self.model, self.sha256 = _read_model(Path(model_file))
        self._loaded: OrderedDict[tuple[str, str], tuple[ts.Context, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._person_locks: dict[str, threading.Lock] = {}
        self._erased: set[str] = set()  # erased while this process runs: no registration after
        self._context_limit: int | None = None
        self._limit_lock = threading.Lock()
        self._remove_unusable_contexts()

    def _remove_unusable_contexts(self) -> None:
        """Delete what no request can use any more, so it holds no device slot or disk:
        contexts of another chain than the served model's, those of earlier layouts
        (`<person>.ctx`, `<person>/<sha>.ctx`, stored without their chain), and the
        temporary files of writes a crash interrupted. Their clients get a 409
        `context_unknown` and register again."""
        if not self.folder.is_dir():
            return
        stale_files = [p for p in self.folder.rglob("*.tmp") if p.is_file()]
        for path in stale_files:
            path.unlink(missing_ok=True)
        unusable = [p for p in self.folder.glob("*.ctx") if p.is_file()]
        unusable += [p for p in self.folder.glob("*/*.ctx") if p.is_file()]
        people = [p for p in self.folder.iterdir() if p.is_dir()]
        if self.model is not None:  # without a model, which chain comes next is unknown
            chain = self.model.plan.parameters.tag
            for person in people:
                for folder in (p for p in person.iterdir() if p.is_dir() and p.name != chain):
                    unusable += [p for p in folder.glob("*.ctx") if p.is_file()]
                    shutil.rmtree(folder, ignore_errors=True)
        for path in unusable:
            path.unlink(missing_ok=True)
        for person in people:
            with contextlib.suppress(OSError):  # not empty: it keeps its contexts
                person.rmdir()
        if unusable:
            why = (
                "made for another CKKS chain than the served model's, or stored in an earlier "
                "layout"
                if self.model is not None
                else "stored in an earlier layout"
            )
            log.info(
                "removed %d public context(s) %s; their devices register again",
                len(unusable),
                why,
            )
        if stale_files:
            log.info("removed %d temporary file(s) of interrupted context writes", len(stale_files))

    def context_limit(self) -> int:
        """The most bytes a public context for the served model may have: a fresh one's
        size plus 10 % (keys are random, so their size hardly varies), made once. A
        smaller limit than `MAX_CONTEXT_BYTES` for the shallow chain lets an upload slot
        be held for less time at the slowest accepted rate."""
        model = self._require()
        with self._limit_lock:  # not self._lock: requests must not wait for the keys
            if self._context_limit is None:
                size = len(public_bytes(secret_context(model.plan.parameters)))
                self._context_limit = min(MAX_CONTEXT_BYTES, size + size // 10)
            return self._context_limit

    def _person_lock(self, person_id: str) -> threading.Lock:
        with self._lock:
            return self._person_locks.setdefault(person_id, threading.Lock())

    def _require(self) -> EncryptedModel:
        if self.model is None:
            raise TailormlError(
                "this service offers no encrypted alerts; start it with --he-model (an "
                "HE-friendly model, experiments/he_friendly.toml)"
            )
        return self.model

    def spec(self) -> dict:
        return self._require().public_spec() | {"model_sha256": self.sha256}

    def _folder(self, person_id: str) -> Path:
        # ids are checked p-<12 hex> by auth; the chain tag is built from integers
        return self.folder / person_id / self._require().plan.parameters.tag

    def register(self, person_id: str, data: bytes) -> dict:
        """Keep the person's public context under its fingerprint; a person past
        `MAX_DEVICES` contexts loses the least recently used one (named in the answer)."""
        model = self._require()
        context = load_public(data, model.plan.parameters)  # refuses a secret key
        name = fingerprint(data)
        folder = self._folder(person_id)
        with self._person_lock(person_id):  # erasure and other devices wait for the write
            if person_id in self._erased:
                raise AuthError("this account was erased")
            atomic_write_bytes(folder / f"{name}.ctx", bytes(data))  # rewritten: heals a bad copy
            others = sorted((p for p in folder.glob("*.ctx") if p.stem != name), key=_last_used)
            replaced = [p.stem for p in others[: max(0, len(others) + 1 - MAX_DEVICES)]]
            for stem in replaced:
                self._drop(person_id, stem)
            self._keep(person_id, name, context, len(data))
        return {"context_sha256": name, "bytes": len(data), "replaced": replaced}

    def _drop(self, person_id: str, name: str) -> None:
        with self._lock:
            self._loaded.pop((person_id, name), None)
        (self._folder(person_id) / f"{name}.ctx").unlink(missing_ok=True)

    def _keep(self, person_id: str, name: str, context: ts.Context, size: int) -> None:
        with self._lock:
            if person_id in self._erased:  # a load that raced the erasure is not cached
                return
            self._loaded[(person_id, name)] = (context, size)
            self._loaded.move_to_end((person_id, name))
            while len(self._loaded) > 1 and sum(s for _, s in self._loaded.values()) > LOADED_BYTES:
                self._loaded.popitem(last=False)

    def _context(self, person_id: str, name: str) -> ts.Context:
        path = self._folder(person_id) / f"{name}.ctx"
        with self._lock:
            found = self._loaded.get((person_id, name))
        if found is not None:
            _touch(path)  # the least recently *used* context is the one replaced
            return found[0]
        if not path.is_file():
            raise ConflictError(
                f"no public context {name[:12]}… registered for you (a newer device's "
                f"registration replaced it, the data was erased, or it was never sent): PUT "
                "/api/v1/encrypted/context again, then retry",
                "context_unknown",
            )
        data = path.read_bytes()
        try:
            if fingerprint(data) != name:
                raise PrivacyError("its bytes do not match its fingerprint")
            context = load_public(data, self._require().plan.parameters)
        except PrivacyError as error:
            raise ConflictError(
                f"your public context {name[:12]}… stored on the server is unreadable or made "
                f"for another model's chain "
                f"({str(error)[:80]}); PUT /api/v1/encrypted/context again, then retry",
                "context_unknown",
            ) from None
        _touch(path)
        self._keep(person_id, name, context, len(data))
        return context

    def evaluate(
        self,
        person_id: str,
        ciphertext: bytes,
        context_sha256: str | None,
        model_sha256: str | None,
    ) -> bytes:
        model = self._require()
        name = _header_sha(
            context_sha256, CONTEXT_HEADER, "the SHA-256 of the public context you registered"
        )
        expected = _header_sha(
            model_sha256, MODEL_HEADER, "model_sha256 of GET /api/v1/encrypted/spec"
        )
        if expected != self.sha256:
            raise ConflictError(
                f"the encrypted-alert model changed (now {str(self.sha256)[:12]}…, you asked for "
                f"{expected[:12]}…); GET /api/v1/encrypted/spec again for its alert policy",
                "model_changed",
            )
        from tailorml.privacy.server import evaluate_encrypted

        return evaluate_encrypted(model, self._context(person_id, name), ciphertext)

    def forget(self, person_id: str) -> bool:
        """Erasure: the person's public contexts go too, and none can be registered after
        (a registration under way finishes first, then is deleted). Returns whether any
        existed."""
        with self._person_lock(person_id):
            self._erased.add(person_id)
            with self._lock:
                for key in [k for k in self._loaded if k[0] == person_id]:
                    del self._loaded[key]
            folder = self.folder / person_id
            existed = folder.is_dir()
            shutil.rmtree(folder, ignore_errors=True)
        return existed


def _last_used(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # replaced meanwhile by another request of the same person
        return 0.0


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):  # replaced or erased meanwhile: the cached copy answers
        os.utime(path)


def _header_sha(value: str | None, header: str, what: str) -> str:
    if not value:
        raise TailormlError(f"header {header} is missing; send {what} (ServiceAlerts does)")
    value = value.strip().lower()
    if not is_fingerprint(value):
        raise TailormlError(f"header {header} must be 64 hex digits ({what})")
    return value


def _read_model(path: Path) -> tuple[EncryptedModel, str]:
    """The served HE model and its hash, or a one-line error naming `--he-model` and the path."""
    from tailorml.models.cnn import require_model_file

    require_model_file(
        path,
        "--he-model",
        "; pass RUN/model.pt of `tailorml train --config experiments/he_friendly.toml`",
    )
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TailormlError(
            f"--he-model {path}: cannot read it ({error.strerror}); check its permissions"
        ) from None
    try:
        from tailorml.models.cnn import load_model
        from tailorml.privacy.server import EncryptedModel

        model = EncryptedModel(load_model(path, data=data), path.name)
    except TailormlError as error:
        raise TailormlError(f"--he-model {path}: {error}") from None
    return model, fingerprint(data)
