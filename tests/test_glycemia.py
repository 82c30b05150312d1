"""Consensus CGM metrics and the AGP against values computed by hand on small series."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from conftest import START, cohort_frame
from tailorml.data.glycemia import (
    agp_profile,
    glycemia_metrics,
    glycemia_table,
    meets_target,
    pooled_glycemia,
)

NAN = float("nan")
# 10 slots on a 5-min grid, one missing: every range boundary is touched once
SERIES = [50.0, 60.0, 70.0, 100.0, 180.0, 181.0, 250.0, 251.0, NAN, 100.0]


def _times(n: int, minutes: int = 5) -> pd.DatetimeIndex:
    return pd.date_range(START, periods=n, freq=f"{minutes}min")


def test_metrics_of_a_hand_made_series():
    metrics = glycemia_metrics(_times(10), SERIES, 5)
    # present: 50 60 70 100 180 181 250 251 100 -> sum 1242, mean 138
    assert metrics["readings"] == 9
    assert metrics["mean_mgdl"] == pytest.approx(138.0)
    assert metrics["gmi_percent"] == pytest.approx(3.31 + 0.02392 * 138)  # 6.61096
    # squared deviations from 138 sum to 50266; sample variance 50266 / 8
    assert metrics["sd_mgdl"] == pytest.approx(math.sqrt(50266 / 8))
    assert metrics["cv"] == pytest.approx(math.sqrt(50266 / 8) / 138)
    assert metrics["cv_above_36"] is True  # 0.574
    assert metrics["time_below_54"] == pytest.approx(1 / 9)  # 50
    assert metrics["time_below_70"] == pytest.approx(2 / 9)  # 50, 60 (70 is in range)
    assert metrics["time_in_range"] == pytest.approx(4 / 9)  # 70, 100, 180, 100
    assert metrics["time_above_180"] == pytest.approx(3 / 9)  # 181, 250, 251
    assert metrics["time_above_250"] == pytest.approx(1 / 9)  # 251 (250 is not above)
    assert metrics["data_sufficiency"] == pytest.approx(0.9)
    assert metrics["days"] == pytest.approx(50 / 1440)
    assert metrics["sufficient_data"] is False  # far from 14 days


def test_known_mean_and_sd():
    # 100 and 140 alternating: mean 120, sample SD of n = 4: sqrt(4 * 400 / 3)
    metrics = glycemia_metrics(_times(4), [100.0, 140.0, 100.0, 140.0], 5)
    assert metrics["mean_mgdl"] == 120.0
    assert metrics["sd_mgdl"] == pytest.approx(math.sqrt(1600 / 3))
    assert metrics["gmi_percent"] == pytest.approx(6.1804)
    assert metrics["time_in_range"] == 1.0 and metrics["time_below_70"] == 0.0


def test_sufficiency_is_counted_on_the_grid_and_judged_by_the_consensus():
    slots = 14 * 288  # exactly 14 days of 5-min slots
    values = np.full(slots, 120.0)
    values[: slots - 2823] = np.nan  # 2823 / 4032 = 70.01 % present: just sufficient
    metrics = glycemia_metrics(_times(slots), values, 5)
    assert metrics["days"] == pytest.approx(14.0)
    assert metrics["data_sufficiency"] == pytest.approx(2823 / 4032)
    assert metrics["sufficient_data"] is True
    values[slots - 2823] = np.nan  # one more missing reading: 69.99 %
    assert glycemia_metrics(_times(slots), values, 5)["sufficient_data"] is False
    short = glycemia_metrics(_times(slots - 1), np.full(slots - 1, 120.0), 5)
    assert short["data_sufficiency"] == 1.0 and short["sufficient_data"] is False
    # absent rows count as missing too: 0, 5, 10 and 25 min span 6 slots
    gappy = pd.DatetimeIndex([START + pd.Timedelta(minutes=m) for m in (0, 5, 10, 25)])
    assert glycemia_metrics(gappy, [100.0] * 4, 5)["data_sufficiency"] == pytest.approx(4 / 6)


def test_no_readings_give_no_metric_and_json_null():
    metrics = glycemia_metrics(_times(3), [NAN, NAN, NAN], 5)
    assert metrics["readings"] == 0 and metrics["data_sufficiency"] == 0.0
    for key in ("mean_mgdl", "sd_mgdl", "gmi_percent", "cv", "time_in_range", "time_below_54"):
        assert metrics[key] is None, key
    assert "NaN" not in json.dumps(metrics) and "Infinity" not in json.dumps(metrics)
    # one reading has a mean but no SD, so no CV
    single = glycemia_metrics(_times(3), [NAN, 90.0, NAN], 5)
    assert single["mean_mgdl"] == 90.0 and single["sd_mgdl"] is None and single["cv"] is None
    assert meets_target("cv", single["cv"]) is None


def test_table_and_pooled_cohort():
    frame = cohort_frame({"a": SERIES, "b": [NAN] * 4, "c": [200.0, 300.0]}, sample_minutes=5)
    table = glycemia_table(frame, 5)
    assert list(table["patient_id"]) == ["a", "b", "c"]
    assert table.loc[1, "readings"] == 0 and pd.isna(table.loc[1, "mean_mgdl"])
    assert table.loc[2, "mean_mgdl"] == 250.0
    pooled = pooled_glycemia(frame, 5)
    # 9 + 0 + 2 readings, 10 + 4 + 2 slots; each reading weighs the same
    assert pooled["readings"] == 11 and pooled["people"] == 3
    assert pooled["data_sufficiency"] == pytest.approx(11 / 16)
    assert pooled["mean_mgdl"] == pytest.approx((1242 + 500) / 11)
    assert pooled["time_above_250"] == pytest.approx(2 / 11)  # 251 and 300
    assert pooled["days"] == pytest.approx(16 * 5 / 1440)


def test_targets():
    assert meets_target("time_in_range", 0.71) is True
    assert meets_target("time_in_range", 0.70) is False  # "> 70 %"
    assert meets_target("time_below_54", 0.009) is True
    assert meets_target("cv", 0.36) is True  # "<= 36 %"
    assert meets_target("mean_mgdl", 120.0) is None  # no consensus target
    assert meets_target("days", 13.9) is False and meets_target("data_sufficiency", 0.7) is True


def _two_days() -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Every 30 min for 2 days: hour h reads 100 + 10h (:00) and 102 + 10h (:30) on day 1,
    20 mg/dL more on day 2."""
    times = _times(96, minutes=30)
    hour = times.hour.to_numpy()
    values = 100.0 + 10 * hour + 2 * (times.minute.to_numpy() == 30) + 20 * (times.day == 7)
    return times, values


