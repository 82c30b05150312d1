"""HTML report of an experiment, rendered only from results.parquet and summary.csv."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tailorml.config import load_config
from tailorml.evaluate.plots import to_png
from tailorml.evaluate.report import image_uri, optional_table, write_html
from tailorml.evaluate.significance import min_pairs_for_test, smallest_p_value
from tailorml.experiment.summary import HEADLINE, per_individual

FAMILY = {
    "baseline": "baseline",
    "baseline_with_individual": "baseline",
    "early_shaping": "shaping",
    "sample_weighing": "shaping",
    "transfer": "shaping",
    "last_layer": "fine-tuning",
    "l2sp": "fine-tuning",
    "single_sample_grouping": "grouping",
    "individual_grouping": "grouping",
    "random_grouping": "grouping",
    "certified_training": "robust",
    "adversarial_finetuning": "robust",
    "certified_finetuning": "robust",
    "sparse_finetuning": "sparse",
    "feature_distillation": "generalizing",
    "coteaching": "generalizing",
    "coteaching_mm": "generalizing",
    "group_dro": "fair",
    "by_need": "fair",
}
COLOURS = {
    "baseline": "#333333",
    "shaping": "#4c72b0",
    "fine-tuning": "#8172b3",
    "grouping": "#55a868",
    "robust": "#c44e52",
    "sparse": "#dd8452",
    "generalizing": "#937860",
    "fair": "#da8bc3",
}


def tradeoff_figure(summary: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str) -> bytes:
    """Mean per setting with standard-error bars across individuals."""
    figure, axis = plt.subplots(figsize=(8.5, 6))
    for _, row in summary.iterrows():
        colour = COLOURS[FAMILY.get(row["method"], "baseline")]
        n = max(row["individuals"], 1)
        xerr = row.get(f"{x}_sd", np.nan) / np.sqrt(n)
        yerr = row.get(f"{y}_sd", np.nan) / np.sqrt(n)
        axis.errorbar(
            row[f"{x}_mean"],
            row[f"{y}_mean"],
            xerr=xerr,
            yerr=yerr,
            fmt="o",
            color=colour,
            capsize=2,
        )
    present = [f for f in COLOURS if f in {FAMILY.get(m, "baseline") for m in summary["method"]}]
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=COLOURS[f]) for f in present]
    # outside the axes: a legend inside covers points and their labels
    axis.legend(
        handles,
        present,
        fontsize=8,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.01),
        ncol=len(present),
        frameon=False,
    )
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    place_labels(
        axis,
        list(zip(summary[f"{x}_mean"], summary[f"{y}_mean"], strict=True)),
        summary["setting"].tolist(),
    )
    return to_png(figure)


def place_labels(
    axis, points: list[tuple[float, float]], labels: list[str], fontsize: float = 7
) -> list:
    """Label each point without two labels overlapping: settings often land on (nearly) the
    same spot, and labels drawn at a fixed offset then print over each other. Each label
    goes right of its point (left near the right edge), or is moved up/down in steps of one
    line until it is clear of every label already placed; a moved label gets a thin leader
    line to its point."""
    from matplotlib.text import Text

    axis.figure.canvas.draw()  # fixes the axis limits, so data map to their final pixels
    renderer = axis.figure.canvas.get_renderer()
    right_edge = axis.get_window_extent(renderer).x1
    placed, texts = [], []
    order = sorted(range(len(points)), key=lambda i: (-points[i][1], points[i][0]))
    step = fontsize + 2  # points
    for index in order:
        x, y = points[index]
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        side = 1
        for attempt in range(80):
            shift = (attempt + 1) // 2 * (1 if attempt % 2 else -1) * step
            text = axis.annotate(
                labels[index],
                (x, y),
                xytext=(5 * side, 2 + shift),
                textcoords="offset points",
                fontsize=fontsize,
                va="center",
                ha="left" if side > 0 else "right",
                arrowprops=(
                    {"arrowstyle": "-", "color": "#999999", "linewidth": 0.5} if shift else None
                ),
            )
            text.update_positions(renderer)  # the offset is resolved only when drawn
            box = Text.get_window_extent(text, renderer)  # the words, not the leader line
            if side > 0 and box.x1 > right_edge:
                text.remove()
                side = -1
                continue
            if not any(box.overlaps(other) for other in placed):
                break
            text.remove()
        else:  # no free place found: draw it where it was first wanted
            text = axis.annotate(
                labels[index], (x, y), xytext=(5, 2), textcoords="offset points", fontsize=fontsize
            )
            text.update_positions(renderer)
            box = Text.get_window_extent(text, renderer)
        placed.append(box)
        texts.append(text)
    return texts


def spread_figure(values: pd.DataFrame, metric: str, label: str, order: list[str]) -> bytes:
    """Per-individual distribution of a metric per setting (the fairness view), in `order`."""
    present = set(values.index.get_level_values("setting"))
    settings = [setting for setting in order if setting in present]
    data = [values.xs(s, level="setting")[metric].dropna().to_numpy() for s in settings]
    figure, axis = plt.subplots(figsize=(10, 4.2))
    axis.boxplot(data, showmeans=True)
    axis.set_xticks(range(1, len(settings) + 1), settings, rotation=60, ha="right", fontsize=8)
    axis.set_ylabel(label)
    axis.grid(alpha=0.3, axis="y")
    return to_png(figure)


def writer_examples(config, individuals: int = 6, per_row: int = 15) -> bytes:
    from tailorml.data.writers import CLASS_NAMES, make_writers

    small = config.writers.model_copy(update={"individuals": individuals, "general_writers": 1})
    writers = make_writers(small)
    figure, axes = plt.subplots(individuals, per_row, figsize=(per_row * 0.75, individuals * 0.9))
    for row in range(individuals):
        indices = np.flatnonzero(writers.writer == row)[:: max(1, 300 // per_row)][:per_row]
        for column, index in enumerate(indices):
            axis = axes[row, column]
            axis.imshow(writers.images[index, 0], cmap="gray_r", vmin=0, vmax=1)
            axis.set_title(CLASS_NAMES[writers.labels[index]], fontsize=6)
            axis.axis("off")
        axes[row, 0].text(
            -0.5,
            0.5,
            writers.names[row],
            transform=axes[row, 0].transAxes,
            ha="right",
            va="center",
            fontsize=7,
        )
    return to_png(figure)


def flag_weak_tests(summary: pd.DataFrame) -> tuple[pd.DataFrame, dict | None]:
    """Mark p-values from too few paired individuals (`<metric>_too_few`) and describe them
    for a warning (the most pairs any flagged test had, so the smallest p it could give is
    a bound for all); None when every test could reach p < 0.05. A setting identical to the
    reference on every individual (0 pairs, p = 1) is not flagged: equal is equal. Tables
    written before `<metric>_pairs` existed fall back to the number of individuals."""
    needed, most, flagged = min_pairs_for_test(), 0, []
    summary = summary.copy()
    for metric in HEADLINE:
        if f"{metric}_p" not in summary:
            continue
        pairs = summary.get(f"{metric}_pairs", summary["individuals"])
        weak = summary[f"{metric}_p"].notna() & (pairs > 0) & (pairs < needed)
        summary[f"{metric}_too_few"] = weak
        if weak.any():
            most = max(most, int(pairs[weak].max()))
            flagged += [s for s in summary.loc[weak, "setting"] if s not in flagged]
    if not flagged:
        return summary, None
    return summary, {
        "pairs": most,
        "smallest_p": smallest_p_value(most),
        "needed": needed,
        "settings": flagged,
    }


FAIRNESS_LABELS = {
    "acc_individual": "accuracy on D_I",
    "balanced_acc_individual": "balanced accuracy on D_I",
    "hypo_sensitivity": "hypo event sensitivity",
    "false_alerts_per_day": "false alerts per day (higher is worse)",
    "balanced_accuracy": "balanced accuracy on D_I",
}


def group_figure(values: pd.DataFrame, groups: pd.Series, metric: str, order: list[str]) -> bytes:
    """Mean of `metric` per age group and setting: the group gap at a glance."""
    from tailorml.evaluate.plots import group_colours

    table = values[metric].reset_index()
    table["group"] = table["individual"].map(groups)
    means = table.groupby(["setting", "group"], sort=False)[metric].mean().unstack("group")
    means = means.reindex([s for s in order if s in means.index])
    figure, axis = plt.subplots(figsize=(10, 3.6))
    legend = group_colours(means.columns)
    for group in means.columns:
        axis.plot(
            range(len(means)),
            means[group],
            "o-",
            color=legend[str(group)],
            label=group,
            linewidth=0.8,
        )
    axis.set_xticks(range(len(means)))
    axis.set_xticklabels(means.index, rotation=35, ha="right", fontsize=7)
    axis.set_ylabel(FAIRNESS_LABELS.get(metric, metric) + "\n(group mean)", fontsize=8)
    axis.legend(fontsize=8, frameon=False, ncol=3, loc="lower left", bbox_to_anchor=(0, 1.0))
    return to_png(figure)


def _fairness_context(run_dir: Path, results: pd.DataFrame, order: list[str]) -> dict:
    """The fairness section's tables (fairness.csv, fairness_traits.csv) and figure."""
    context: dict = {
        "fairness": {},
        "traits": {},
        "trait_names": [],
        "group_figure": None,
        "rollout": [],
    }
    fairness = optional_table(run_dir / "fairness.csv")
    if fairness.empty:
        return context
    if "trait" not in fairness:  # runs of older versions: age groups only
        fairness = fairness.assign(trait="group")
    context["fairness"] = {
        key: rows.to_dict("records")
        for key, rows in fairness.groupby(["trait", "metric"], sort=False)
    }
    metric = "balanced_acc_individual" if "balanced_acc_individual" in results else None
    if metric and "group" in results:
        groups = results.groupby("individual")["group"].first()
        context["group_figure"] = image_uri(
            group_figure(per_individual(results, [metric]), groups, metric, order)
        )
    context["rollout"] = optional_table(run_dir / "rollout.csv").to_dict("records")
    traits = optional_table(run_dir / "fairness_traits.csv")
    if not traits.empty:
        context["trait_names"] = list(dict.fromkeys(traits["trait"]))
        context["traits"] = {
            setting: {r["trait"]: r for r in rows.to_dict("records")}
            for setting, rows in traits.groupby("setting", sort=False)
        }
    return context


