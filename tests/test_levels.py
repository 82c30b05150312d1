"""The HE-friendly model's input levels: max(k − CGM, 0) per level, the same in numpy (the
client) and torch (the model), on channel 0 only."""

import numpy as np
import pytest
import torch

from tailorml.config import ModelConfig, config_from_dict
from tailorml.errors import ConfigError
from tailorml.models.cnn import build_model, load_model, save_model
from tailorml.models.levels import LevelEncoding, encode_levels
from tailorml.policy import AlertPolicy
from tailorml.recipe import fresh_model

WINDOW = np.array([[[70.0, 80.0, 100.0], [1.0, 2.0, 3.0]]])  # CGM, then IOB


def test_levels_append_how_far_the_cgm_is_below_each():
    encoded = encode_levels(WINDOW, [75.0, 90.0])
    assert encoded.shape == (1, 4, 3)
    np.testing.assert_array_equal(encoded[0, :2], WINDOW[0])  # the window itself, unchanged
    np.testing.assert_array_equal(encoded[0, 2], [5.0, 0.0, 0.0])
    np.testing.assert_array_equal(encoded[0, 3], [20.0, 10.0, 0.0])  # IOB is not encoded
    np.testing.assert_array_equal(encode_levels(WINDOW, []), WINDOW)  # no levels: as is


def test_the_torch_layer_computes_the_same():
    layer = LevelEncoding([75.0, 90.0])
    out = layer(torch.tensor(WINDOW, dtype=torch.float32)).numpy()
    np.testing.assert_array_equal(out, encode_levels(WINDOW, [75.0, 90.0]))
    assert "levels" not in layer.state_dict()  # the spec stores them, not the weights


def test_a_model_normalises_its_level_channels_from_the_training_windows(tmp_path):
    config = ModelConfig(architecture="he_friendly", conv_channels=[2], hidden=0, cgm_levels=[85.0])
    x = np.stack([np.full((1, 4), 70.0), np.full((1, 4), 100.0)]).astype(np.float32)
    model = fresh_model(config, x, 3, seed=0)
    # CGM 70 and 100: mean 85, sd 15; below 85: 15 and 0, mean 7.5, sd 7.5
    np.testing.assert_allclose(model.normalize.mean.flatten(), [85.0, 7.5])
    np.testing.assert_allclose(model.normalize.scale.flatten(), [15.0, 7.5])
    assert model.features[0].in_channels == 2 and model.spec.in_channels == 1
    model.policy = AlertPolicy()
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.spec.cgm_levels == [85.0]
    torch.testing.assert_close(loaded(torch.tensor(x)), model(torch.tensor(x)))


def test_a_model_without_levels_loads_as_before():
    model = build_model(
        ModelConfig(architecture="he_friendly", conv_channels=[2], hidden=0),
        1,
        4,
        3,
        torch.zeros(1),
        torch.ones(1),
    )
    assert model.features[0].in_channels == 1 and model.spec.cgm_levels == []


@pytest.mark.parametrize(
    ("model", "task", "match"),
    [
        ({"cgm_levels": [80.0]}, {}, r"cgm_levels is the he_friendly model's input encoding"),
        (
            {
                "architecture": "he_friendly",
                "conv_channels": [4],
                "hidden": 0,
                "cgm_levels": [90.0, 80.0],
            },
            {},
            r"strictly increasing glucose levels in mg/dL between 40 and 400",
        ),
        (
            {
                "architecture": "he_friendly",
                "conv_channels": [4],
                "hidden": 0,
                "cgm_levels": [30.0],
            },
            {},
            r"between 40 and 400",
        ),
        (
            {
                "architecture": "he_friendly",
                "conv_channels": [4],
                "hidden": 0,
                "cgm_levels": [80.0],
            },
            {"channels": ["iob", "cgm"]},
            r"model.cgm_levels encodes input channel 0.*put 'cgm' first",
        ),
    ],
)
def test_bad_levels_are_refused_by_name(model, task, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"model": model, "task": task})


def test_a_normalisation_for_too_few_channels_is_refused():
    # one mean for the CGM and its two level channels would broadcast silently
    config = ModelConfig(
        architecture="he_friendly", conv_channels=[2], hidden=0, cgm_levels=[80.0, 90.0]
    )
    with pytest.raises(ConfigError, match=r"1 means and 1 scales for 3 input channel"):
        build_model(config, 1, 4, 3, torch.zeros(1), torch.ones(1))


def test_the_service_s_onnx_export_keeps_the_levels(tmp_path):
    # a model with levels may be someone's plaintext live-alert model too (service runtime)
    from tailorml.deploy.int8.onnx_int8 import INPUT_NAME, OUTPUT_NAME, export_onnx, open_session

    config = ModelConfig(
        architecture="he_friendly", conv_channels=[3], hidden=0, cgm_levels=[80.0, 120.0]
    )
    torch.manual_seed(0)
    model = build_model(config, 1, 8, 3, torch.tensor([150.0, 5.0, 10.0]), torch.full((3,), 20.0))
    model.policy = AlertPolicy()
    model.eval()
    export_onnx(model, tmp_path / "m.onnx")
    windows = np.stack([np.full((1, 8), 60.0), np.full((1, 8), 100.0), np.full((1, 8), 200.0)])
    windows = windows.astype(np.float32)  # raw CGM only: the file encodes the levels itself
    onnx_logits = open_session(tmp_path / "m.onnx").run([OUTPUT_NAME], {INPUT_NAME: windows})[0]
    torch_logits = model(torch.tensor(windows)).detach().numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)
