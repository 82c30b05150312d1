"""simulate.html: how the device's alerts evolved day by day next to the predefined and the
cloud-personalized model, with every update attempt marked (accepted or refused, and by
which gate), the memory budget and the cost of an update."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from tailorml.deploy.learner.daily import summed
from tailorml.evaluate.plots import to_png
from tailorml.evaluate.report import image_uri, write_html

COLOURS = {"device": "#4c72b0", "predefined": "#8c8c8c", "cloud": "#dd8452"}
LABELS = {
    "device": "device (on-device learning)",
    "predefined": "predefined (int8, factory)",
    "cloud": "cloud-personalized (TL)",
}


def cumulative_early(days: list[dict], name: str, sample_minutes: int) -> list[float]:
    """Early sensitivity over the days so far (from the first day the model is shown)."""
    values, shown = [], []
    for row in days:
        if row.get(name) is not None:
            shown.append(row[name])
        figures = summed(shown, sample_minutes) if shown else None
        values.append(figures["hypo_sensitivity_early"] if figures else float("nan"))
    return values


def _number(value) -> float:
    """A JSON number, its null (a NaN written out) back to NaN."""
    return np.nan if value is None else float(value)


def days_figure(summary: dict) -> bytes:
    days = summary["days"]
    x = np.array([row["day"] for row in days])
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.2), sharex=True)
    test_days = [row["day"] for row in days if "test" in row["parts"]]
    for axis in (top, bottom):
        if test_days:
            axis.axvspan(min(test_days) - 0.5, max(test_days) + 0.5, color="#f2f2f2", zorder=0)
    for name in ("predefined", "cloud", "device"):
        if all(row.get(name) is None for row in days):
            continue
        early = cumulative_early(days, name, summary["policy"]["sample_minutes"])
        false = [
            np.nan if row.get(name) is None else _number(row[name]["false_alerts_per_day"])
            for row in days
        ]
        style = {"color": COLOURS[name], "label": LABELS[name], "marker": "o", "markersize": 3}
        if name == "predefined":  # wide underneath: visible where the device's line equals it
            style |= {"linewidth": 5, "alpha": 0.45, "marker": None}
        top.plot(x, early, **style)
        bottom.plot(x, false, **style)
    top.set_ylabel("early hypo sensitivity\n(cumulative)")
    top.set_ylim(-0.05, 1.05)
    bottom.set_ylabel("false alerts that day")
    bottom.set_xlabel("day (shaded: the test part)")
    marks = {
        "accepted": ("^", "#1b7f3a"),
        "data": (".", "#8c8c8c"),
        "dangerous traces": ("X", "#8b1a1a"),
        "held-back sensitivity": ("v", "#c44e52"),
        "held-back false alarms": ("x", "#e07b39"),
    }
    seen = set()
    for update in summary["updates"]:
        gate = update["gate_name"]
        marker, colour = marks.get(gate, ("x", "#c44e52"))
        label = (
            "update accepted"
            if gate == "accepted"
            else ("no update: not enough data" if gate == "data" else f"refused: {gate}")
        )
        top.scatter(
            update["day"] + 0.5,
            1.02,
            marker=marker,
            color=colour,
            s=40,
            label=None if label in seen else label,
            zorder=5,
        )
        seen.add(label)
    top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    top.set_title("Markers at the end of a day: that night's update attempt", fontsize=9)
    return to_png(figure)


def render_simulate_report(out: Path, summary: dict) -> Path:
    """OUT/simulate.html from a simulation's summary (simulate.json's figures)."""
    return write_html(
        "simulate.html.j2",
        out / "simulate.html",
        summary=summary,
        days_png=image_uri(days_figure(summary)),
        labels=LABELS,
    )
