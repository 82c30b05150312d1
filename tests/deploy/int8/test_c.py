"""The generated C: pure generation, what the header promises, and the host build computing
the integer reference's logits bit for bit."""

import ctypes
import re

import numpy as np
import pytest

from tailorml.deploy.int8.c import arena_bytes, generate_c, generate_header, save_c
from tailorml.deploy.int8.quantize import quantize
from tailorml.deploy.target.host import HostModel
from tailorml.errors import DeployError


@pytest.fixture(scope="module")
def quantized(trained):
    return quantize(trained.model, trained.train)


def test_generation_is_pure_and_the_source_has_no_float_and_no_malloc(quantized, tmp_path):
    source = generate_c(quantized)
    assert source == generate_c(quantized)
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.S)  # comments may say "floating point"
    for forbidden in ("float", "double", "malloc", "free("):
        assert forbidden not in code
    assert "static const uint32_t tm_l0_weight" in source  # weights in flash, as words
    assert "__asm" not in code and "asm(" not in code  # ACLE intrinsics, no inline assembly
    written = save_c(quantized, tmp_path / "out")
    assert sorted(p.name for p in written) == ["tailorml_model.c", "tailorml_model.h"]
    assert (tmp_path / "out" / "tailorml_model.c").read_text() == source


def test_the_header_carries_the_models_policy(quantized):
    header = generate_header(quantized)
    assert "#define TAILORML_WINDOW 24" in header
    assert "#define TAILORML_SAMPLE_MINUTES 5" in header
    assert "#define TAILORML_CLASS_HYPO 1" in header
    assert "#define TAILORML_ALERT_CLASS 1" in header
    assert "#define TAILORML_THRESHOLD_PPM 700000" in header  # the policy's 0.7
    assert "int32_t tailorml_predict(" in header


def test_weights_are_stored_in_pairs_of_rows_as_the_kernels_walk_them():
    from tailorml.deploy.int8.c import _paired, _words, pair_stride

    weights = np.array(
        [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12], [-1, -2, -3, -4, -5, -6]], dtype=np.int8
    )
    # per pair: each row's group of four as w0 w2 w1 w3, first row then second; then the
    # rows' last two weights; the odd last row paired with itself; 12 bytes a pair
    assert pair_stride(6) == 12 and pair_stride(3) == 8 and pair_stride(48) == 96
    assert _paired(weights).tolist() == [
        *[1, 3, 2, 4, 7, 9, 8, 10, 5, 6, 11, 12],
        *[-1, -3, -2, -4, -1, -3, -2, -4, -5, -6, -5, -6],
    ]
    # a depth of 3: no group, the tails, zeros to the word
    assert _paired(np.array([[1, 2, 3], [4, 5, 6]], np.int8)).tolist() == [1, 2, 3, 4, 5, 6, 0, 0]
    # four bytes to a word, byte k in bits 8k..8k+7
    words = _words("w", np.array([1, 3, 2, 4, -1, -3, -2, -4], np.int8))
    assert "static const uint32_t w[2] = {\n    0x04020301u, 0xFCFEFDFFu\n};" in words


def test_the_arena_holds_two_of_the_largest_padded_buffers(quantized):
    # inputs (rows + 2 pad) x channels: 28x1, 16x16, 10x32, then 192 and 32 for the linear
    # layers; the largest is 320 int16 values, two slots of it
    assert arena_bytes(quantized) == 2 * 2 * 320


def test_host_c_computes_the_references_logits_bit_for_bit(quantized, trained, tmp_path):
    readings = quantized.readings(trained.test)
    header, source = generate_header(quantized), generate_c(quantized)
    host = HostModel(header, source, 3, tmp_path)
    logits, classes = host.predict(readings)
    expected = quantized.logits(trained.test)
    assert np.array_equal(logits, expected)
    assert np.array_equal(classes, quantized.decide(expected))
    # the features on-device learning trains on: the last layer's 32 inputs, also exact
    assert np.array_equal(host.features(readings, 32), quantized.features(trained.test))


def test_a_model_reading_more_than_cgm_is_refused_with_the_fix(quantized):
    from dataclasses import replace

    other = replace(quantized, policy=replace(quantized.policy, channels=("cgm", "iob")))
    with pytest.raises(DeployError, match=r"channels cgm, iob .*task.channels"):
        generate_c(other)


def test_head_and_decide_entry_points_reproduce_predict(quantized, trained, tmp_path):
    # tailorml_predict = tailorml_features then tailorml_head (what on-device learning
    # calls for the factory head); tailorml_decide is the same rule on given logits
    header, source = generate_header(quantized), generate_c(quantized)
    assert "#define TAILORML_FEATURE_ZERO_POINT" in header
    host = HostModel(header, source, 3, tmp_path)
    windows = trained.test[:40]
    features = host.features(quantized.readings(windows), 32)
    expected = quantized.logits(windows)
    assert np.array_equal(quantized.head_logits(features), expected)
    library, pointer = host._library, ctypes.c_void_p
    for row, want in zip(features, expected, strict=True):
        logits = np.zeros(3, dtype=np.int16)
        decided = library.tailorml_head(row.ctypes.data_as(pointer), logits.ctypes.data_as(pointer))
        assert np.array_equal(logits, want)
        assert decided == quantized.decide(want[None])[0]
        assert library.tailorml_decide(want.ctypes.data_as(pointer)) == decided


def test_odd_lengths_and_odd_widths_compute_the_reference_too(tmp_path):
    """A 23-reading window (pooling drops a row) and odd channel counts (pairs of a channel
    with itself), with random weights: host C equals the integer reference bit for bit."""
    import torch

    from tailorml.models.cnn import CNNSpec, SmallCNN
    from tailorml.policy import AlertPolicy

    torch.manual_seed(0)
    spec = CNNSpec(in_channels=1, length=23, n_classes=3, conv_channels=[5, 7, 9], hidden=11)
    model = SmallCNN(spec, torch.tensor([150.0]), torch.tensor([50.0])).eval()
    model.policy = AlertPolicy(threshold=0.6, window_minutes=115)
    windows = np.random.default_rng(0).uniform(40, 400, (300, 1, 23)).astype(np.float32)
    quantized = quantize(model, windows[:200])
    host = HostModel(generate_header(quantized), generate_c(quantized), 3, tmp_path)
    logits, classes = host.predict(quantized.readings(windows))
    expected = quantized.logits(windows)
    assert np.array_equal(logits, expected)
    assert np.array_equal(classes, quantized.decide(expected))


def test_a_second_build_in_the_same_folder_is_the_one_that_runs(quantized, trained, tmp_path):
    """The loader caches libraries by path: each build is named by its sources."""
    from dataclasses import replace

    from tailorml.deploy.int8.quantize import decision_rule

    stricter = replace(
        quantized,
        decision=decision_rule(quantized.policy.with_threshold(0.99), quantized.logit_scale),
    )
    readings = quantized.readings(trained.test)
    for model in (quantized, stricter):
        host = HostModel(generate_header(model), generate_c(model), 3, tmp_path)
        _, classes = host.predict(readings)
        assert np.array_equal(classes, model.decide(model.logits(trained.test)))
    assert len(list(tmp_path.glob("libtailorml_model-*.so"))) == 2
