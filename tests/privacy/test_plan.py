"""The encrypted forward pass, run in numpy: it must equal the torch model exactly (the
folding of normalisation, activation shift and pooling is algebra, not approximation)."""

import numpy as np
import pytest
import torch

from tailorml.config import ModelConfig
from tailorml.models.cnn import build_model
from tailorml.models.he_cnn import multiplicative_depth
from tailorml.privacy.layout import InputLayout
from tailorml.privacy.params import PrivacyError
from tailorml.privacy.plan import compile_plan, plain_logits, run_plain, torch_logits

from .conftest import glucose_windows, he_model


@pytest.mark.parametrize(
    ("hidden", "activation", "channels"),
    [(0, "square", 1), (0, "relu_poly", 1), (6, "square", 1), (6, "relu_poly", 2)],
)
def test_plan_in_numpy_equals_the_torch_forward(hidden, activation, channels):
    model = he_model(hidden, activation, channels)
    windows = glucose_windows(45, channels)  # 32 + 13: two ciphertexts, the second padded
    plan = compile_plan(model)
    # float64 on both sides: only summation order differs
    np.testing.assert_allclose(plain_logits(plan, windows), torch_logits(model, windows), atol=1e-9)


def test_a_plan_with_input_levels_equals_the_torch_forward():
    # the client encodes max(k - CGM, 0) before packing; the server's conv reads 1 + 2 channels
    model = he_model(0, "relu_poly", channels=2, levels=(75.0, 90.0))
    plan = compile_plan(model)
    assert plan.layout.channels == 4 and plan.layout.window_channels == 2
    assert plan.depth == 3  # the encoding is the client's: no level of the chain
    windows = glucose_windows(20, channels=2)
    np.testing.assert_allclose(plain_logits(plan, windows), torch_logits(model, windows), atol=1e-9)


def test_packing_encodes_the_levels_of_the_cgm_channel():
    layout = InputLayout.for_model(2, 3, 1, 64, levels=(75.0, 90.0))
    window = np.array([[[70.0, 80.0, 100.0], [1.0, 2.0, 3.0]]])  # CGM, then IOB
    packed = layout.pack(window, 1)
    assert layout.block == 4  # next power of two of 3 readings
    blocks = packed.reshape(4, 4)[:, :3]  # one block per packed channel, readings first
    np.testing.assert_array_equal(blocks[0], [70.0, 80.0, 100.0])
    np.testing.assert_array_equal(blocks[1], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(blocks[2], [5.0, 0.0, 0.0])  # max(75 - CGM, 0)
    np.testing.assert_array_equal(blocks[3], [20.0, 10.0, 0.0])  # max(90 - CGM, 0)
    with pytest.raises(PrivacyError, match=r"this model reads 2 channel\(s\) × 3 readings"):
        layout.check_windows(np.zeros((1, 4, 3)))  # an already encoded window is refused


def test_batching_does_not_change_a_window_s_logits(small_model):
    plan = compile_plan(small_model)
    windows = glucose_windows(8)
    alone = np.concatenate([run_plain(plan, plan.layout.pack(w[None], 1), 1) for w in windows])
    together = run_plain(plan, plan.layout.pack(windows, 8), 8)
    np.testing.assert_allclose(together, alone, atol=1e-9)


def test_depth_by_layer_count():
    # conv, x², head: 3; with a hidden layer also its x² and the output layer: 5
    assert compile_plan(he_model(0)).depth == multiplicative_depth(he_model(0).spec) == 3
    assert compile_plan(he_model(4)).depth == 5


def test_the_convolution_needs_one_diagonal_per_kernel_tap(small_model):
    # what keeps the server fast: non-zero diagonals of the batched conv matrix (TenSEAL's
    # diagonal method rotates once per non-zero diagonal) do not grow with the batch
    plan = compile_plan(small_model)
    for batch in (1, 8):
        matrix = plan.conv_matrix(batch)
        n, _m = matrix.shape
        rows, columns = np.nonzero(matrix)
        assert len(np.unique((rows - columns) % n)) == small_model.spec.kernel_size


def test_a_relu_cnn_is_refused_by_name():
    cnn = build_model(ModelConfig(), 1, 24, 3, torch.tensor([150.0]), torch.tensor([50.0]))
    with pytest.raises(PrivacyError, match=r"runs/x/model\.pt is a 'cnn' model.*he_friendly"):
        compile_plan(cnn, "runs/x/model.pt")


@pytest.mark.parametrize(
    ("window", "match"),
    [
        (np.zeros(20), r"window has shape \(20,\); this model reads 1 channel\(s\) × 24"),
        (np.zeros((2, 24)), r"shape \(2, 24\)"),
        (np.full(24, np.nan), "missing"),
        (np.zeros((0, 1, 24)), "no windows"),
    ],
)
def test_a_wrong_window_is_a_one_line_error(window, match):
    layout = InputLayout.for_model(1, 24, 5, 4096)
    with pytest.raises(PrivacyError, match=match):
        layout.check_windows(window)


def test_layout_round_trips_through_a_dict():
    layout = InputLayout.for_model(3, 24, 5, 4096)
    assert InputLayout.from_dict(layout.to_dict()) == layout
    with_levels = InputLayout.for_model(1, 24, 5, 4096, levels=(80.0,))
    assert InputLayout.from_dict(with_levels.to_dict()) == with_levels
    assert InputLayout.from_dict({**with_levels.to_dict(), "levels": []}).levels == ()
    assert layout.block == 32 and layout.window_slots == 128
    with pytest.raises(PrivacyError, match="invalid input layout"):
        InputLayout.from_dict({"channels": 1})
    for levels in ([float("nan")], [70.0, 80.0]):  # not finite; as many levels as channels
        with pytest.raises(PrivacyError, match="levels must be finite, fewer than channels"):
            InputLayout.from_dict({**with_levels.to_dict(), "levels": levels})


def test_the_device_export_refuses_an_he_friendly_model(small_model):
    from tailorml.deploy.int8.quantize import quantize
    from tailorml.errors import DeployError

    with pytest.raises(DeployError, match=r"he_friendly model .* is for encrypted inference"):
        quantize(small_model, glucose_windows(4))


def test_an_ensemble_folds_into_one_network_the_ckks_plan_runs():
    from tailorml.models.he_cnn import fold_ensemble

    members = [he_model(activation="relu_poly", width=3, seed=s) for s in (0, 1, 2)]
    windows = glucose_windows(20)
    folded = fold_ensemble(members)
    assert folded.spec.conv_channels == [9] and multiplicative_depth(folded.spec) == 3
    mean = np.mean([torch_logits(m, windows) for m in members], axis=0)
    # exact algebra; the folded weights (w / 3) are stored in float32, hence 1e-6
    np.testing.assert_allclose(torch_logits(folded, windows), mean, atol=1e-6)
    np.testing.assert_allclose(plain_logits(compile_plan(folded), windows), mean, atol=1e-6)
    with pytest.raises(ValueError, match="hidden = 0"):
        fold_ensemble([he_model(hidden=4)])
    with pytest.raises(ValueError, match="normalisation"):
        other = he_model(activation="relu_poly", width=3, seed=3)
        other.normalize.mean += 1.0
        fold_ensemble([members[0], other])
