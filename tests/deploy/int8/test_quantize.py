"""int8 quantization of an alert model and its integer-only reference."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from tailorml.deploy.int8.quantize import decide_fixed_point, decision_rule, quantize
from tailorml.errors import DeployError
from tailorml.policy import AlertPolicy


def float_logits(model, x):
    with torch.no_grad():
        return model(torch.as_tensor(x)).double().numpy()


@pytest.fixture(scope="module")
def quantized(trained):
    return quantize(trained.model, trained.train)


def test_weights_are_per_channel_int8_and_biases_int32(quantized, trained):
    conv_outputs = [16, 32, 32, 32, 3]  # the default architecture's layers
    assert [layer.weight.shape[0] for layer in quantized.layers] == conv_outputs
    for layer in quantized.layers:
        assert layer.weight.dtype == np.int8
        assert np.abs(layer.weight.astype(int)).max() == 127  # symmetric: the peak hits 127
        assert len(layer.multiplier) == len(layer.shift) == layer.weight.shape[0]
        assert np.abs(layer.bias).max() < 2**31
    # a fused ReLU clamps at the zero point, which stands for 0 (activations start at -128)
    hidden = quantized.layers[:-1]
    assert all(layer.output_min == layer.output_zero_point == -128 for layer in hidden)
    assert quantized.layers[-1].output_bits == 16
    assert [layer.pool for layer in quantized.layers] == [2, 2, 1, 1, 1]
    assert quantized.n_macs() == 24 * 16 * 5 + 12 * 32 * 16 * 5 + 6 * 32 * 32 * 5 + 192 * 32 + 96


def test_int8_reference_tracks_the_float_model(quantized, trained):
    expected = float_logits(trained.model, trained.test)
    logits = quantized.logits(trained.test)
    assert logits.dtype == np.int16
    error = np.abs(logits * quantized.logit_scale - expected)
    assert error.mean() < 0.05 * np.abs(expected).mean()
    probabilities = torch.softmax(torch.as_tensor(expected), dim=1).numpy()
    agreement = np.mean(trained.model.policy.decide(probabilities) == quantized.decide(logits))
    assert agreement >= 0.97


def test_fixed_point_decision_is_the_policy_on_the_dequantized_logits(quantized, trained):
    logits = quantized.logits(trained.test)
    from_floats = trained.model.policy.decide(quantized.probabilities(logits))
    assert np.mean(from_floats == quantized.decide(logits)) >= 0.999


@pytest.mark.parametrize(
    ("hypo_logit", "expected"),
    # threshold 0.5, logit step 0.01: P(hypo) = e^d / (2 + e^d) >= 0.5 iff d >= ln 2 = 0.693
    [(10, 0), (69, 0), (70, 1), (200, 1)],
)
def test_decision_threshold_in_fixed_point_by_hand(hypo_logit, expected):
    policy = AlertPolicy(threshold=0.5)
    rule = decision_rule(policy, logit_scale=0.01)
    logits = np.array([[0, hypo_logit, 0]])
    assert decide_fixed_point(rule, logits).tolist() == [expected]


def test_below_threshold_the_likelier_other_class_wins_and_ties_go_first():
    rule = decision_rule(AlertPolicy(threshold=0.9), logit_scale=0.01)
    logits = np.array([[5, 0, 9], [9, 0, 5], [7, 0, 7], [0, 500, 0]])
    assert decide_fixed_point(rule, logits).tolist() == [2, 0, 0, 1]


def test_unsupported_layers_are_refused_by_name(trained):
    model = copy.deepcopy(trained.model)
    model.features.insert(1, nn.BatchNorm1d(16))
    with pytest.raises(DeployError, match=r"features\.1 \(BatchNorm1d\)"):
        quantize(model, trained.train)
    model = copy.deepcopy(trained.model)
    model.features[0].stride = (2,)
    with pytest.raises(DeployError, match=r"features\.0"):
        quantize(model, trained.train)


def test_calibration_must_be_real_windows(trained):
    with pytest.raises(DeployError, match="at least one window"):
        quantize(trained.model, trained.train[:0])
    bad = trained.train[:10].copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(DeployError, match="non-finite"):
        quantize(trained.model, bad)


def test_a_dead_channel_keeps_its_bias_in_int32(trained):
    """A channel whose weights decayed to ~1e-17 must not blow its int32 bias up."""
    model = copy.deepcopy(trained.model)
    with torch.no_grad():
        model.head[1].weight[0] = 1e-17
    quantized = quantize(model, trained.train)
    assert np.abs(quantized.layers[3].bias).max() < 2**31
    assert quantized.layers[3].weight[0].tolist() == [0] * 192


def test_no_windows_give_empty_logits_and_features(quantized, trained):
    """A batch of zero windows is empty, not an error: `deploy simulate` asks for the
    features of the dangerous traces the factory model alerts on, and it may alert on none
    (numpy cannot infer a reshape's -1 from zero rows)."""
    none = trained.test[:0]
    assert quantized.logits(none).shape == (0, len(quantized.policy.classes))
    assert quantized.features(none).shape == (0, quantized.layers[-1].weight.shape[1])
    assert quantized.decide(quantized.logits(none)).shape == (0,)
