"""The report of `tailorml lodo`, from the run directory's tables only (re-renderable)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tailorml.evaluate import plots
from tailorml.evaluate.curves import MODEL
from tailorml.evaluate.report import image_uri, optional_table, write_html
from tailorml.evaluate.rules import MODEL_RULES, PERSONAL, POPULATION
from tailorml.io import encode_component

# The goals a shipped alert model is held to on every left-out dataset (docs/real_data.md):
# (summary column, comparison, target, what it says)
GOALS = (
    ("sensitivity_early", ">=", 0.65, "lows alerted ≥ 15 min ahead"),
    ("sensitivity", ">=", 0.90, "lows alerted at any lead"),
    ("alert_precision", ">=", 0.65, "alerts followed by a low"),
    ("margin", ">=", 0.15, "margin over the best rule without learning"),
)
BUDGET_TOLERANCE = 0.3  # false alerts/day may exceed the budget by this much on new people


def fold_folder(run_dir: Path, held_out: str) -> Path:
    """Where a fold's files go: a dataset name comes from data, so it is encoded, never
    trusted as a path ("../x" stays inside folds/)."""
    return Path(run_dir) / "folds" / encode_component(held_out)


def goal_rows(summary: pd.DataFrame, budget: float) -> list[dict]:
    """Per goal and left-out dataset: each model rule's value and whether it meets it."""
    goals = [*GOALS, ("false_alerts_per_day", "<=", budget + BUDGET_TOLERANCE, "false alerts/day")]
    rows = []
    for column, comparison, target, label in goals:
        row = {"goal": f"{label} {'≥' if comparison == '>=' else '≤'} {target:g}", "cells": []}
        for held_out, table in summary.groupby("held_out", sort=True):
            for rule in MODEL_RULES:
                found = table[table["rule"] == rule]
                value = float(found[column].iloc[0]) if len(found) else float("nan")
                met = value >= target if comparison == ">=" else value <= target
                row["cells"].append({"dataset": held_out, "rule": rule, "value": value, "met": met})
        rows.append(row)
    return rows


def fold_figure(folder: Path, summary: pd.DataFrame, budget: float) -> str | None:
    curve = optional_table(folder / "alert_curve.csv")
    if curve.empty:
        return None
    population = summary[summary["rule"] == POPULATION]
    model = curve[curve["rule"] == MODEL]
    if population.empty or model.empty:
        return None
    point = model.loc[(model["knob"] - float(population["knob_median"].iloc[0])).abs().idxmin()]
    marked = [
        (f"{row.rule} (mean)", row.false_alerts_per_day, row.sensitivity_early)
        for row in summary.itertuples()
        if row.rule == PERSONAL or row.rule.endswith("personal level")
    ]
    # the budget's neighbourhood: where every rule of the table sits
    return image_uri(plots.alert_curve_figure(curve, point, budget, marked, x_max=4 * budget))


def render(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    summary = pd.read_csv(run_dir / "summary.csv")
    budget = float(metrics["budget"])
    folds = []
    for held_out, table in summary.groupby("held_out", sort=True):
        folder = fold_folder(run_dir, held_out)
        per_person = optional_table(folder / "per_person.csv")
        skipped = []
        if len(per_person):  # an all-empty column is read as floats
            skipped = per_person[per_person["skipped"].astype(object).fillna("") != ""]
        training = json.loads((folder / "training.json").read_text())
        folds.append(
            {
                "held_out": held_out,
                "rows": table.to_dict("records"),
                "figure": fold_figure(folder, table, budget),
                "skipped": [] if len(skipped) == 0 else skipped.to_dict("records"),
                "trained_on": len(training["trained_on"]),
                "people": len(metrics["folds"][held_out]["people"]),
            }
        )
    return write_html(
        "lodo.html.j2",
        run_dir / "report.html",
        run_name=run_dir.name,
        metrics=metrics,
        folds=folds,
        goals=goal_rows(summary, budget),
        model_rules=MODEL_RULES,
        config_toml=(run_dir / "config.toml").read_text(),
    )
