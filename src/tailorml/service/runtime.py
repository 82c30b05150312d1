"""The models the service runs: each person's active model from the registry, as the ONNX
file and alert policy the registry recorded for it (`Registry.serving`), run by
onnxruntime and cached per person. No torch here: an API process holds onnxruntime and
the policies, not torch (about 400 MB a process).

Why ask the registry on every decision: an approval or a rollback may come from another
process (`tailorml review approve`, the review page, erasure), and the next reading must
use the new model. The query is one indexed row; the onnxruntime session is cached by the
model's content hash, made from ONNX bytes checked against their recorded sha256. A
person's entry is replaced by one assignment only after the new runtime is fully built, so
a decision sees the old model or the new one, never a half-loaded one.

Models registered before the registry made their ONNX file (or registered by an older
worker during an upgrade) have none: the first process that needs one has it made by a
**separate process** (`prepare_in_subprocess`, `Registry.prepare_serving`), which imports
torch, exports, records and exits, so its memory goes with it. Why lazily rather than once
at start-up or by `serve` before it forks: any model can become active later (a candidate
of an old session approved next month, a rollback to an old predefined model), so only the
moment a model is needed covers them all; the predefined model is still prepared before
the first upload (the app's start-up asks for its session; `serve --workers N` has it made
once, before it starts the workers). Several processes that need the
same model at once each export it; the files are content-addressed and written atomically
and the record is one row, so the last one recorded is served and every one is sound.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tailorml.errors import ModelFileError
from tailorml.models.onnx_runtime import INPUT_NAME, OUTPUT_NAME, open_session
from tailorml.policy import AlertPolicy
from tailorml.registry.database import DATABASE_ENV
from tailorml.registry.models import ActiveModel, ModelRecord, Registry, Serving

SUPPORTED_CHANNELS = ("cgm", "insulin", "cho", "iob", "cob")
# torch's import and a first export take about 15 s on two busy cores; minutes mean a hang
PREPARE_TIMEOUT_S = 600.0
PREPARE = (
    "import os, sys; from tailorml.registry.models import Registry; "
    "registry = Registry(sys.argv[1], os.environ.get('TAILORML_DATABASE') or None); "
    "registry.prepare_serving(registry.model(int(sys.argv[2])))"
)


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


def prepare_in_subprocess(registry: Registry, record: ModelRecord) -> None:
    """Have a process of its own make and record the model's ONNX file and policy
    (`Registry.prepare_serving`): torch is imported there and leaves with it. `-P`: nothing
    from the working directory is imported in its place."""
    command = [sys.executable, "-P", "-c", PREPARE, str(registry.root), str(record.id)]
    environment = dict(os.environ)
    environment.pop(DATABASE_ENV, None)
    if registry.database_url is not None:  # the URL in its environment, not its command line
        environment[DATABASE_ENV] = registry.database_url
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=PREPARE_TIMEOUT_S,
            check=False,
            env=environment,
        )
    except subprocess.TimeoutExpired:
        raise ModelFileError(
            f"making the ONNX file of model {record.id} took over {PREPARE_TIMEOUT_S:.0f} s"
        ) from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise ModelFileError(
            f"could not make the ONNX file of model {record.id} ({record.path}): "
            f"{lines[-1] if lines else f'exit {done.returncode}'}"
        )


class Runtimes:
    """onnxruntime sessions in memory, one per model file, and each person's runtime."""

    def __init__(
        self,
        registry: Registry,
        onnx_dir: str | Path | None = None,
        prepare: Callable[[Registry, ModelRecord], None] = prepare_in_subprocess,
    ) -> None:
        """`onnx_dir` is no longer read (the service exported into it before the registry
        kept ONNX files beside the models); `prepare` makes a missing ONNX file."""
        self.registry = registry
        self.prepare = prepare
        self._sessions: dict[str, tuple[ort.InferenceSession, AlertPolicy]] = {}
        self._people: dict[str, tuple[tuple, ModelRuntime]] = {}
        self._lock = threading.Lock()
        # one preparation at a time: two first readings arriving together start one process
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
        """The onnxruntime session of a registered model, prepared on first use."""
        return self._served(record)[0]

    def _served(self, record: ModelRecord) -> tuple[ort.InferenceSession, AlertPolicy]:
        """The model's session and its own policy, from its recorded ONNX file (checked
        against its sha256) and policy JSON; made by `prepare` if none is recorded."""
        served = self._sessions.get(record.sha256)
        if served is not None:
            return served
        with self._build_lock:
            served = self._sessions.get(record.sha256)
            if served is None:
                serving = self._serving(record)
                data = self.registry.onnx_bytes(serving)
                served = (open_session(serving.onnx_path, data), serving.policy)
                self._sessions[record.sha256] = served
        return served

    def _serving(self, record: ModelRecord) -> Serving:
        serving = self.registry.serving(record)
        if serving is None:
            self.prepare(self.registry, record)
            serving = self.registry.serving(record)
        if serving is None:
            raise ModelFileError(f"model {record.id} ({record.path}) has no ONNX file recorded")
        return serving

    def _build(self, active: ActiveModel) -> ModelRuntime:
        record = active.model
        session, policy = self._served(record)
        if active.threshold is not None:  # as `ActiveModel.load`: the active threshold
            policy = policy.with_threshold(active.threshold)
        unsupported = [c for c in policy.channels if c not in SUPPORTED_CHANNELS]
        if unsupported:
            raise ValueError(f"the service cannot feed channels {unsupported} to a model")
        return ModelRuntime(
            record.id, record.sha256, active.kind, active.candidate_id, policy, session
        )

    def forget(self, person_id: str) -> None:
        with self._lock:
            self._people.pop(person_id, None)
