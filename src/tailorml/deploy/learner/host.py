"""The model's and the learner's C compiled together for this machine, called through ctypes:
fast enough to live through two weeks of a person's readings in a fraction of a second, and
the rung on which the Python reference (`tailorml.deploy.learner.ondevice.Learner`) is checked."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from tailorml.deploy.int8.c import HEADER_NAME, SOURCE_NAME, generate_c, generate_header
from tailorml.deploy.int8.quantize import QuantizedModel
from tailorml.deploy.learner.c import (
    LEARNER_HEADER_NAME,
    LEARNER_SOURCE_NAME,
    generate_learner_c,
    generate_learner_header,
)
from tailorml.deploy.learner.float_head import FloatHead
from tailorml.deploy.learner.ondevice import (
    N_STRATA,
    STATUS_ARRAYS,
    STATUS_FLOATS,
    STATUS_INTS,
    LearnerSettings,
    UpdateStatus,
)
from tailorml.deploy.learner.traces import DangerousTraces
from tailorml.deploy.target.host import compile_shared_library

HARNESS_NAME = "learner_host.c"

# The host's loop over a life: a reading every step, an update every `per_update` steps.
_HARNESS = """#include "tailorml_learner.h"
int32_t tm_host_live(const int16_t *readings, int32_t n, int32_t per_update, int32_t *classes,
                     int16_t *logits, int32_t *slots, tailorml_update_status *statuses) {
    int32_t updates = 0;
    for (int32_t t = 0; t < n; t++) {
        slots[t] = tailorml_learner_active_slot();
        classes[t] = tailorml_learner_step(readings[t], logits + t * TAILORML_N_CLASSES);
        if (per_update > 0 && (t + 1) % per_update == 0) {
            tailorml_learner_update(&statuses[updates++]);
        }
    }
    return updates;
}
"""


def learner_sources(
    quantized: QuantizedModel, settings: LearnerSettings, traces: DangerousTraces | None = None
) -> dict[str, str]:
    """File name -> text of everything the device compiles (model and learner)."""
    return {
        HEADER_NAME: generate_header(quantized),
        SOURCE_NAME: generate_c(quantized),
        LEARNER_HEADER_NAME: generate_learner_header(quantized, settings),
        LEARNER_SOURCE_NAME: generate_learner_c(quantized, settings, traces),
    }


def status_type() -> type[ctypes.Structure]:
    """ctypes mirror of tailorml_update_status."""
    fields = [
        (name, ctypes.c_int32 * N_STRATA if name in STATUS_ARRAYS else ctypes.c_int32)
        for name in STATUS_INTS
    ]
    fields += [(name, ctypes.c_float) for name in STATUS_FLOATS]
    return type("TailormlUpdateStatus", (ctypes.Structure,), {"_fields_": fields})


def to_status(raw: ctypes.Structure) -> UpdateStatus:
    values = {}
    for name, _ in raw._fields_:
        value = getattr(raw, name)
        values[name] = list(value) if hasattr(value, "__len__") else value
    return UpdateStatus(**values)


class HostLearner:
    """The device's C for this machine; every method calls the C of the same name."""

    def __init__(
        self,
        quantized: QuantizedModel,
        settings: LearnerSettings,
        directory: Path,
        traces: DangerousTraces | None = None,
    ) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        sources = learner_sources(quantized, settings, traces)
        for name, text in sources.items():
            (directory / name).write_text(text)
        (directory / HARNESS_NAME).write_text(_HARNESS)
        names = (SOURCE_NAME, LEARNER_SOURCE_NAME, HARNESS_NAME)
        library = compile_shared_library(
            [directory / name for name in names],
            directory,
            "tailorml_learner",
            "the host build of the learner",
        )
        self.n_classes = len(quantized.policy.classes)
        self.n_features = int(quantized.layers[-1].weight.shape[1])
        self.window = quantized.window
        self.status_type = status_type()
        lib = ctypes.CDLL(str(library))
        lib.tailorml_learner_step.argtypes = [ctypes.c_int16, ctypes.c_void_p]
        lib.tailorml_learner_update.argtypes = [ctypes.c_void_p]
        lib.tailorml_learner_add.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32]
        lib.tailorml_learner_predict.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.tailorml_learner_slot.argtypes = [ctypes.c_int32]
        lib.tailorml_learner_slot.restype = ctypes.POINTER(ctypes.c_float)
        lib.tailorml_learner_buffer.argtypes = [ctypes.c_int32]
        lib.tailorml_learner_buffer.restype = ctypes.POINTER(ctypes.c_int8)
        lib.tailorml_learner_state_bytes.restype = ctypes.c_uint32
        lib.tm_host_live.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int32,
            ctypes.c_int32,
            *[ctypes.c_void_p] * 4,
        ]
        lib.tailorml_learner_init.restype = None
        lib.tailorml_learner_restore_factory.restype = None
        self.lib = lib
        self.settings = settings
        self.init()

    def init(self) -> None:
        self.lib.tailorml_learner_init()

    def step(self, reading: int) -> tuple[int, np.ndarray]:
        logits = np.zeros(self.n_classes, dtype=np.int16)
        decided = self.lib.tailorml_learner_step(int(reading), logits.ctypes.data)
        return decided, logits

    def add(self, features: np.ndarray, stratum: int, held_out: bool) -> int:
        row = np.ascontiguousarray(features, dtype=np.int16)
        return self.lib.tailorml_learner_add(row.ctypes.data, int(stratum), int(held_out))

    def update(self) -> UpdateStatus:
        raw = self.status_type()
        self.lib.tailorml_learner_update(ctypes.byref(raw))
        return to_status(raw)

    def restore_factory(self) -> None:
        self.lib.tailorml_learner_restore_factory()

    def active_slot(self) -> int:
        return self.lib.tailorml_learner_active_slot()

    def predict(self, readings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Active-head logits and classes for int16 readings (n, channels, window)."""
        readings = np.ascontiguousarray(readings, dtype=np.int16)
        logits = np.zeros((len(readings), self.n_classes), dtype=np.int16)
        classes = np.zeros(len(readings), dtype=np.int32)
        predict = self.lib.tailorml_learner_predict
        for i, window in enumerate(readings):
            classes[i] = predict(window.ctypes.data, logits[i].ctypes.data)
        return logits, classes

    def slot(self, slot: int) -> FloatHead:
        """A copy of the weights in slot 0 or 1 (any other index: the factory head)."""
        size = self.n_classes * (self.n_features + 1)
        flat = np.ctypeslib.as_array(self.lib.tailorml_learner_slot(slot), (size,)).copy()
        cut = self.n_classes * self.n_features
        return FloatHead(flat[:cut].reshape(self.n_classes, self.n_features), flat[cut:])

    def buffer(self, held_out: bool) -> np.ndarray:
        """A copy of a reservoir's int8 codes (strata, capacity, features)."""
        capacity = self.settings.held_per_stratum if held_out else self.settings.train_per_stratum
        shape = (N_STRATA, capacity, self.n_features)
        pointer = self.lib.tailorml_learner_buffer(int(held_out))
        return np.ctypeslib.as_array(pointer, (int(np.prod(shape)),)).reshape(shape).copy()

    def state_bytes(self) -> int:
        return int(self.lib.tailorml_learner_state_bytes())

    def live(
        self, readings: np.ndarray, per_update: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[UpdateStatus]]:
        """Step through `readings` (int16, TAILORML_MISSING where none), updating every
        `per_update` readings: the decided classes (-1: no full window), logits, the active
        slot each prediction used, and every update's status."""
        readings = np.ascontiguousarray(readings, dtype=np.int16)
        n = len(readings)
        classes = np.zeros(n, dtype=np.int32)
        logits = np.zeros((n, self.n_classes), dtype=np.int16)
        slots = np.zeros(n, dtype=np.int32)
        statuses = (self.status_type * max(1, n // max(per_update, 1) + 1))()
        count = self.lib.tm_host_live(
            readings.ctypes.data,
            n,
            per_update,
            classes.ctypes.data,
            logits.ctypes.data,
            slots.ctypes.data,
            ctypes.cast(statuses, ctypes.c_void_p),
        )
        return classes, logits, slots, [to_status(statuses[i]) for i in range(count)]
