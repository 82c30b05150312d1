"""The on-device learner's C, built for this machine: what it generates, how it labels the
stream, that it computes what the Python reference computes, and that its gates keep a
harmful update out."""

import numpy as np
import pytest

from tailorml.deploy.int8.quantize import quantize
from tailorml.deploy.learner.c import generate_learner_c, generate_learner_header
from tailorml.deploy.learner.float_head import WEIGHT_TOLERANCE, factory_head
from tailorml.deploy.learner.host import HostLearner
from tailorml.deploy.learner.ondevice import (
    GATE_DATA,
    GATE_NONE,
    GATE_TRACES,
    HYPER,
    HYPO,
    IN_RANGE,
    MISSING,
    NEAR_LOW,
    SLOT_FACTORY,
    Learner,
    LearnerSettings,
    memory_layout,
)
from tailorml.deploy.learner.traces import dangerous_traces
from tailorml.errors import DeployError

PERSON = "adolescent-003"
# three days of a small model's data: no minimum of days, small minimums of windows, every
# 4th labelled window held back; pinned (not the defaults), so tuning them changes no test
SETTINGS = LearnerSettings(
    min_days=0, min_hypo_train=8, min_held=4, held_out_block=1, near_low_mgdl=100
)


@pytest.fixture(scope="module")
def device(trained, tmp_path_factory):
    quantized = quantize(trained.model, trained.train)
    traces = dangerous_traces(quantized)
    host = HostLearner(quantized, SETTINGS, tmp_path_factory.mktemp("learner"), traces)
    cgm = trained.prepared.cohort.of(PERSON)["cgm"].to_numpy()
    readings = np.where(np.isnan(cgm), MISSING, np.rint(np.nan_to_num(cgm))).astype(np.int16)
    return quantized, traces, host, readings


