"""Sensor faults on hand-made traces, the iCGM envelope and the robustness drop on toy
tables: every expected number is computed by hand in the comment beside it."""

import numpy as np
import pandas as pd
import pytest

from tailorml.shift import sensor
from tailorml.shift.sensor import Trace
from tailorml.shift.summary import paired_drops, summarize_drops

DAY = 24 * 60


def trace(cgm, minutes=None, start_hour=0.0, sample_minutes=5) -> Trace:
    cgm = np.asarray(cgm, dtype=float)
    minutes = np.arange(len(cgm)) * sample_minutes if minutes is None else np.asarray(minutes)
    return Trace(cgm=cgm, minutes=minutes, hour=(start_hour + minutes / 60.0) % 24)


def test_g6_gain_and_offset_drift_follow_the_polynomials():
    # constant 100 mg/dL at days 0, 5, 10; gain 1 + 0.006 d - 0.0004 d^2, offset -0.6 d:
    # day 0: 100; day 5: 1.02 * 100 - 3 = 99; day 10: 1.02 * 100 - 6 = 96
    t = trace([100.0, 100.0, 100.0], minutes=[0, 5 * DAY, 10 * DAY])
    out = sensor.g6_error(
        t,
        np.random.default_rng(0),
        gain=(0.0, 0.006, -0.0004),
        offset=(0.0, -0.6, 0.0),
        ar=(1.2, -0.35, 0.0),
    )
    assert out == pytest.approx([100.0, 99.0, 96.0])


def test_ar2_noise_follows_its_recursion():
    rng = np.random.default_rng(3)
    w = np.random.default_rng(3).normal(0.0, 2.0, 4)
    v = sensor.ar2_noise(4, 1.2, -0.35, 2.0, rng)
    expected = [w[0], 1.2 * w[0] + w[1]]
    expected.append(1.2 * expected[1] - 0.35 * expected[0] + w[2])
    expected.append(1.2 * expected[2] - 0.35 * expected[1] + w[3])
    assert v == pytest.approx(expected)


def test_calibration_bias_scales_and_stays_in_the_sensor_range():
    out = sensor.calibration_bias(0.15)(trace([100.0, 380.0, np.nan]), np.random.default_rng(0))
    assert out[0] == pytest.approx(115.0)
    assert out[1] == 400.0  # 437 is above the G6's highest reading
    assert np.isnan(out[2])


def test_compression_lows_hit_three_percent_of_night_readings_only():
    # two days from midnight on a 5-min grid: night is 00:00-07:00 (84 readings) and
    # 23:00-24:00 (12) each day -> 192 night readings; 3 % -> round(5.76) = 6 readings
    t = trace(np.full(2 * 288, 150.0))
    out = sensor.compression_lows()(t, np.random.default_rng(1))
    changed = out != t.cgm
    night = sensor.is_night(t.hour)
    assert changed.sum() == 6
    assert not (changed & ~night).any()
    drop = t.cgm[changed] - out[changed]
    assert ((drop >= 15.0) & (drop <= 60.0)).all()  # half of 30 .. full 60 mg/dL


def test_warmup_bias_fades_linearly_over_the_first_day():
    # no noise: -10 % at insertion, -5 % after 12 h, nothing from 24 h on
    t = trace([100.0, 100.0, 100.0], minutes=[0, 12 * 60, 30 * 60])
    out = sensor.warmup_error(noise=0.0)(t, np.random.default_rng(0))
    assert out == pytest.approx([90.0, 95.0, 100.0])


def test_dropouts_only_remove_readings():
    t = trace(np.full(288, 120.0))
    assert np.array_equal(sensor.dropouts(per_day=0.0)(t, np.random.default_rng(0)), t.cgm)
    out = sensor.dropouts(per_day=20.0)(t, np.random.default_rng(0))
    assert np.isnan(out).any()
    assert (out[~np.isnan(out)] == 120.0).all()


def test_icgm_envelope_on_a_hand_example():
    reference = np.array([60.0, 60.0, 60.0, 60.0])
    reading = np.array([60.0, 70.0, 80.0, 100.0])  # errors 0, 10, 20, 40 mg/dL
    rows = {row["criterion"]: row for row in sensor.icgm_envelope(reading, reference)}
    assert rows["below 70: within 15 mg/dL"]["fraction"] == 0.5
    assert rows["below 70: within 15 mg/dL"]["met"] is False
    assert rows["below 70: within 40 mg/dL"]["fraction"] == 1.0
    assert rows["70-180: within 15 %"]["met"] is None  # no reference in that range
    assert rows["no reading across 70/180"]["met"] is True
    crossed = {r["criterion"]: r for r in sensor.icgm_envelope(np.array([200.0]), np.array([60.0]))}
    assert crossed["no reading across 70/180"]["met"] is False


def test_robustness_drop_is_paired_and_skips_undefined_metrics():
    rows = []
    for shift, values in (("none", [1.0, 1.0, 0.5]), ("fault", [0.5, 1.0, np.nan])):
        for patient, value in zip("abc", values, strict=True):
            rows.append(
                {
                    "model": "m",
                    "shift": shift,
                    "patient_id": patient,
                    "group": "g",
                    "hypo_sensitivity": value,
                }
            )
    drops = paired_drops(pd.DataFrame(rows), {"fault": "none"}, metrics=("hypo_sensitivity",))
    assert drops["hypo_sensitivity_drop"].tolist()[:2] == [-0.5, 0.0]
    summary = summarize_drops(drops, metrics=("hypo_sensitivity",)).iloc[0]
    # c has no value under the fault: 2 pairs, mean drop (-0.5 + 0) / 2
    assert summary["individuals"] == 2
    assert summary["drop_mean"] == pytest.approx(-0.25)
    assert summary["worst_individual"] == "a" and summary["worse"] == 1


def test_late_wear_is_the_same_error_model_seven_days_on():
    # day 0 of the trace is day 7 of wear: gain 1 + 0.042 - 0.0196, offset -4.2 (no noise)
    t = trace([100.0], minutes=[0])
    out = sensor.g6_error(
        t,
        np.random.default_rng(0),
        gain=(0.0, 0.006, -0.0004),
        offset=(0.0, -0.6, 0.0),
        ar=(1.2, -0.35, 0.0),
        wear_offset_days=7.0,
    )
    assert out[0] == pytest.approx(1.0224 * 100 - 4.2)
