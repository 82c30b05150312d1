"""The generated C compiled for this machine: the middle rung of the parity ladder.

The same source the microcontroller gets, built as a shared library with the bundled clang
(`ziglang`) and called through ctypes on whole batches, so every test window can be checked
against the integer reference in about a second.
"""

from __future__ import annotations

import ctypes
import hashlib
import tempfile
from pathlib import Path

import numpy as np

from tailorml.deploy.int8.c import HEADER_NAME, SOURCE_NAME
from tailorml.deploy.int8.device_rules import DeviceAlerts
from tailorml.deploy.int8.parity import Rung, compare_logits
from tailorml.deploy.target.mcu import run_compiler, zig_command
from tailorml.errors import DeployError

_BATCH = """#include "tailorml_model.h"
/* Host harness: the model over a batch, for the parity ladder. */
void tm_predict_batch(const int16_t *readings, int32_t n, int16_t *logits, int32_t *classes) {
    for (int32_t i = 0; i < n; i++) {
        classes[i] = tailorml_predict(readings + i * TAILORML_CHANNELS * TAILORML_WINDOW,
                                      logits + i * TAILORML_N_CLASSES);
    }
}

/* tailorml_alert over a batch: status, class, margin and logits per window. */
void tm_alert_batch(const int16_t *readings, int32_t n, int32_t *status, int32_t *classes,
                    int32_t *margins, int16_t *logits) {
    tailorml_work work;
    for (int32_t i = 0; i < n; i++) {
        tailorml_result result;
        status[i] = tailorml_alert(readings + i * TAILORML_CHANNELS * TAILORML_WINDOW, &result,
                                   &work);
        classes[i] = result.decided_class;
        margins[i] = result.margin;
        for (int32_t j = 0; j < TAILORML_N_CLASSES; j++) {
            logits[i * TAILORML_N_CLASSES + j] = result.logits[j];
        }
    }
}

void tm_features_batch(const int16_t *readings, int32_t n, int16_t *features) {
    for (int32_t i = 0; i < n; i++) {
        tailorml_features(readings + i * TAILORML_CHANNELS * TAILORML_WINDOW,
                          features + i * TAILORML_FEATURES);
    }
}
"""


def compile_shared_library(sources: list[Path], directory: Path, stem: str, what: str) -> Path:
    """C sources into a shared library for this machine (bundled clang, the warnings the
    device build gets), named by its sources' content: the loader hands back an already
    loaded library of the same path, whatever the file now holds."""
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()[:16]
    library = Path(directory) / f"lib{stem}-{digest}.so"
    flags = ["-std=c99", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror"]
    run_compiler([*zig_command(), *flags, "-o", str(library), *map(str, sources)], what)
    return library


class HostModel:
    """A generated model (`header`, `source`), compiled for the host in `directory`."""

    def __init__(self, header: str, source: str, n_classes: int, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / HEADER_NAME).write_text(header)
        (directory / SOURCE_NAME).write_text(source)
        (directory / "batch.c").write_text(_BATCH)
        library = compile_shared_library(
            [directory / SOURCE_NAME, directory / "batch.c"],
            directory,
            "tailorml_model",
            "the host build",
        )
        self.n_classes = n_classes
        self._library = ctypes.CDLL(str(library))
        self._library.tm_predict_batch.restype = None
        self._library.tm_features_batch.restype = None
        self._library.tm_alert_batch.restype = None

    def predict(self, readings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int16 logits (n, classes) and decided classes (n,) for int16 readings
        (n, channels, window)."""
        readings = np.ascontiguousarray(readings, dtype=np.int16)
        n = len(readings)
        logits = np.zeros((n, self.n_classes), dtype=np.int16)
        classes = np.zeros(n, dtype=np.int32)
        self._library.tm_predict_batch(
            readings.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_int32(n),
            logits.ctypes.data_as(ctypes.c_void_p),
            classes.ctypes.data_as(ctypes.c_void_p),
        )
        return logits, classes

    def alert(self, readings: np.ndarray) -> DeviceAlerts:
        """`tailorml_alert` on int16 readings (n, channels, window): what the device does
        around the model (no decision for a gap, the urgent-low floor, clamping)."""
        readings = np.ascontiguousarray(readings, dtype=np.int16)
        n = len(readings)
        status, classes, margins = (np.zeros(n, dtype=np.int32) for _ in range(3))
        logits = np.zeros((n, self.n_classes), dtype=np.int16)
        self._library.tm_alert_batch(
            readings.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_int32(n),
            *(a.ctypes.data_as(ctypes.c_void_p) for a in (status, classes, margins, logits)),
        )
        return DeviceAlerts(status, classes, margins, logits)

    def features(self, readings: np.ndarray, n_features: int) -> np.ndarray:
        """`tailorml_features` (n, n_features) for int16 readings (n, channels, window)."""
        readings = np.ascontiguousarray(readings, dtype=np.int16)
        features = np.zeros((len(readings), n_features), dtype=np.int16)
        self._library.tm_features_batch(
            readings.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_int32(len(readings)),
            features.ctypes.data_as(ctypes.c_void_p),
        )
        return features


def host_rung(
    header: str,
    source: str,
    n_classes: int,
    readings: np.ndarray,
    expected_logits: np.ndarray,
    expected_classes: np.ndarray,
    individuals: int,
) -> Rung:
    """The ladder's middle rung: the generated C built for this machine (in a scratch
    folder) on `readings`, against the integer reference's logits; refused unless they are
    identical on every window."""
    with tempfile.TemporaryDirectory(prefix="tailorml-host-") as scratch:
        logits, classes = HostModel(header, source, n_classes, Path(scratch)).predict(readings)
    rung = compare_logits(
        "int8 reference -> host C",
        expected_logits,
        logits,
        expected_classes,
        classes,
        individuals,
    )
    if not rung.identical_logits:
        raise DeployError(
            "the host build of the generated C computed other logits than the integer "
            "reference; the export is not trustworthy — please report this"
        )
    return rung
