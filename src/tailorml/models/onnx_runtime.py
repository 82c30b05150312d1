"""A float model as an ONNX file, and running one with onnxruntime.

The file the cloud service runs (`tailorml.service.runtime`) and the float anchor that the
int8 toolchains start from (`tailorml.deploy.int8.onnx_int8`): one input "readings" (raw units,
the model normalises them itself) with a dynamic batch axis, one output "logits", and the
model's alert policy (JSON) in the file's metadata, so the file alone says how its outputs
become decisions (`read_policy`; probabilities by `AlertPolicy.probabilities`).

torch and onnx are imported where a file is written or checked, never at import: the
service's API processes import this module to run sessions (`open_session`) and must not
pay for torch (about 400 MB a process) or onnx; the registry's side writes the files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from tailorml.errors import ModelFileError, TailormlError
from tailorml.io import atomic_write_bytes
from tailorml.policy import AlertPolicy

if TYPE_CHECKING:
    import onnx

    from tailorml.models.cnn import SmallCNN

INPUT_NAME = "readings"
OUTPUT_NAME = "logits"
POLICY_KEY = "tailorml.alert_policy"  # metadata_props key holding the policy as JSON
OPSET = 20
EXPORTS_KEPT = 16  # model files whose ONNX export a process keeps (about 60 KB each)
_exported: OrderedDict[str, tuple[bytes, dict]] = OrderedDict()
_exported_lock = threading.Lock()


# -- export ---------------------------------------------------------------------------------


def export_onnx(model: SmallCNN, path: str | Path) -> None:
    """Write `model` (normalisation included) as ONNX to `path`, atomically: input
    "readings" (batch, channels, length...) float32 in raw units, output "logits" (batch,
    classes); batch is dynamic. The alert policy goes into the metadata (`read_policy`)."""
    atomic_write_bytes(path, onnx_bytes(model))


def onnx_bytes(model: SmallCNN) -> bytes:
    """The ONNX file `export_onnx` writes, as bytes (the registry stores it under its own
    sha256, beside the model file)."""
    import onnx

    if model.policy is None:
        raise ValueError("set model.policy before exporting: an ONNX file carries its policy")
    proto = _export_proto(model)
    set_policy(proto, model.policy)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def onnx_of_model_file(data: bytes, source: str | Path) -> tuple[bytes, dict]:
    """The ONNX bytes and the alert policy (as a dict) of a model file's content `data`
    (read from `source`, named in errors; `ModelFileError` for bytes that are no model).

    torch's exporter traces the network (seconds per model) and writes the same bytes for
    the same file, so a process keeps its last `EXPORTS_KEPT` exports by the file's sha256:
    a model registered again (the predefined model in each new data directory, a worker's
    start-up check) is exported once."""
    key = hashlib.sha256(data).hexdigest()
    with _exported_lock:
        found = _exported.get(key)
        if found is not None:
            _exported.move_to_end(key)
            return found[0], dict(found[1])
    from tailorml.models.cnn import load_model

    model = load_model(source, data)
    made = (onnx_bytes(model), model.policy.to_dict())
    with _exported_lock:
        _exported[key] = made
        while len(_exported) > EXPORTS_KEPT:
            _exported.popitem(last=False)
    return made[0], dict(made[1])


def _export_proto(model: SmallCNN) -> onnx.ModelProto:
    """torch's exporter (torch.export + onnxscript); batch 2 in the example, since
    torch.export would specialise a batch of 1 into a constant."""
    import torch

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


def set_policy(proto: onnx.ModelProto, policy: AlertPolicy) -> None:
    import onnx

    onnx.helper.set_model_props(proto, {POLICY_KEY: json.dumps(policy.to_dict(), sort_keys=True)})


def read_policy(path: str | Path) -> AlertPolicy:
    """The alert policy stored in an ONNX file written by `export_onnx` (or quantized)."""
    return policy_in(load_checked(path), path)


def policy_in(proto: onnx.ModelProto, path: str | Path) -> AlertPolicy:
    props = {prop.key: prop.value for prop in proto.metadata_props}
    if POLICY_KEY not in props:
        raise ModelFileError(
            f"{path} has no alert policy in its metadata ({POLICY_KEY}); export it with "
            "tailorml.models.onnx_runtime.export_onnx"
        )
    try:
        data = json.loads(props[POLICY_KEY])
    except json.JSONDecodeError as error:
        raise ModelFileError(f"{path}: alert policy is not JSON ({error})") from None
    return AlertPolicy.from_dict(data, str(path))


# -- running ---------------------------------------------------------------------------------


def onnx_logits(path: str | Path, windows: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Logits (n, classes) of the ONNX model at `path` for `windows` (n, channels, length),
    by onnxruntime on one CPU thread (deterministic), `batch_size` windows at a time."""
    session = open_session(path)
    shape = tuple(session.get_inputs()[0].shape[1:])
    windows = checked_windows(windows, shape, "windows", path)
    classes = session.get_outputs()[0].shape[1]
    outputs = [np.empty((0, classes), dtype=np.float32)]
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        outputs.append(session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0])
    return np.concatenate(outputs)


def onnx_proba(path: str | Path, windows: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Class probabilities of `onnx_logits` (`AlertPolicy.probabilities`): what
    `AlertPolicy.decide` takes."""
    return AlertPolicy.probabilities(onnx_logits(path, windows, batch_size))


# -- files and inputs -----------------------------------------------------------------------


def open_session(path: str | Path, data: bytes | None = None) -> ort.InferenceSession:
    """An onnxruntime session on one thread for a file written by `export_onnx`; anything
    else is a ModelFileError naming it (the service opens its models with this). With
    `data`, the session is made from those bytes of `path` (already read and hashed: what
    runs is what was verified, even if the file changes)."""
    if data is None:
        _require_file(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        source = str(path) if data is None else data
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's protobuf, graph and type errors alike
        raise ModelFileError(
            f"{path} is not an ONNX model onnxruntime can run ({type(error).__name__}); "
            "export it with tailorml.models.onnx_runtime.export_onnx"
        ) from None
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise ModelFileError(
            f"{path} has inputs {names[0]} and outputs {names[1]}, not "
            f"['{INPUT_NAME}'] and ['{OUTPUT_NAME}']; export it with export_onnx"
        )
    return session


def load_checked(path: str | Path) -> onnx.ModelProto:
    """The ONNX model at `path`, checked; anything else is a ModelFileError naming it."""
    import onnx

    _require_file(path)
    try:
        proto = onnx.load(path)
        onnx.checker.check_model(proto)
    except Exception as error:  # protobuf decode and checker errors alike
        raise ModelFileError(
            f"{path} is not a valid ONNX model ({type(error).__name__}); export it with "
            "tailorml.models.onnx_runtime.export_onnx"
        ) from None
    inputs = [i.name for i in proto.graph.input]
    if inputs != [INPUT_NAME]:
        raise ModelFileError(f"{path} has inputs {inputs}, not ['{INPUT_NAME}']")
    return proto


def _require_file(path: str | Path) -> None:
    if not Path(path).is_file():
        raise ModelFileError(f"ONNX model file not found: {path}")


def input_shape(proto: onnx.ModelProto) -> tuple[int | str, ...]:
    """The input's shape after the batch axis (dims without a fixed size as their names)."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim[1:]
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims)


def checked_windows(windows: np.ndarray, shape: tuple, what: str, path: str | Path) -> np.ndarray:
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