def test_agp_percentiles_of_a_two_day_series():
    times, values = _two_days()
    profile = agp_profile(times, values, step_minutes=60, window_minutes=60, min_readings=4)
    assert len(profile) == 24 and (profile["readings"] == 4).all()
    assert list(profile["minute"][:2]) == [30.0, 90.0]
    # hour h holds 100, 102, 120, 122 (+10h); linear interpolation between order statistics
    hours = np.arange(24)
    assert profile["p50"].to_numpy() == pytest.approx(111.0 + 10 * hours)  # (102 + 120) / 2
    assert profile["p25"].to_numpy() == pytest.approx(101.5 + 10 * hours)  # rank 0.75
    assert profile["p75"].to_numpy() == pytest.approx(120.5 + 10 * hours)  # rank 2.25
    assert profile["p5"].to_numpy() == pytest.approx(100.3 + 10 * hours)  # rank 0.15
    assert profile["p95"].to_numpy() == pytest.approx(121.7 + 10 * hours)  # rank 2.85


def test_agp_leaves_missing_readings_out_and_gaps_where_too_few():
    times, values = _two_days()
    values[0] = np.nan  # day 1, 00:00
    profile = agp_profile(times, values, step_minutes=60, window_minutes=60, min_readings=4)
    assert profile.loc[0, "readings"] == 3 and profile.loc[0, ["p5", "p50"]].isna().all()
    kept = agp_profile(times, values, step_minutes=60, window_minutes=60, min_readings=3)
    assert kept.loc[0, "p50"] == 120.0  # median of 102, 120, 122


