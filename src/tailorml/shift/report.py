"""The stress report: reads only the tables `tailorml stress` wrote, so it can be re-rendered."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tailorml.evaluate.plots import group_colours, to_png
from tailorml.evaluate.report import image_uri, write_html
from tailorml.shift.summary import HEADLINE

LABELS = {
    "hypo_sensitivity": "hypo event sensitivity",
    "false_alerts_per_day": "false alerts / day",
    "balanced_accuracy": "balanced accuracy",
    "hyper_sensitivity": "hyper event sensitivity",
}


def drop_figure(drops: pd.DataFrame, model: str, metrics=HEADLINE) -> bytes:
    """Per metric, per shift: each individual's drop (dot, coloured by group) and the mean
    (black bar) — where people would rather look than read a table."""
    mine = drops[drops["model"] == model]
    legend = group_colours(mine["group"])
    shifts = list(dict.fromkeys(mine["shift"]))
    present = [m for m in metrics if f"{m}_drop" in mine]
    figure, axes = plt.subplots(len(present), 1, figsize=(10, 2.4 * len(present)), sharex=True)
    axes = np.atleast_1d(axes)
    rng = np.random.default_rng(0)  # jitter only, so the figure is the same every time
    for axis, metric in zip(axes, present, strict=True):
        for position, shift in enumerate(shifts):
            rows = mine[mine["shift"] == shift]
            values = rows[f"{metric}_drop"].astype(float)
            finite = np.isfinite(values)
            colours = [legend[str(g)] for g in rows["group"][finite]]
            jitter = rng.uniform(-0.18, 0.18, int(finite.sum()))
            axis.scatter(position + jitter, values[finite], s=10, c=colours, alpha=0.8)
            if finite.any():
                axis.hlines(values[finite].mean(), position - 0.3, position + 0.3, color="black")
        axis.axhline(0, color="#999", linewidth=0.6)
        axis.set_ylabel(LABELS[metric] + "\nchange", fontsize=8)
    axes[-1].set_xticks(range(len(shifts)))
    axes[-1].set_xticklabels(shifts, rotation=30, ha="right", fontsize=8)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c) for c in legend.values()]
    axes[0].legend(
        handles,
        list(legend),
        fontsize=8,
        frameon=False,
        ncol=3,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
    )
    figure.suptitle(
        f"{model}: change per individual (dot) and mean (bar) under each shift",
        fontsize=9,
        x=0.1,
        ha="left",
        y=1.0,
    )
    return to_png(figure)


def side_by_side(summary: pd.DataFrame, models: list[str], metric: str) -> list[dict]:
    """One row per shift with each model's mean shifted value of `metric`, preceded by each
    reference (the unshifted test part, the unchanged new days): are the models still in the
    same order when the data shift?"""
    rows: list[dict] = []
    chosen = summary[summary["metric"] == metric]
    for reference, label in ((False, "unshifted test part"), (True, "life_unchanged")):
        part = chosen[chosen["shift"].str.startswith("life_") == reference]
        if part.empty:
            continue
        first = part.drop_duplicates("model").set_index("model")["reference"]
        rows.append({"shift": label, "reference": True} | {m: first.get(m) for m in models})
        for shift, group in part.groupby("shift", sort=False):
            values = group.set_index("model")["shifted"]
            rows.append({"shift": shift, "reference": False} | {m: values.get(m) for m in models})
    return rows


def render_stress_report(out: Path) -> Path:
    metrics = json.loads((out / "metrics.json").read_text())
    summary = pd.read_csv(out / "summary.csv")
    drops = pd.read_csv(out / "drops.csv")
    envelope = pd.read_csv(out / "icgm_envelope.csv")
    life_path = out / "life_scenarios.csv"
    life = pd.read_csv(life_path) if life_path.exists() else pd.DataFrame()
    models = [m["label"] for m in metrics["models"]]
    figures = {model: image_uri(drop_figure(drops, model)) for model in models if len(drops)}
    envelope_by_shift = {
        shift: rows.to_dict("records") for shift, rows in envelope.groupby("shift", sort=False)
    }
    life_summary = (
        life.groupby("shift", sort=False)[["mean_cgm", "below_70", "above_250"]]
        .mean()
        .reset_index()
        .to_dict("records")
        if not life.empty
        else []
    )
    return write_html(
        "stress.html.j2",
        out / "report.html",
        info=metrics,
        models=models,
        summary=summary.to_dict("records"),
        labels=LABELS,
        figures=figures,
        envelope=envelope_by_shift,
        life=life_summary,
        compared={
            metric: side_by_side(summary, models, metric)
            for metric in ("hypo_sensitivity", "false_alerts_per_day")
        }
        if len(models) > 1 and len(summary)
        else {},
    )
