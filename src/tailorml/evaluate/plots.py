"""Figures of the report, rendered with matplotlib (Agg) to PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tailorml.alerts import Event
from tailorml.data.glucose import CLASSES

# the groups of the shipped cohorts keep their colour from figure to figure
GROUP_COLOURS = {
    "child": "#4c72b0",
    "adolescent": "#dd8452",
    "adult": "#55a868",
    "18-39": "#4c72b0",
    "40-59": "#dd8452",
    "60+": "#55a868",
}
OTHER_COLOURS = ("#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c", "#ccb974")


def group_colours(groups) -> dict[str, str]:
    """A colour for each group present (in sorted order): the fixed ones of the shipped
    cohorts, then a palette; legends list only these, never groups a cohort lacks."""
    present = sorted({str(group) for group in groups})
    others = iter(OTHER_COLOURS * (1 + len(present) // len(OTHER_COLOURS)))
    return {group: GROUP_COLOURS.get(group) or next(others) for group in present}


def to_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


TRUE_ALERT, FALSE_ALERT, NOT_EVALUABLE = "#1b7f3a", "#c44e52", "#8c8c8c"


def trace_figure(
    readings: pd.DataFrame,
    predictions: pd.DataFrame,
    events: list[Event],
    evaluable: np.ndarray,
    alert_times: np.ndarray,
    alert_false: np.ndarray,
    threshold: float,
    hypo_mgdl: float,
    hyper_mgdl: float,
    title: str,
) -> bytes:
    """CGM with thresholds, true hypo events (shaded; hatched grey when a sensor gap left no
    prediction before them, so they are not evaluable), alerts (green tick: a low followed;
    red cross: false alert) and P(hypo) with the alert threshold. Which alert is false and
    which event is evaluable is decided by the caller with the alert policy's own logic."""
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot(readings["time"], readings["cgm"], color="#333333", linewidth=1, label="CGM")
    top.axhline(hypo_mgdl, color="#c44e52", linestyle="--", linewidth=0.8)
    top.axhline(hyper_mgdl, color="#dd8452", linestyle="--", linewidth=0.8)
    labelled: set[bool] = set()
    for event, usable in zip(events, np.asarray(evaluable, dtype=bool), strict=True):
        style = (
            {"color": "#c44e52", "alpha": 0.18}
            if usable
            else {"facecolor": "none", "edgecolor": NOT_EVALUABLE, "hatch": "///", "alpha": 0.8}
        )
        label = "hypo event" if usable else "hypo event, not evaluable (sensor gap)"
        top.axvspan(event.start, event.end, label=None if usable in labelled else label, **style)
        labelled.add(bool(usable))
    if len(alert_times):
        lookup = readings.drop_duplicates("time").set_index("time")["cgm"]
        heights = lookup.reindex(pd.to_datetime(alert_times)).to_numpy()
        heights = np.nan_to_num(heights, nan=hypo_mgdl)
        false = np.asarray(alert_false, dtype=bool)
        for mask, marker, colour, label in (
            (~false, r"$\checkmark$", TRUE_ALERT, "alert, low followed"),
            (false, "x", FALSE_ALERT, "false alert"),
        ):
            if mask.any():
                top.scatter(
                    np.asarray(alert_times)[mask],
                    heights[mask],
                    marker=marker,
                    color=colour,
                    s=70 if marker != "x" else 45,
                    linewidths=1.6,
                    zorder=3,
                    label=f"{label} ({int(mask.sum())})",
                )
    top.set_ylabel("glucose (mg/dL)")
    top.set_title(title)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    bottom.plot(predictions["time"], predictions["p_hypo"], color="#c44e52", linewidth=0.8)
    bottom.axhline(threshold, color="#333333", linestyle=":", linewidth=1)
    bottom.text(
        1.01,
        threshold,
        f"alert threshold {threshold:g}",
        transform=bottom.get_yaxis_transform(),
        va="center",
        fontsize=8,
    )
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("P(hypo)")
    figure.autofmt_xdate()
    return to_png(figure)


