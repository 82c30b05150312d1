"""What readers of the reports meet: alerts and events drawn as the metrics count them, the
warnings and the exact commands the pages print. Hand-made inputs, counted by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tailorml.policy import AlertPolicy

T0 = pd.Timestamp("2025-01-06 00:00")


def _minutes(values) -> pd.Series:
    return pd.Series(T0 + pd.to_timedelta(np.asarray(values), unit="min"))


def test_trace_marks_false_alerts_and_events_in_sensor_gaps():
    """Readings every 3 min for 6 h; lows at 120-140 min (predictions before it) and at
    330-350 min, after a sensor gap (no prediction from 270 min on). P(hypo) reaches the
    threshold at 0 min (false: in range, no low ahead) and at 105 min (a low follows); the
    fall from 110 to 60 mg/dL at 120 min is an urgent low, an alert inside the snooze."""
    from tailorml.evaluate.report import _trace

    reading_minutes = np.arange(0, 360, 3)
    cgm = np.full(len(reading_minutes), 110.0)
    cgm[(reading_minutes >= 120) & (reading_minutes <= 140)] = 60.0
    cgm[(reading_minutes >= 330) & (reading_minutes <= 350)] = 55.0
    readings = pd.DataFrame({"time": _minutes(reading_minutes), "cgm": cgm})
    pred_minutes = np.arange(0, 270, 3)
    p_hypo = np.where(np.isin(pred_minutes, [0, 105]), 0.9, 0.1)
    predicted = pd.DataFrame(
        {
            "time": _minutes(pred_minutes),
            "p_in_range": 1 - p_hypo,
            "p_hypo": p_hypo,
            "p_hyper": 0.0,
            "y_true": np.where((pred_minutes >= 90) & (pred_minutes < 141), 1, 0),
            "current_cgm": cgm[: len(pred_minutes)],
            "previous_cgm": np.concatenate(([np.nan], cgm[: len(pred_minutes) - 1])),
        }
    )
    synthetic = {"synthetic": True}
    image, counts = _trace(readings, predicted, AlertPolicy(), "p1", "test period", synthetic)
    assert counts == {"events": 2, "not_evaluable": 1, "alerts": 3, "false_alerts": 1}
    assert image.startswith("data:image/png;base64,")


def test_labels_of_coincident_points_do_not_overlap():
    """Three settings on the same spot (identical results are common) and one nearby: at a
    fixed offset their labels printed over each other."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from tailorml.experiment.report import place_labels

    figure, axis = plt.subplots(figsize=(6, 4))
    points = [(0.8, 0.8), (0.8, 0.8), (0.8, 0.8), (0.81, 0.8), (0.1, 0.0)]
    axis.scatter(*zip(*points, strict=True))
    texts = place_labels(axis, points, ["Baseline", "SW(n_i=12)", "SW(n_i=2)", "TL", "LL"])
    renderer = figure.canvas.get_renderer()
    boxes = [Text.get_window_extent(text, renderer) for text in texts]
    assert len(boxes) == 5
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    plt.close(figure)


def test_certify_report_of_older_results_rebuilds_the_full_command(tmp_path):
    """certify.json written before it kept its command: the report rebuilds it from the
    stored settings, with --model when the folder belongs to another model."""
    import json

    from tailorml.robust.report import render_certify_report

    robust = {
        "eps": 2.0,
        "relative_percent": 5.0,
        "method": "ibp",
        "max_windows": 10,
        "sweep_windows": 4,
        "pgd_steps": 10,
    }
    for folder, model in (("certify-eps2", None), ("certify-eps2-abcdef123456", "other.pt")):
        out = tmp_path / folder
        out.mkdir()
        summary = {
            "synthetic": True,
            "run_dir": str(tmp_path),
            "eps": 2.0,
            "relative_percent": 5.0,
            "method": "ibp",
            "sweep_method": "ibp",
            "model": str(tmp_path / (model or "model.pt")),
            "model_size": {"parameters": 10},
            "individuals": 1,
            "mean": {"clean_acc": 1.0},
            "min": {"clean_acc": 1.0},
        }
        (out / "certify.json").write_text(json.dumps(summary))
        settings = {"robust": robust, "model_sha256": "ab" * 32, "policy": {"threshold": 0.4}}
        (out / "settings.json").write_text(json.dumps(settings))
        pd.DataFrame(
            {
                "individual": ["p1"],
                "group": ["adult"],
                "windows": [10],
                "clean_acc": [1.0],
                "pgd_acc": [1.0],
                "verified_acc": [0.5],
            }
        ).to_csv(out / "robustness.csv", index=False)
        pd.DataFrame(
            {
                "individual": ["p1"] * 2,
                "group": ["adult"] * 2,
                "eps": [0, 2],
                "verified_acc": [1, 0],
            }
        ).to_csv(out / "sweep.csv", index=False)
        html = render_certify_report(out).read_text()
        command = (
            f"tailorml certify --run {tmp_path} --eps 2 --relative 5 --method ibp "
            "--max-windows 10 --sweep-windows 4"
        )
        if model:
            command += f" --model {tmp_path / model}"
        assert f"<pre>{command}</pre>" in html
        assert "P(hypo) ≥ 0.4" in html  # the threshold was missing from the text


def test_a_number_that_rounds_to_zero_shows_no_sign():
    from tailorml.evaluate.report import _number

    assert _number(-0.00001) == "0.000"  # not "-0.000": no loss to read into it
    assert _number(-0.0006) == "-0.001" and _number(-2.5, 1) == "-2.5"
    assert _number(float("nan")) == "–" and _number(7) == "7"