def _robustness_context(run_dir: Path, order: list[str]) -> dict:
    """Per metric and kind of shift (sensor faults, life changes): setting x shift tables of
    the mean drop (shift - reference) and its p against the reference method's drop, from
    robustness.csv."""
    table = optional_table(run_dir / "robustness.csv")
    if table.empty:
        return {}
    out = {}
    life = table["shift"].str.startswith("life_")
    for kind, part in (("sensor faults", table[~life]), ("life changes", table[life])):
        for metric, rows in part.groupby("metric", sort=False):
            shifts = list(dict.fromkeys(rows["shift"]))
            settings = [s for s in order if s in set(rows["setting"])] or list(
                dict.fromkeys(rows["setting"])
            )
            cells = {(r["setting"], r["shift"]): r for r in rows.to_dict("records")}
            out[(metric, kind)] = {"shifts": shifts, "settings": settings, "cells": cells}
    return out


def render_experiment_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.toml")
    results = pd.read_parquet(run_dir / "results.parquet")
    try:
        summary = pd.read_csv(run_dir / "summary.csv")
    except pd.errors.EmptyDataError:  # no individual could be personalized
        summary = pd.DataFrame()
    environment = json.loads((run_dir / "environment.json").read_text())
    glucose = config.experiment.dataset == "glucose"
    figures = {}
    if len(summary):
        figures["tradeoff"] = image_uri(
            tradeoff_figure(
                summary,
                "acc_general",
                "acc_individual",
                "accuracy on general data D_G",
                "accuracy on the individual's data D_I",
            )
        )
        values = per_individual(results, ["acc_individual"])
        figures["spread"] = image_uri(
            spread_figure(
                values, "acc_individual", "acc D_I per individual", summary["setting"].tolist()
            )
        )
        if glucose and "hypo_sensitivity_mean" in summary:
            figures["alerts"] = image_uri(
                tradeoff_figure(
                    summary.assign(hypo_sensitivity_sd=np.nan, false_alerts_per_day_sd=np.nan),
                    "false_alerts_per_day",
                    "hypo_sensitivity",
                    "false alerts per day",
                    "hypo event sensitivity",
                )
            )
    if len(summary) and "verified_acc_individual_mean" in summary:
        figures["robust_tradeoff"] = image_uri(
            tradeoff_figure(
                summary.assign(clean_acc_individual_sd=np.nan),
                "verified_acc_individual",
                "clean_acc_individual",
                f"verified accuracy at ±{config.robust.eps:g}{' mg/dL' if glucose else ''} "
                "(D_I test windows)",
                "clean accuracy (same windows)",
            )
        )
        verified = per_individual(results, ["verified_acc_individual"])
        figures["robust_spread"] = image_uri(
            spread_figure(
                verified,
                "verified_acc_individual",
                "verified accuracy per individual",
                summary["setting"].tolist(),
            )
        )
    if not glucose:
        figures["examples"] = image_uri(writer_examples(config))
    skipped = (
        results[results["status"] == "skipped"].drop_duplicates("individual")[
            ["individual", "reason"]
        ]
        if "status" in results
        else pd.DataFrame()
    )
    ok = results[results["status"] == "ok"] if "status" in results else results
    fair = _fairness_context(run_dir, results, summary["setting"].tolist() if len(summary) else [])
    if fair["group_figure"]:
        figures["groups"] = fair["group_figure"]
    summary, weak_test = flag_weak_tests(summary) if len(summary) else (summary, None)
    return write_html(
        "experiment.html.j2",
        run_dir / "report.html",
        run_name=run_dir.name,
        config=config,
        environment=environment,
        glucose=glucose,
        synthetic=bool(results["synthetic"].any()) if "synthetic" in results else True,
        summary=summary.to_dict("records"),
        weak_test=weak_test,
        figures=figures,
        skipped=skipped.to_dict("records"),
        n_individuals=ok["individual"].nunique() if len(ok) else 0,
        n_rows=len(results),
        seeds=config.experiment.seeds,
        config_toml=(run_dir / "config.toml").read_text(),
        fairness=fair["fairness"],
        robustness=_robustness_context(
            run_dir, summary["setting"].tolist() if len(summary) else []
        ),
        fairness_labels=FAIRNESS_LABELS,
        traits=fair["traits"],
        trait_names=fair["trait_names"],
        rollout=fair["rollout"],
    )
