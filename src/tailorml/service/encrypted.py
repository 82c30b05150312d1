"""Encrypted alerts in the service: the cloud computes the alert on a window it cannot read.

The server holds the HE-friendly model in plaintext (inspectable, with its hash in every
audit line) and, per person, the public CKKS context their client registered once (public,
relinearisation and Galois keys; a context carrying a secret key is refused). A request is
one ciphertext in, encrypted logits out: evaluated in memory and never logged or stored; the
audit log records that it happened, its sizes and the model, not its content. The person's
client decrypts the logits and applies the model's alert policy (`tailorml.client`).

Contexts weigh about 50 MB and take seconds to read, so the last few are kept loaded.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import tenseal as ts

from tailorml.errors import TailormlError
from tailorml.io import atomic_write_bytes
from tailorml.models.cnn import load_model
from tailorml.privacy.context import load_public
from tailorml.privacy.server import EncryptedModel, evaluate_encrypted

MAX_CONTEXT_BYTES = 128 * 1024 * 1024
MAX_CIPHERTEXT_BYTES = 8 * 1024 * 1024
LOADED_CONTEXTS = 4


class EncryptedAlerts:
    def __init__(self, data_dir: Path, model_file: Path | None) -> None:
        self.folder = data_dir / "he-contexts"
        self.model: EncryptedModel | None = None
        self.sha256 = None
        if model_file is not None:
            if not Path(model_file).is_file():
                raise TailormlError(f"--he-model {model_file}: no such model file")
            self.model = EncryptedModel(load_model(model_file), Path(model_file).name)
            self.sha256 = hashlib.sha256(Path(model_file).read_bytes()).hexdigest()
        self._loaded: OrderedDict[str, ts.Context] = OrderedDict()
        self._lock = threading.Lock()

    def _require(self) -> EncryptedModel:
        if self.model is None:
            raise TailormlError(
                "this service offers no encrypted alerts; start it with --he-model (an "
                "HE-friendly model, experiments/he_friendly.toml)"
            )
        return self.model

    def spec(self) -> dict:
        return self._require().public_spec() | {"model_sha256": self.sha256}

    def _path(self, person_id: str) -> Path:
        return self.folder / f"{person_id}.ctx"  # ids are checked p-<12 hex> by auth

    def register(self, person_id: str, data: bytes) -> None:
        model = self._require()
        context = load_public(data, model.plan.parameters)  # refuses a secret key
        atomic_write_bytes(self._path(person_id), bytes(data))
        self._keep(person_id, context)

    def _keep(self, person_id: str, context: ts.Context) -> None:
        with self._lock:
            self._loaded[person_id] = context
            self._loaded.move_to_end(person_id)
            while len(self._loaded) > LOADED_CONTEXTS:
                self._loaded.popitem(last=False)

    def _context(self, person_id: str) -> ts.Context:
        with self._lock:
            found = self._loaded.get(person_id)
        if found is not None:
            return found
        path = self._path(person_id)
        if not path.is_file():
            raise TailormlError(
                "no public context registered for you: PUT /api/v1/encrypted/context with "
                "EncryptedAlertClient.public_context() first"
            )
        context = load_public(path.read_bytes(), self._require().plan.parameters)
        self._keep(person_id, context)
        return context

    def evaluate(self, person_id: str, ciphertext: bytes) -> bytes:
        model = self._require()
        return evaluate_encrypted(model, self._context(person_id), ciphertext)

    def forget(self, person_id: str) -> bool:
        """Erasure: the person's public context goes too. Returns whether one existed."""
        with self._lock:
            self._loaded.pop(person_id, None)
        path = self._path(person_id)
        existed = path.is_file()
        path.unlink(missing_ok=True)
        return existed
