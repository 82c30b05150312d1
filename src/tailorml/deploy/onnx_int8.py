"""The float model as an ONNX file, and onnxruntime's static int8 quantization of it.

Why: our own int8 reference (`tailorml.deploy.quantize`) needs an independent anchor — the
same model through a widely used int8 toolchain. If ours loses more decisions than
onnxruntime's does, the loss is ours, not int8's. The float export is also the file the cloud
service runs, so it is general: one input "readings" (raw units, the model normalises them
itself) with a dynamic batch axis, one output "logits", and the model's alert policy (JSON)
in the file's metadata, so the file alone says how its outputs become decisions.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from tailorml.errors import ModelFileError, TailormlError
from tailorml.io import atomic_write_bytes
from tailorml.models.cnn import SmallCNN
from tailorml.models.predict import predict_proba
from tailorml.policy import AlertPolicy

INPUT_NAME = "readings"
OUTPUT_NAME = "logits"
POLICY_KEY = "tailorml.alert_policy"  # metadata_props key holding the policy as JSON
OPSET = 20


# -- export ---------------------------------------------------------------------------------


def export_onnx(model: SmallCNN, path: str | Path) -> None:
    """Write `model` (normalisation included) as ONNX to `path`, atomically: input
    "readings" (batch, channels, length...) float32 in raw units, output "logits" (batch,
    classes); batch is dynamic. The alert policy goes into the metadata (`read_policy`)."""
    if model.policy is None:
        raise ValueError("set model.policy before exporting: an ONNX file carries its policy")
    proto = _export_proto(model)
    _set_policy(proto, model.policy)
    onnx.checker.check_model(proto)
    atomic_write_bytes(path, proto.SerializeToString())


def _export_proto(model: SmallCNN) -> onnx.ModelProto:
    """torch's exporter (torch.export + onnxscript); batch 2 in the example, since
    torch.export would specialise a batch of 1 into a constant."""
    spec = model.spec
    example = torch.zeros((2, spec.in_channels) + (spec.length,) * spec.dims)
    was_training = model.training
    model.eval()
    # the exporter logs a warning per torchvision operator it cannot register; we use none
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # torch's own exporter trips over its own pytree deprecation; nothing a caller can fix
            warnings.filterwarnings("ignore", ".*LeafSpec", FutureWarning)
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=OPSET,
                external_data=False,
                verbose=False,
            )
    finally:
        model.train(was_training)
        registration.setLevel(level)
    return program.model_proto


def _set_policy(proto: onnx.ModelProto, policy: AlertPolicy) -> None:
    onnx.helper.set_model_props(proto, {POLICY_KEY: json.dumps(policy.to_dict(), sort_keys=True)})


def read_policy(path: str | Path) -> AlertPolicy:
    """The alert policy stored in an ONNX file written by `export_onnx` (or quantized)."""
    return _policy_of(_load(path), path)


def _policy_of(proto: onnx.ModelProto, path: str | Path) -> AlertPolicy:
    props = {prop.key: prop.value for prop in proto.metadata_props}
    if POLICY_KEY not in props:
        raise ModelFileError(
            f"{path} has no alert policy in its metadata ({POLICY_KEY}); export it with "
            "tailorml.deploy.onnx_int8.export_onnx"
        )
    try:
        data = json.loads(props[POLICY_KEY])
    except json.JSONDecodeError as error:
        raise ModelFileError(f"{path}: alert policy is not JSON ({error})") from None
    return AlertPolicy.from_dict(data, str(path))


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
    proto = _load(float_path)
    windows = _checked_windows(calibration, _input_shape(proto), "calibration set", float_path)
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
    _set_policy(result, _policy_of(proto, float_path))
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


# -- running --------------------------------------------------------------------------------


def onnx_logits(path: str | Path, windows: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Logits (n, classes) of the ONNX model at `path` for `windows` (n, channels, length),
    by onnxruntime on one CPU thread (deterministic), `batch_size` windows at a time."""
    session = open_session(path)
    shape = tuple(session.get_inputs()[0].shape[1:])
    windows = _checked_windows(windows, shape, "windows", path)
    classes = session.get_outputs()[0].shape[1]
    outputs = [np.empty((0, classes), dtype=np.float32)]
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        outputs.append(session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0])
    return np.concatenate(outputs)


def onnx_proba(path: str | Path, windows: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Softmax of `onnx_logits`: what `AlertPolicy.decide` takes."""
    logits = onnx_logits(path, windows, batch_size).astype(np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


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


# -- files and inputs -----------------------------------------------------------------------


def open_session(path: str | Path) -> ort.InferenceSession:
    """An onnxruntime session on one thread for a file written by `export_onnx`; anything
    else is a ModelFileError naming it (the service opens its models with this)."""
    _require_file(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's protobuf, graph and type errors alike
        raise ModelFileError(
            f"{path} is not an ONNX model onnxruntime can run ({type(error).__name__}); "
            "export it with tailorml.deploy.onnx_int8.export_onnx"
        ) from None
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise ModelFileError(
            f"{path} has inputs {names[0]} and outputs {names[1]}, not "
            f"['{INPUT_NAME}'] and ['{OUTPUT_NAME}']; export it with export_onnx"
        )
    return session


def _load(path: str | Path) -> onnx.ModelProto:
    """The ONNX model at `path`, checked; anything else is a ModelFileError naming it."""
    _require_file(path)
    try:
        proto = onnx.load(path)
        onnx.checker.check_model(proto)
    except Exception as error:  # protobuf decode and checker errors alike
        raise ModelFileError(
            f"{path} is not a valid ONNX model ({type(error).__name__}); export it with "
            "tailorml.deploy.onnx_int8.export_onnx"
        ) from None
    inputs = [i.name for i in proto.graph.input]
    if inputs != [INPUT_NAME]:
        raise ModelFileError(f"{path} has inputs {inputs}, not ['{INPUT_NAME}']")
    return proto


def _require_file(path: str | Path) -> None:
    if not Path(path).is_file():
        raise ModelFileError(f"ONNX model file not found: {path}")


def _input_shape(proto: onnx.ModelProto) -> tuple[int | str, ...]:
    """The input's shape after the batch axis (dims without a fixed size as their names)."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim[1:]
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims)


def _checked_windows(windows: np.ndarray, shape: tuple, what: str, path: str | Path) -> np.ndarray:
    """`windows` as contiguous float32, refused unless (n, *shape) and finite."""
    windows = np.ascontiguousarray(windows, dtype=np.float32)
    fixed = [size if isinstance(size, int) else None for size in shape]
    if windows.ndim != len(shape) + 1 or any(
        size is not None and size != actual
        for size, actual in zip(fixed, windows.shape[1:], strict=True)
    ):
        raise TailormlError(
            f"{what} has shape {windows.shape} but {path} takes (n, "
            f"{', '.join(str(size) for size in shape)}); window the data with the model's policy"
        )
    if not np.isfinite(windows).all():
        raise TailormlError(f"{what} holds NaN or inf readings; drop those windows")
    return windows
