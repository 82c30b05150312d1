"""deploy.html: the parity ladder, the alert metrics of float and int8 side by side, and
each target's budget, with figures (how much of each budget is used; float against int8
per individual)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tailorml.evaluate.plots import to_png
from tailorml.evaluate.report import image_uri, write_html

BUDGET_PARTS = (("flash", "flash", "budget_flash_bytes"), ("RAM", "ram", "budget_ram_bytes"))


def budget_figure(budgets: dict) -> bytes:
    """Share of each budget used, per target profile; the line is the budget."""
    names = list(budgets)
    figure, axis = plt.subplots(figsize=(7.5, 0.9 + 0.9 * len(names)))
    labels, shares, colours = [], [], []
    for name in names:
        budget = budgets[name]
        target = budget["target"]
        for label, used, limit in BUDGET_PARTS:
            labels.append(f"{name}: {label}")
            shares.append(budget[used] / target[limit])
        labels.append(f"{name}: latency")
        latency = budget.get("latency_conservative_ms", budget["latency_ms"])
        shares.append(latency / target["budget_latency_ms"])
    colours = ["#55a868" if share <= 1 else "#c44e52" for share in shares]
    positions = np.arange(len(labels))[::-1]
    axis.barh(positions, np.array(shares) * 100, color=colours)
    axis.axvline(100, color="#333333", linestyle="--", linewidth=1)
    axis.set_yticks(positions, labels, fontsize=8)
    axis.set_xlabel("% of the budget used (dashed line: the budget)")
    for position, share in zip(positions, shares, strict=True):
        axis.text(share * 100 + 1, position, f"{share:.0%}", va="center", fontsize=7)
    axis.set_xlim(0, max(110, max(shares) * 100 + 15))
    return to_png(figure)


def agreement_figure(table: pd.DataFrame) -> bytes:
    """Early hypo sensitivity per individual: float model against int8 (ours and ORT's)."""
    figure, axis = plt.subplots(figsize=(5.2, 5))
    key = "hypo_sensitivity_early"
    float_values = table[f"{key}_float"].astype(float)
    for label, colour, marker in (("int8", "#4c72b0", "o"), ("onnxruntime", "#dd8452", "x")):
        column = f"{key}_{label}"
        if column in table:
            name = "onnxruntime int8" if label == "onnxruntime" else "int8 (ours)"
            values = table[column].astype(float)
            axis.scatter(float_values, values, s=22, c=colour, marker=marker, label=name)
    axis.plot([0, 1], [0, 1], color="#888888", linewidth=0.8)
    axis.set_xlim(-0.03, 1.03)
    axis.set_ylim(-0.03, 1.03)
    axis.set_xlabel("float model: hypo events alerted ≥ 15 min ahead")
    axis.set_ylabel("int8 model: same")
    axis.set_title("Per individual (on the line: quantization changed nothing)", fontsize=9)
    axis.legend(fontsize=8)
    return to_png(figure)


def render_deploy_report(out: Path, summary: dict, table: pd.DataFrame) -> Path:
    """OUT/deploy.html from an export's summary (deploy.json's figures) and its parity table
    (one row per individual)."""
    budgets = summary["budgets"]
    return write_html(
        "deploy.html.j2",
        out / "deploy.html",
        summary=summary,
        rows=table.to_dict("records"),
        budgets=budgets,
        budget_png=image_uri(budget_figure(budgets)) if budgets else None,
        agreement_png=image_uri(agreement_figure(table)) if len(table) else None,
    )