def individual_bars(per_individual: pd.DataFrame, metrics: list[tuple[str, str]]) -> bytes:
    """One panel per metric: a bar per individual coloured by group, dashed mean."""
    table = per_individual.sort_values(["group", "patient_id"])
    figure, axes = plt.subplots(len(metrics), 1, figsize=(11, 2.6 * len(metrics)), sharex=True)
    axes = np.atleast_1d(axes)
    legend = group_colours(table["group"])
    colours = [legend[str(group)] for group in table["group"]]
    for axis, (column, label) in zip(axes, metrics, strict=True):
        values = table[column].astype(float)
        axis.bar(table["patient_id"], values.fillna(0), color=colours)
        for position, value in enumerate(values):
            if np.isnan(value):  # e.g. no hypo event: no sensitivity, not a sensitivity of 0
                axis.text(position, 0, "n/a", ha="center", va="bottom", fontsize=7, color="#666")
        axis.axhline(values.mean(), color="black", linestyle="--", linewidth=0.8)
        axis.set_ylabel(label)
    axes[-1].tick_params(axis="x", rotation=90, labelsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in legend.values()]
    # above the first panel, never over a bar
    axes[0].legend(
        handles,
        list(legend),
        fontsize=8,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=len(legend),
        frameon=False,
    )
    return to_png(figure)


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray) -> bytes:
    """Row-normalised confusion matrix with counts."""
    from sklearn.metrics import confusion_matrix

    labels = list(range(len(CLASSES)))
    counts = confusion_matrix(y_true, y_pred, labels=labels)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(4.8, 4.2))
    axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for row in labels:
        for column in labels:
            axis.text(
                column,
                row,
                f"{rates[row, column]:.2f}\n({counts[row, column]})",
                ha="center",
                va="center",
                color="white" if rates[row, column] > 0.6 else "black",
                fontsize=9,
            )
    axis.set_xticks(labels, CLASSES)
    axis.set_yticks(labels, CLASSES)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true (next 30 min)")
    return to_png(figure)


def reliability_figure(is_alert_class: np.ndarray, probability: np.ndarray, name: str) -> bytes:
    """Predicted P(`name`) against how often it happened, in ten equal-width bins (a
    calibrated model lies on the diagonal), with the number of windows per bin below."""
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(is_alert_class, probability, n_bins=10)
    counts = np.histogram(probability, bins=10, range=(0, 1))[0]
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.2, 5.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot([0, 1], [0, 1], color="#888888", linestyle=":", linewidth=1, label="calibrated")
    top.plot(predicted, observed, marker="o", color="#c44e52", label="model")
    top.set_ylabel(f"observed share {name}")
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(np.arange(10) / 10 + 0.05, counts, width=0.09, color="#c44e52", alpha=0.6)
    bottom.set_yscale("log")
    bottom.set_ylabel("windows")
    bottom.set_xlabel(f"predicted P({name})")
    bottom.set_xlim(0, 1)
    return to_png(figure)


def training_curve(history: list[dict], score: str = "validation balanced accuracy") -> bytes:
    figure, axis = plt.subplots(figsize=(5.5, 3.2))
    steps = [row["step"] for row in history]
    axis.plot(steps, [row["val_score"] for row in history], marker="o")
    axis.set_xlabel("training step")
    axis.set_ylabel(score)
    return to_png(figure)


