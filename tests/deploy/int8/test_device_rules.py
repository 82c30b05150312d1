"""The safe call of the C model, `tailorml_alert`: a dropped reading is no decision (never
a severe low), a low that is happening alarms whatever the model says, readings beyond the
sensor range are clamped — the same on the host build, on an emulated Cortex-M4 and in the
integer reference; and a header edited after export refuses to compile."""

from __future__ import annotations

import numpy as np
import pytest

from tailorml.deploy.int8.c import generate_c, generate_header, model_fingerprint
from tailorml.deploy.int8.device_rules import (
    MISSING,
    STATUS_DECIDED,
    STATUS_NO_DECISION,
    STATUS_URGENT_LOW,
    device_alerts,
)
from tailorml.deploy.int8.quantize import quantize
from tailorml.deploy.target.host import HostModel
from tailorml.deploy.target.mcu import ALERT_HARNESS, Emulator, build_firmware, profile
from tailorml.errors import DeployError

HYPO = 1


@pytest.fixture(scope="module")
def quantized(trained):
    return quantize(trained.model, trained.train)


@pytest.fixture(scope="module")
def host(quantized, tmp_path_factory):
    return HostModel(
        generate_header(quantized), generate_c(quantized), 3, tmp_path_factory.mktemp("host")
    )


def flat(value: int, dropped_at: int | None = None) -> np.ndarray:
    window = np.full((1, 1, 24), value, dtype=np.int16)
    if dropped_at is not None:
        window[0, 0, dropped_at] = MISSING
    return window


def hand_windows() -> np.ndarray:
    """Windows whose status is known by hand (see the test below)."""
    falling = np.linspace(120, 64, 24).round().astype(np.int16)[None, None]
    rising_low = np.linspace(40, 50, 24).round().astype(np.int16)[None, None]
    return np.concatenate(
        [
            flat(100, dropped_at=5),  # 0: a dropped reading at 100 mg/dL: no decision
            flat(300, dropped_at=23),  # 1: the newest reading dropped at 300: no decision
            flat(54, dropped_at=3),  # 2: a gap, but 54 now: urgent
            falling,  # 3: ... 66, 64: below 70 and falling: urgent
            rising_low,  # 4: 50 now, rising: at or below 55: urgent
            flat(69),  # 5: 69 and level: not urgent, the model decides
            flat(100),  # 6: the model decides
        ]
    )


def test_the_status_of_hand_made_windows_in_the_reference_and_the_host_build(quantized, host):
    windows = hand_windows()
    expected_status = [STATUS_NO_DECISION, STATUS_NO_DECISION] + [STATUS_URGENT_LOW] * 3
    expected_status += [STATUS_DECIDED] * 2
    for found in (device_alerts(quantized, windows), host.alert(windows)):
        assert found.status.tolist() == expected_status
        assert found.decided[:5].tolist() == [-1, -1, HYPO, HYPO, HYPO]
        assert found.margin[:5].tolist() == [0] * 5  # the model did not run
        assert not found.logits[:5].any()
    # where the model runs, it is the model: tailorml_predict's logits and class
    decided = windows[5:]
    logits, classes = host.predict(decided)
    alert = host.alert(decided)
    assert np.array_equal(alert.logits, logits) and np.array_equal(alert.decided, classes)
    # the margin is >= 0 exactly when the alert class is decided
    assert np.array_equal(alert.margin >= 0, alert.decided == HYPO)


def test_a_dropped_reading_never_alerts_anywhere_in_the_window(quantized, host):
    # tailorml_predict alone reads the marker as a severe low (the bug this call fixes)
    for level in (100, 180, 300):
        windows = np.concatenate([flat(level, dropped_at=i) for i in range(24)])
        found = host.alert(windows)
        assert (found.status == STATUS_NO_DECISION).all(), level
        assert (found.decided == -1).all()
    _, raw_classes = host.predict(flat(100, dropped_at=23))
    assert raw_classes[0] == HYPO  # what a device calling tailorml_predict got


def test_the_host_build_matches_the_reference_on_test_windows_with_gaps_and_extremes(
    quantized, host, trained
):
    rng = np.random.default_rng(0)
    readings = quantized.readings(trained.test[:600]).copy()
    # a third with one dropped reading, a third with values beyond the sensor's range
    rows = np.arange(len(readings))
    gaps, extremes = rows % 3 == 1, rows % 3 == 2
    readings[gaps, 0, rng.integers(0, 24, gaps.sum())] = MISSING
    readings[extremes, 0, rng.integers(0, 23, extremes.sum())] = rng.choice(
        [-5, 12, 39, 401, 650, 32767], extremes.sum()
    )
    found, expected = host.alert(readings), device_alerts(quantized, readings)
    for name in ("status", "decided", "margin", "logits"):
        assert np.array_equal(getattr(found, name), getattr(expected, name)), name
    assert (found.status[gaps] != STATUS_DECIDED).all()
    # beyond the range is the range itself: 650 reads as 400, 12 as 40
    high, at_limit = flat(200), flat(200)
    high[0, 0, 10], at_limit[0, 0, 10] = 650, 400
    assert np.array_equal(host.alert(high).logits, host.alert(at_limit).logits)


def test_the_emulated_cortex_m4_decides_as_the_host_with_unaligned_access_trapping(
    quantized, host, tmp_path
):
    # built as for a core with CCR.UNALIGN_TRP set, which faults on any unaligned access
    firmware = build_firmware(
        generate_header(quantized),
        generate_c(quantized),
        profile("cortex-m4"),
        tmp_path,
        harness=ALERT_HARNESS,
        strict_alignment=True,
    )
    emulator = Emulator(firmware, 3, trap_unaligned=True)
    windows = hand_windows()
    expected = host.alert(windows)
    for index, window in enumerate(windows):
        status, decided, margin, logits = emulator.alert(window)
        assert (status, decided, margin) == (
            expected.status[index],
            expected.decided[index],
            expected.margin[index],
        ), index
        assert np.array_equal(logits, expected.logits[index])


def test_a_header_edited_after_export_does_not_compile(quantized, tmp_path):
    header, source = generate_header(quantized), generate_c(quantized)
    edited = header.replace("TAILORML_THRESHOLD_PPM 700000", "TAILORML_THRESHOLD_PPM 500000")
    assert edited != header
    with pytest.raises(DeployError, match="TAILORML_THRESHOLD_PPM is not the value"):
        HostModel(edited, source, 3, tmp_path)


def test_every_generated_file_names_the_model_and_the_generator(quantized, trained):
    fingerprint = model_fingerprint(quantized)
    assert len(fingerprint) == 64
    for text in (generate_header(quantized), generate_c(quantized)):
        assert f"model sha256 {fingerprint}" in text and "generated by tailorml 0." in text
    assert f'#define TAILORML_MODEL_SHA256 "{fingerprint}"' in generate_header(quantized)
    other = quantize(trained.model, trained.train[:50])  # other calibration, other model
    assert model_fingerprint(other) != fingerprint


def test_tailorml_alert_is_reentrant_threads_deciding_at_once_agree(quantized, host, trained):
    # ctypes releases the GIL: four threads run tailorml_alert in C at the same time, each
    # with its own work memory; a shared arena would mix their activations
    from concurrent.futures import ThreadPoolExecutor

    readings = quantized.readings(trained.test[:2000])
    batches = [readings[i::4] for i in range(4)]
    alone = [host.alert(batch) for batch in batches]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(host.alert, batches * 3))
    for index, found in enumerate(together):
        expected = alone[index % 4]
        assert np.array_equal(found.logits, expected.logits)
        assert np.array_equal(found.margin, expected.margin)