def compression_dips(trained, quantized) -> np.ndarray:
    """Features of the person's in-range windows whose last 3-8 readings drop to 45-65 mg/dL:
    what a sensor pressed during sleep reports while glucose is normal ("lows labelled in
    range" when the readings recover)."""
    windows = trained.prepared.windows
    own = np.flatnonzero(
        (windows.individual == windows.ids.index(PERSON))
        & (windows.y == IN_RANGE)
        & (windows.current_cgm > 100)
    )
    base = windows.x[own[:: max(1, len(own) // 50)][:50]]
    dips = []
    for level in (45, 55, 65):
        for length in (3, 4, 6, 8):
            window = base.copy()
            window[:, 0, -length:] = level
            dips.append(window)
    return quantized.features(np.concatenate(dips)).astype(np.int16)


def test_generated_learner_is_pure_c99_with_the_references_exact_constants(device):
    quantized, traces, _, _ = device
    source = generate_learner_c(quantized, SETTINGS, traces)
    assert source == generate_learner_c(quantized, SETTINGS, traces)
    assert "#pragma STDC FP_CONTRACT OFF" in source
    assert "malloc" not in source and "double" not in source
    assert f"#define TM_N_TRACES {len(traces)}" in source
    factory = factory_head(quantized)
    # the first factory weight, written as a hexadecimal literal, is the float32 itself
    first = source.split("tm_factory = {")[1].split("{")[2].split(",")[0].strip()
    assert float.fromhex(first.rstrip("f")) == float(factory.weight[0, 0])
    assert "tailorml_update_status" in generate_learner_header(quantized, SETTINGS)


def test_the_state_is_the_stated_budget_and_an_over_budget_buffer_is_refused(device):
    quantized, traces, host, _ = device
    layout = memory_layout(SETTINGS, 32, 3, 24, 6, len(traces))
    assert host.state_bytes() == layout.ram <= SETTINGS.budget_bytes
    with pytest.raises(DeployError, match=r"needs \d+ bytes of RAM, over its budget of 8000"):
        generate_learner_c(quantized, LearnerSettings(budget_bytes=8000), traces)


@pytest.mark.parametrize(
    ("end", "future", "stratum"),
    [
        (120, [110, 100, 90, 80, 75, 69], HYPO),  # one reading < 70
        (120, [110, 100, 90, 80, 75, 70], NEAR_LOW),  # 70 is not a low; below 100
        (120, [130, 140, 150, 160, 170, 251], HYPER),
        (120, [110] * 6, IN_RANGE),
        (120, [110, 100, MISSING, 80, 75, 69], None),  # a gap in the future: no label
        (65, [75] * 6, None),  # low now, in range later: never taught as fine
    ],
)
def test_a_window_is_labelled_from_the_next_six_readings(device, end, future, stratum):
    quantized, traces, host, _ = device
    reference = Learner(quantized, SETTINGS, traces)
    host.init()
    stream = [120] * 23 + [end] + future
    decided = []
    for reading in stream:
        decided.append(host.step(reading)[0])
        assert reference.step(reading) == decided[-1]
    window = np.array(stream[:24], dtype=float)[None, None, :]
    assert decided[:23] == [-1] * 23  # no full window yet
    assert decided[23] == quantized.decide(quantized.logits(window))[0]
    expected = [0] * 4
    if stratum is not None:
        expected[stratum] = 1  # the first labelled window is not held back
    status = host.update()
    assert status.gate == GATE_DATA and status.trained == 0
    assert status.train_windows == expected == reference.train.filled().tolist()
    assert status.held_windows == [0] * 4


def test_host_c_and_the_python_reference_agree_through_three_days(device):
    quantized, traces, host, readings = device
    reference = Learner(quantized, SETTINGS, traces)
    host.init()
    classes, _, slots, statuses = host.live(readings, 288)
    assert slots[-1] == SLOT_FACTORY and statuses[-1].active_slot in (0, 1)
    mine = []
    for index, reading in enumerate(readings):
        mine.append(reference.step(int(reading)))
        if (index + 1) % 288 == 0:
            status = reference.update()
            assert status == statuses[index // 288], index
    assert np.array_equal(classes, mine)  # every decision, day by day
    assert [s.gate for s in statuses] == [GATE_DATA, GATE_DATA, GATE_NONE]
    for slot in (0, 1):
        ours, theirs = host.slot(slot).flat(), reference.slots[slot].flat()
        assert np.abs(ours - theirs).max() <= WEIGHT_TOLERANCE * np.abs(theirs).max()
    assert np.array_equal(host.buffer(False), reference.train.codes)
    assert np.array_equal(host.buffer(True), reference.held.codes)


def test_a_harmful_buffer_is_refused_where_the_benign_one_is_accepted(device, trained):
    quantized, traces, host, readings = device
    test_windows = trained.test[:60]
    host.init()
    host.live(readings, 0)  # the person's own three days, self-labelled
    benign = host.update()
    assert benign.accepted and benign.traces_alerted == benign.traces_total == len(traces)
    host.init()
    host.live(readings, 0)
    for features in compression_dips(trained, quantized):  # 600 "lows labelled in range"
        host.add(features, IN_RANGE, False)
    harmful = host.update()
    assert not harmful.accepted and harmful.gate == GATE_TRACES
    assert harmful.traces_alerted < harmful.traces_total
    assert "refused by dangerous traces" in harmful.reason(traces.names)
    assert harmful.caught_candidate < harmful.caught_current  # it stopped seeing lows too
    assert host.active_slot() == SLOT_FACTORY  # the exported model, bit for bit
    assert np.array_equal(host.predict(quantized.readings(test_windows))[0],
                          quantized.logits(test_windows))  # fmt: skip


def test_a_refused_candidate_leaves_the_active_head_bit_for_bit_and_factory_restores(
    device, trained
):
    quantized, _, host, readings = device
    test_windows = quantized.readings(trained.test[:60])
    host.init()
    host.live(readings, 0)
    assert host.update().accepted
    active = host.active_slot()
    assert active in (0, 1)
    weights = host.slot(active).flat().tobytes()
    logits = host.predict(test_windows)[0]
    for features in compression_dips(trained, quantized):
        host.add(features, IN_RANGE, False)
    refused = host.update()
    assert not refused.accepted and refused.trained and refused.gate != GATE_DATA
    assert refused.active_slot == host.active_slot() == active
    assert host.slot(active).flat().tobytes() == weights  # not a bit changed
    assert not np.array_equal(host.slot(1 - active).flat(), host.slot(active).flat())
    assert np.array_equal(host.predict(test_windows)[0], logits)
    host.restore_factory()
    assert host.active_slot() == SLOT_FACTORY
    assert np.array_equal(host.predict(test_windows)[0], quantized.logits(trained.test[:60]))