def alert_curve_figure(
    curve: pd.DataFrame,
    point: pd.Series,
    target_per_day: float = 1.0,
    marked: list[tuple[str, float, float]] = (),
    x_max: float = 8.0,
) -> bytes:
    """Early sensitivity against false alerts per day for the model and the baselines, the
    model's operating point marked (its any-lead sensitivity dashed), and `marked` points
    (label, false alerts per day, early sensitivity) that are not on a curve, e.g. rules
    with a threshold of their own for each person."""
    figure, axis = plt.subplots(figsize=(7.5, 4.2))
    colours = {"model": "#c44e52"}
    palette = ("#c44e52", "#4c72b0", "#55a868", "#8172b2", "#937860", "#da8bc3")
    for colour, (rule, rows) in zip(palette, curve.groupby("rule", sort=False), strict=False):
        rows = rows.sort_values("false_alerts_per_day")
        colours[rule] = colour
        axis.plot(rows["false_alerts_per_day"], rows["sensitivity_early"], color=colour, label=rule)
        if rule == "model":
            axis.plot(
                rows["false_alerts_per_day"],
                rows["sensitivity"],
                color=colour,
                linestyle="--",
                linewidth=0.9,
                label="model, any lead time",
            )
    axis.scatter(
        [point["false_alerts_per_day"]],
        [point["sensitivity_early"]],
        s=70,
        color=colours["model"],
        edgecolor="black",
        zorder=5,
        label=f"operating point (P ≥ {point['knob']:g})",
    )
    for marker, (label, rate, early) in zip("DsP^v*", marked, strict=False):
        axis.scatter(
            [rate],
            [early],
            s=55,
            marker=marker,
            color="white",
            edgecolor="black",
            zorder=6,
            label=label,
        )
    axis.axvline(target_per_day, color="#888888", linestyle=":", linewidth=1)
    axis.set_xlim(0, max(x_max, float(point["false_alerts_per_day"]) * 1.3))
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("false alerts per day (mean over individuals)")
    axis.set_ylabel("hypo events alerted early")
    axis.legend(loc="lower right", fontsize=8)
    return to_png(figure)


def agp_figure(panels: list[tuple[pd.DataFrame, str]], low: float = 70, high: float = 180) -> bytes:
    """The ambulatory glucose profile, one panel per (profile, title) from
    `tailorml.data.glycemia.agp_profile`: median, 25-75 % and 5-95 % bands by time of day,
    the target range `low`-`high` mg/dL dashed — the picture clinicians read first."""
    figure, axes = plt.subplots(
        1, len(panels), figsize=(5.6 * len(panels), 3.8), sharey=True, squeeze=False
    )
    top = 300.0
    for axis, (profile, title) in zip(axes[0], panels, strict=True):
        # repeat the last and first bins across midnight so the bands reach 0 h and 24 h
        day = pd.concat(
            [
                profile.tail(1).assign(minute=lambda f: f["minute"] - 1440),
                profile,
                profile.head(1).assign(minute=lambda f: f["minute"] + 1440),
            ]
        )
        hours = day["minute"].to_numpy() / 60
        axis.fill_between(
            hours, day["p5"], day["p95"], color="#4c72b0", alpha=0.18, lw=0, label="5–95 %"
        )
        axis.fill_between(
            hours, day["p25"], day["p75"], color="#4c72b0", alpha=0.45, lw=0, label="25–75 %"
        )
        axis.plot(hours, day["p50"], color="#1b2f5e", linewidth=1.8, label="median")
        axis.axhline(low, color="#55a868", linestyle="--", linewidth=1)
        axis.axhline(
            high,
            color="#55a868",
            linestyle="--",
            linewidth=1,
            label=f"target {low:g}–{high:g} mg/dL",
        )
        if profile["p95"].notna().any():
            top = max(top, float(np.ceil((profile["p95"].max() + 10) / 50) * 50))
        axis.set_xlim(0, 24)
        axis.set_xticks(range(0, 25, 3), [f"{h:02d}:00" for h in range(0, 25, 3)], fontsize=8)
        axis.set_xlabel("time of day")
        axis.set_title(title, fontsize=10)
        axis.grid(axis="y", color="#e5e5e5", linewidth=0.6)
    axes[0][0].set_ylim(40, top)
    axes[0][0].set_ylabel("glucose (mg/dL)")
    axes[0][-1].legend(loc="upper right", fontsize=7)
    return to_png(figure)
