"""ONNX export and onnxruntime's int8 anchor, on a model trained briefly on real windows of
three simulated patients (3 days each)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from tailorml.config import config_from_dict
from tailorml.deploy.int8.onnx_int8 import (
    decision_agreement,
    export_onnx,
    onnx_logits,
    onnx_proba,
    quantize_onnx_int8,
    read_policy,
)
from tailorml.errors import ModelFileError, TailormlError
from tailorml.models.cnn import SmallCNN, save_model
from tailorml.models.predict import predict_proba
from tailorml.recipe import fresh_model

PATIENTS = ["adolescent-003", "adult-008", "child-004"]


@dataclass
class Exported:
    model: SmallCNN
    train: np.ndarray  # training windows (calibration)
    test: np.ndarray  # test windows
    float_path: Path
    int8_path: Path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained) -> Exported:
    model = trained.model
    train, test = trained.train, trained.test
    folder = tmp_path_factory.mktemp("onnx")
    export_onnx(model, folder / "model.onnx")
    quantize_onnx_int8(folder / "model.onnx", train, folder / "int8.onnx")
    return Exported(model, train, test, folder / "model.onnx", folder / "int8.onnx")


def torch_logits(model: SmallCNN, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(x)).numpy()


def test_float_onnx_gives_torchs_logits_on_real_windows(exported):
    expected = torch_logits(exported.model, exported.test)
    logits = onnx_logits(exported.float_path, exported.test)
    assert logits.shape == (len(exported.test), 3)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    # the batch axis is dynamic: one window, and batches of 7 with a short last one
    one = onnx_logits(exported.float_path, exported.test[:1])
    np.testing.assert_allclose(one, expected[:1], atol=1e-4, rtol=0)
    assert np.array_equal(onnx_logits(exported.float_path, exported.test, batch_size=7), logits)
    assert onnx_logits(exported.float_path, exported.test[:0]).shape == (0, 3)


def test_the_file_says_how_to_decide(exported):
    model = onnx.load(exported.float_path)
    assert [i.name for i in model.graph.input] == ["readings"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert read_policy(exported.float_path) == exported.model.policy
    assert read_policy(exported.int8_path) == exported.model.policy  # quantizing keeps it
    assert read_policy(exported.float_path).threshold == 0.7


def test_the_int8_graph_has_int8_per_channel_weights_and_int8_activations(exported):
    model = onnx.load(exported.int8_path)
    ops = [node.op_type for node in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = [
        node
        for node in model.graph.node
        if node.op_type == "DequantizeLinear" and node.input[0].endswith("weight_quantized")
    ]
    # conv 1->16, 16->32, 32->32, linear 192->32, 32->3: one scale per output channel
    names = ["features.0", "features.3", "features.6", "head.1", "head.3"]
    assert sorted(node.input[0].removesuffix(".weight_quantized") for node in weights) == names
    for node in weights:
        values, scale, zero = (initializers[name] for name in node.input)
        assert values.dtype == np.int8 and np.abs(values).max() == 127  # symmetric [-127, 127]
        assert scale.shape == zero.shape == (values.shape[0],)
        assert zero.dtype == np.int8 and not zero.any()
    # activations: int8, asymmetric; after a ReLU the range starts at 0, so zero point -128
    activations = [node for node in model.graph.node if node.op_type == "QuantizeLinear"]
    zeros = {node.input[2]: initializers[node.input[2]] for node in activations}
    assert all(zero.dtype == np.int8 and zero.shape == () for zero in zeros.values())
    assert zeros["relu_zero_point"] == -128
    biases = [initializers[n] for n in initializers if n.endswith("bias_quantized")]
    assert len(biases) == 5 and all(bias.dtype == np.int32 for bias in biases)


def test_int8_decides_as_the_float_model_on_almost_every_window(exported):
    agreement = decision_agreement(exported.model, exported.int8_path, exported.test)
    assert agreement >= 0.95
    float_proba = predict_proba(exported.model, exported.test)
    int8_proba = onnx_proba(exported.int8_path, exported.test)
    np.testing.assert_allclose(int8_proba.sum(axis=1), 1.0, atol=1e-9)
    # int8 really ran: close to the float probabilities, but not equal to them
    assert 0 < np.abs(int8_proba - float_proba).mean() < 0.05


def test_onnxruntime_is_deterministic(exported, tmp_path):
    once = onnx_logits(exported.int8_path, exported.test)
    assert np.array_equal(once, onnx_logits(exported.int8_path, exported.test))
    quantize_onnx_int8(exported.float_path, exported.train, tmp_path / "again.onnx")
    assert (tmp_path / "again.onnx").read_bytes() == exported.int8_path.read_bytes()


def test_an_empty_calibration_set_is_refused(exported, tmp_path):
    with pytest.raises(TailormlError, match=r"calibration set for .*model\.onnx is empty"):
        quantize_onnx_int8(exported.float_path, exported.train[:0], tmp_path / "int8.onnx")
    assert not (tmp_path / "int8.onnx").exists()


def test_windows_of_another_shape_or_with_nan_are_refused(exported, tmp_path):
    with pytest.raises(TailormlError, match=r"shape \(4, 1, 12\) but .* takes \(n, 1, 24\)"):
        onnx_logits(exported.float_path, exported.test[:4, :, :12])
    broken = exported.train[:10].copy()
    broken[3, 0, 5] = np.nan
    with pytest.raises(TailormlError, match="calibration set holds NaN"):
        quantize_onnx_int8(exported.float_path, broken, tmp_path / "int8.onnx")


def test_a_model_without_policy_is_not_exported(exported, tmp_path):
    model = fresh_model(config_from_dict({}).model, exported.train, 3, seed=0)
    with pytest.raises(ValueError, match="policy"):
        export_onnx(model, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize("content", [None, b"", b"not an onnx model", "torch"])
def test_missing_or_corrupt_files_are_model_file_errors(exported, tmp_path, content):
    path = tmp_path / "model.onnx"
    if content == "torch":
        save_model(exported.model, path)  # a tailorml model, but not ONNX
    elif content is not None:
        path.write_bytes(content)
    for call in (
        lambda: onnx_logits(path, exported.test),
        lambda: read_policy(path),
        lambda: quantize_onnx_int8(path, exported.train, tmp_path / "int8.onnx"),
        lambda: decision_agreement(exported.model, path, exported.test),
    ):
        with pytest.raises(ModelFileError, match=str(path)):
            call()
    assert not (tmp_path / "int8.onnx").exists()


def test_an_onnx_file_without_policy_is_named(exported, tmp_path):
    model = onnx.load(exported.float_path)
    del model.metadata_props[:]
    onnx.save(model, tmp_path / "bare.onnx")
    with pytest.raises(ModelFileError, match=r"bare\.onnx has no alert policy"):
        read_policy(tmp_path / "bare.onnx")
