"""The models the service runs: each person's active model from the registry, exported to
ONNX once per model file (`tailorml.models.onnx_runtime`) and run by onnxruntime, cached
per person.

Why ask the registry on every decision: an approval or a rollback may come from another
process (`tailorml review approve`, the review page, erasure), and the next reading must
use the new model. The query is one indexed row; the expensive parts (ONNX export, the
onnxruntime session) are cached by the model's content hash. A person's entry is replaced
by one assignment only after the new runtime is fully built, so a decision sees the old
model or the new one, never a half-loaded one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tailorml.models.cnn import load_model
from tailorml.models.onnx_runtime import INPUT_NAME, OUTPUT_NAME, export_onnx, open_session
from tailorml.policy import AlertPolicy
from tailorml.registry.models import ActiveModel, ModelRecord, Registry

SUPPORTED_CHANNELS = ("cgm", "insulin", "cho", "iob", "cob")


@dataclass(frozen=True)
class ModelRuntime:
    """One person's active model, ready to decide."""

    model_id: int
    sha256: str
    kind: str  # predefined or personalized
    candidate_id: int | None
    policy: AlertPolicy  # at the person's active threshold
    session: ort.InferenceSession

    def proba(self, windows: np.ndarray) -> np.ndarray:
        """Class probabilities of the windows (`AlertPolicy.probabilities` of the logits)."""
        logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: windows.astype(np.float32)})[0]
        return AlertPolicy.probabilities(logits)


class Runtimes:
    """ONNX files under `onnx_dir` (named by the model's sha256) and sessions in memory."""

    def __init__(self, registry: Registry, onnx_dir: str | Path) -> None:
        self.registry = registry
        self.onnx_dir = Path(onnx_dir)
        self.onnx_dir.mkdir(parents=True, exist_ok=True)
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._people: dict[str, tuple[tuple, ModelRuntime]] = {}
        self._lock = threading.Lock()
        # torch.export is not thread-safe: two first readings arriving together must not
        # export at once (it fails with "Trying to pop empty mode stack")
        self._build_lock = threading.Lock()

    def for_person(self, person_id: str) -> ModelRuntime:
        active = self.registry.active_model(person_id)
        key = (active.model.id, active.candidate_id, active.threshold)
        cached = self._people.get(person_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        runtime = self._build(active)
        with self._lock:
            self._people[person_id] = (key, runtime)
        return runtime

    def session(self, record: ModelRecord) -> ort.InferenceSession:
        """The onnxruntime session of a registered model, exported on first use."""
        session = self._sessions.get(record.sha256)
        if session is not None:
            return session
        with self._build_lock:
            session = self._sessions.get(record.sha256)
            if session is None:
                self.registry.verify(record)
                path = self.onnx_dir / f"{record.sha256}.onnx"
                if not path.is_file():
                    export_onnx(load_model(record.path), path)
                session = open_session(path)
                self._sessions[record.sha256] = session
        return session

    def _build(self, active: ActiveModel) -> ModelRuntime:
        record = active.model
        self.registry.verify(record)
        model = active.load()  # the model with its policy at the active threshold
        unsupported = [c for c in model.policy.channels if c not in SUPPORTED_CHANNELS]
        if unsupported:
            raise ValueError(f"the service cannot feed channels {unsupported} to a model")
        session = self.session(record)
        return ModelRuntime(
            record.id, record.sha256, active.kind, active.candidate_id, model.policy, session
        )

    def forget(self, person_id: str) -> None:
        with self._lock:
            self._people.pop(person_id, None)