def test_agp_smoothing_window_wraps_round_midnight():
    times, values = _two_days()
    profile = agp_profile(times, values, min_readings=4)  # 15-min steps, 60-min window
    assert len(profile) == 96
    first = profile.iloc[0]  # centre 00:07:30, window 23:37:30 - 00:37:30
    # 23:30 is outside, 00:00 and 00:30 inside: 100, 102, 120, 122 again
    assert first["minute"] == 7.5 and first["readings"] == 4
    last = profile.iloc[-1]  # centre 23:52:30, window 23:22:30 - 00:22:30 -> 23:30 and 00:00
    assert last["readings"] == 4
    assert last["p50"] == pytest.approx(np.median([332.0, 352.0, 100.0, 120.0]))


def test_describe_prints_the_consensus_metrics_and_no_nan(tmp_path):
    from typer.testing import CliRunner

    from tailorml.cli import app

    path = tmp_path / "c.csv"
    cohort_frame({"p1": SERIES * 3, "p2": [NAN] * 30}, sample_minutes=5).to_csv(path, index=False)
    out = tmp_path / "describe.csv"
    result = CliRunner().invoke(app, ["cohort", "describe", str(path), "--csv", str(out)])
    assert result.exit_code == 0, result.output
    assert "GMI%" in result.output and "TIR" in result.output and "Battelino" in result.output
    assert "nan" not in result.output.lower() and "inf" not in result.output.lower()
    p1 = next(line for line in result.output.splitlines() if line.startswith("p1"))
    p2 = next(line for line in result.output.splitlines() if line.startswith("p2"))
    # p1: 27 of 30 readings, mean 138, GMI 6.6, CV sqrt(3 * 50266 / 26) / 138 = 55 % (!)
    assert p1.split()[1:7] == ["0.1!", "90", "138", "6.6", "55.2!", "11.1!"]
    assert p2.split()[1:3] == ["0.1!", "0!"] and p2.split()[3:11] == ["–"] * 8
    table = pd.read_csv(out)
    assert table.loc[1, "readings"] == 0 and pd.isna(table.loc[1, "mean_mgdl"])
    assert table.loc[0, "gmi_percent"] == pytest.approx(3.31 + 0.02392 * 138)


def _summary_of(frame: pd.DataFrame, patient: str, tmp_path, monkeypatch, synthetic=True):
    from tailorml.evaluate import cgm_summary as module

    drawn = []
    monkeypatch.setattr(module.plots, "agp_figure", lambda panels: drawn.append(panels) or b"")
    metrics = {"cohort": {"sample_minutes": 5}, "synthetic": synthetic}
    return module.cgm_summary(tmp_path, frame, patient, metrics), drawn[0]


def test_report_section_formats_metrics_and_labels_the_agp(tmp_path, monkeypatch):
    frame = cohort_frame({"a": SERIES, "b": [NAN] * 4}, sample_minutes=5)
    summary, panels = _summary_of(frame, "a", tmp_path, monkeypatch)
    rows = dict(summary["rows"])
    texts = [text for text, _ in rows["a"]]
    # days, present, mean, GMI, CV, <54, <70, 70-180, >180, >250
    assert texts == ["0.0", "90%", "138", "6.6", "57.4%", "11.1%", "22.2%", "44%", "33%", "11.1%"]
    assert [miss for _, miss in rows["a"]][4:] == [True] * 6  # every target missed
    assert rows["b"][2:] == [("–", False)] * 8  # no reading: no metric, not "nan"
    assert summary["people"] == 2 and summary["agp_patient"] == "a"
    # the pooled row (9 of 14 readings) has person-days, not judged against the 14-day target
    assert summary["pooled"][0] == ("0.0", False) and summary["pooled"][1] == ("64%", True)
    assert [title for _, title in panels] == [
        "all 2 people pooled (synthetic data)",
        "a (synthetic data)",
    ]
    # a traced person without readings gets no profile of their own
    summary, panels = _summary_of(frame, "b", tmp_path, monkeypatch, synthetic=False)
    assert summary["agp_patient"] is None and [t for _, t in panels] == ["all 2 people pooled"]


def test_agp_figure_draws_cohort_and_person():
    from tailorml.evaluate.plots import agp_figure

    times, values = _two_days()
    profile = agp_profile(times, values, min_readings=4)
    gappy = agp_profile(times[:10], values[:10])  # mostly empty bins: gaps, no crash
    png = agp_figure([(profile, "cohort (synthetic data)"), (gappy, "p1 (synthetic data)")])
    assert png.startswith(b"\x89PNG")
