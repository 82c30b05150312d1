"""The Python reference of on-device learning, piece by piece, against hand-computed values:
the PRNG, the class-balanced reservoir, the float32 arithmetic of the head, one SGD step,
the paired bound of the gates, the settings and the memory layout."""

import math

import numpy as np
import pytest

from tailorml.deploy.learner.float_head import (
    F32,
    FloatHead,
    class_weights,
    exp_nonpositive,
    int16_logits,
    softmax,
    train_head,
)
from tailorml.deploy.learner.ondevice import (
    N_STRATA,
    LearnerSettings,
    memory_layout,
    paired_bound,
    status_words,
)
from tailorml.deploy.learner.reservoir import ClassReservoir, XorShift32
from tailorml.errors import DeployError


def test_xorshift32_is_marsaglias_sequence():
    # by hand from seed 1: x ^= x << 13 -> 8193; x ^= x >> 17 -> 8193; x ^= x << 5 -> 270369
    rng = XorShift32(1)
    assert [rng.next() for _ in range(3)] == [270369, 67634689, 2647435461]
    assert XorShift32(1).below(3) == 270369 % 3 == 0
    with pytest.raises(ValueError, match="seed"):
        XorShift32(0)


def test_reservoir_keeps_exactly_capacity_per_class_first_in_order_then_by_draws():
    reservoir = ClassReservoir(2, 2, 1, XorShift32(1))
    slots = [reservoir.add(0, np.array([value])) for value in (10, 11, 12, 13, 14)]
    # the first two fill slots 0 and 1; then slot = rand() % (n + 1) for n = 2, 3, 4:
    # 270369 % 3 = 0, 67634689 % 4 = 1, 2647435461 % 5 = 1 (each < 2: kept)
    assert slots == [0, 1, 0, 1, 1]
    assert reservoir.codes[0, :, 0].tolist() == [12, 14]
    assert reservoir.add(1, np.array([20])) == 0  # another class: its own slots, no draw
    assert reservoir.filled().tolist() == [2, 1]
    assert reservoir.seen.tolist() == [5, 1]
    codes, labels = reservoir.samples()
    assert codes[:, 0].tolist() == [12, 14, 20] and labels.tolist() == [0, 0, 1]


def test_recency_bounds_the_draw_so_new_windows_keep_getting_in():
    # capacity 2, recency 2: memory 4, so from n = 3 on the draw is rand() % 4
    reservoir = ClassReservoir(1, 2, 1, XorShift32(1), recency=2)
    slots = [reservoir.add(0, np.array([value])) for value in range(6)]
    rng = XorShift32(1)
    expected = [0, 1, rng.next() % 3, rng.next() % 4, rng.next() % 4, rng.next() % 4]
    assert slots == [s if s < 2 else -1 for s in expected]


def test_exp_matches_numpy_to_float32_precision():
    x = np.linspace(-80, 0, 20001, dtype=np.float32)
    assert exp_nonpositive(np.float32([0.0]))[0] == 1.0
    ours, exact = exp_nonpositive(x).astype(np.float64), np.exp(x.astype(np.float64))
    assert np.max(np.abs(ours / exact - 1)) < 4e-7
    assert exp_nonpositive(np.float32([-81.0]))[0] == 0.0


def test_int16_logits_round_half_away_from_zero_and_saturate():
    inverse = F32(1.0)
    values = np.float32([0.5, -0.5, 1.49, -2.5, 40000.0, -40000.0, np.nan])
    assert int16_logits(values, inverse).tolist() == [1, -1, 1, -3, 32767, -32768, 0]


def test_class_weights_are_balanced_over_present_classes():
    # 6 windows, 2 classes present: 6 / (2 x 4) and 6 / (2 x 2)
    assert class_weights(np.array([4, 2, 0])).tolist() == [0.75, 1.5, 0.0]


def test_one_sgd_step_on_a_two_sample_buffer_is_the_hand_computed_step():
    anchor = FloatHead(
        np.float32([[0.5, -1.0], [0.25, 0.75], [-0.5, 0.0]]), np.float32([0.1, -0.2, 0.0])
    )
    features = np.int16([[2, 1], [0, 4]])  # real = feature x 0.5
    labels = np.array([1, 0])
    lr, offset = 0.1, 0.4
    trained = train_head(
        anchor, features, labels, F32(0.5), XorShift32(7), epochs=1, batch_size=2,
        learning_rate=lr, l2_pull=0.3, train_bias=True, alert=1, offset=F32(offset),
    )  # fmt: skip
    # by hand in float64: z = W x + b, the alert logit lowered by the offset, softmax,
    # g = class weight (6 / ... = 1 for one window per class) x (p - onehot), and
    # w <- w - lr (mean g x + l2 (w - w0)) with w = w0 on the first step
    x = features * 0.5
    z = x @ anchor.weight.T.astype(np.float64) + anchor.bias
    z[:, 1] -= offset
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    g = p - np.eye(3)[labels]
    expected_w = anchor.weight - lr * (g.T @ x) / 2
    expected_b = anchor.bias - lr * g.mean(axis=0)
    assert np.allclose(trained.weight, expected_w, atol=1e-6)
    assert np.allclose(trained.bias, expected_b, atol=1e-6)
    assert softmax(np.float32([[0.0, 0.0]])).tolist() == [[0.5, 0.5]]


def test_paired_bound_passes_no_loss_and_refuses_losses_beyond_the_margin():
    settings = LearnerSettings()  # z = 1.645, margin 0.05
    assert paired_bound(20, 0, 0, 0.05, settings) == (0.0, True)
    assert paired_bound(20, 3, 0, 0.05, settings)[1]  # only gains
    # one loss in 20: mean -0.05, sd sqrt(0.05 - 0.0025), bound -0.05 - 1.645 x 0.0487
    bound, passed = paired_bound(20, 0, 1, 0.05, settings)
    assert bound == pytest.approx(-0.05 - 1.6449 * math.sqrt(0.0475 / 20), abs=1e-4)
    assert not passed
    # many gains outweigh one loss: bound 0.4 - 1.645 sqrt((0.5 - 0.16) / 20) = +0.186
    bound, passed = paired_bound(20, 9, 1, 0.05, settings)
    assert bound == pytest.approx(0.4 - 1.6449 * math.sqrt(0.34 / 20), abs=1e-4)
    assert passed


def test_settings_refuse_nonsense_by_name():
    with pytest.raises(DeployError, match="held_out_every"):
        LearnerSettings(held_out_every=1)
    with pytest.raises(DeployError, match="train_per_stratum"):
        LearnerSettings(train_per_stratum=0)
    with pytest.raises(DeployError, match="confidence"):
        LearnerSettings(confidence=0.4)


def test_memory_layout_of_the_defaults_is_the_stated_budget():
    settings = LearnerSettings()
    layout = memory_layout(settings, 32, 3, 24, 6, 24)
    # 4 strata x 48 slots x 32 int8 features, twice (training and held back)
    assert layout.parts["training reservoir (int8 features)"] == 4 * 48 * 32
    assert layout.parts["held-back reservoir (int8 features)"] == 4 * 48 * 32
    assert layout.parts["weight slots (2 x float32 head)"] == 2 * 4 * 3 * 33
    assert layout.parts["update status"] == 4 * status_words() == 4 * (22 + 2 * N_STRATA)
    assert layout.ram % 4 == 0 and layout.ram <= settings.budget_bytes == 16384
    assert layout.flash == 4 * 3 * 33 + 24 * 32
