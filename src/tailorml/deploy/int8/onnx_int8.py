"""onnxruntime's static int8 quantization of a float ONNX model (`tailorml.models.onnx_runtime`).

Why: our own int8 reference (`tailorml.deploy.int8.quantize`) needs an independent anchor — the
same model through a widely used int8 toolchain. If ours loses more decisions than
onnxruntime's does, the loss is ours, not int8's. The float file itself (export, policy in
its metadata, sessions) lives in `tailorml.models.onnx_runtime`, which the cloud service
runs; its names are re-exported here for the int8 workflow.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from tailorml.errors import TailormlError
from tailorml.io import atomic_write_bytes
from tailorml.models.cnn import SmallCNN
from tailorml.models.onnx_runtime import (
    INPUT_NAME,
    OUTPUT_NAME,
    checked_windows,
    export_onnx,
    input_shape,
    load_checked,
    onnx_logits,
    onnx_proba,
    open_session,
    policy_in,
    read_policy,
    set_policy,
)
from tailorml.models.predict import predict_proba

__all__ = [  # the float file's names too, for the int8 workflow (export, quantize, compare)
    "INPUT_NAME",
    "OUTPUT_NAME",
    "decision_agreement",
    "export_onnx",
    "onnx_logits",
    "onnx_proba",
    "open_session",
    "quantize_onnx_int8",
    "read_policy",
]


# -- int8 -----------------------------------------------------------------------------------


def quantize_onnx_int8(
    float_path: str | Path,
    calibration: np.ndarray,
    out_path: str | Path,
    batch_size: int = 256,
) -> None:
    """onnxruntime's static int8 quantization of `float_path`, calibrated on the windows
    `calibration` (n, channels, length), written atomically to `out_path` (policy kept).

    Settings, the TFLite int8 spec as far as onnxruntime allows: QDQ format (Quantize/
    DequantizeLinear pairs; onnxruntime fuses them into int8 kernels); weights int8
    symmetric per output channel (zero point 0, range [-127, 127]); activations int8
    asymmetric per tensor; biases int32 with scale input_scale * weight_scale; plain MinMax
    calibration (no moving average, no reduced range). ReLU is folded into the quantized
    range of the layer before it (zero point -128), and the logits are int8 too, as in a
    full-integer TFLite model. Unlike TFLite, the input and its normalisation (Sub, Div) stay
    float: onnxruntime does not quantize those ops, so the first int8 tensor is the
    normalised input of the first convolution."""
    proto = load_checked(float_path)
    windows = checked_windows(calibration, input_shape(proto), "calibration set", float_path)
    if len(windows) == 0:
        raise TailormlError(
            f"the calibration set for {float_path} is empty; pass at least one window "
            "(a few hundred training windows are typical)"
        )
    with tempfile.TemporaryDirectory(prefix="tailorml-onnx-int8-") as folder:
        prepared, quantized = Path(folder) / "prepared.onnx", Path(folder) / "int8.onnx"
        quant_pre_process(Path(float_path), prepared)  # shape inference, as onnxruntime asks
        quantize_static(
            prepared,
            quantized,
            _Batches(windows, batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={
                "ActivationSymmetric": False,
                "WeightSymmetric": True,
                "QuantizeBias": True,
                "CalibMovingAverage": False,
            },
        )
        result = onnx.load(quantized)
    set_policy(result, policy_in(proto, float_path))
    atomic_write_bytes(out_path, result.SerializeToString())


class _Batches(CalibrationDataReader):
    """The calibration windows as onnxruntime's reader: one {"readings": batch} at a time."""

    def __init__(self, windows: np.ndarray, batch_size: int) -> None:
        self.windows, self.batch_size, self.start = windows, batch_size, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.start >= len(self.windows):
            return None
        batch = self.windows[self.start : self.start + self.batch_size]
        self.start += self.batch_size
        return {INPUT_NAME: batch}

    def rewind(self) -> None:
        self.start = 0


def decision_agreement(model: SmallCNN, int8_path: str | Path, windows: np.ndarray) -> float:
    """Fraction of `windows` on which the int8 ONNX model decides as the float `model` does,
    both under `model.policy` (the alert class at its threshold, else the likelier other)."""
    if model.policy is None:
        raise ValueError("the model has no alert policy: nothing says how to decide")
    if len(windows) == 0:
        raise ValueError("decision agreement needs at least one window")
    int8 = model.policy.decide(onnx_proba(int8_path, windows))
    float_ = model.policy.decide(predict_proba(model, np.asarray(windows, dtype=np.float32)))
    return float(np.mean(int8 == float_))
