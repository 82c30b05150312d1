"""The certification report: verified accuracy against ε (cohort and per individual), and
clean / PGD / verified accuracy per individual at the chosen ε. Reads only the files the
certify job wrote, so it can be re-rendered without recomputing a bound."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tailorml.evaluate.plots import group_colours, to_png
from tailorml.evaluate.report import image_uri, write_html


def reproduce_command(
    run_dir: str | Path, robust: dict[str, Any], model_option: str | Path | None = None
) -> str:
    """The `tailorml certify` command that recomputes these results: every option the CLI
    has, with the value used (defaults too, so a changed default cannot change the rerun),
    and `--model` when one was given (it also decides the output folder). Absolute paths."""
    parts = ["tailorml", "certify", "--run", str(Path(run_dir).resolve())]
    parts += ["--eps", f"{robust['eps']:g}", "--relative", f"{robust['relative_percent']:g}"]
    parts += ["--method", str(robust["method"])]
    parts += ["--max-windows", str(robust["max_windows"])]
    parts += ["--sweep-windows", str(robust["sweep_windows"])]
    if model_option is not None:
        parts += ["--model", str(Path(model_option).resolve())]
    return shlex.join(parts)


def _command_of_older_results(out: Path, summary: dict, settings: dict) -> str:
    """Results written before certify.json kept its command: another model than the run's
    was certified exactly when the folder has a model-hash suffix."""
    other = out.name != f"certify-eps{summary['eps']:g}"
    return reproduce_command(
        summary["run_dir"], settings["robust"], summary["model"] if other else None
    )


def sweep_figure(sweep: pd.DataFrame, title: str) -> bytes:
    """Verified accuracy vs ε: one thin line per individual (by group), the mean in black."""
    figure, axis = plt.subplots(figsize=(8, 4.2))
    legend = group_colours(sweep["group"])
    for (_individual, group), rows in sweep.groupby(["individual", "group"], sort=True):
        rows = rows.sort_values("eps")
        axis.plot(
            rows["eps"],
            rows["verified_acc"],
            color=legend[str(group)],
            linewidth=0.8,
            alpha=0.55,
        )
    mean = sweep.groupby("eps")["verified_acc"].mean()
    axis.plot(mean.index, mean.values, color="black", linewidth=2.2, marker="o", label="mean")
    handles = [plt.Line2D([0], [0], color=c) for c in legend.values()]
    axis.legend(
        [*handles, plt.Line2D([0], [0], color="black", linewidth=2.2)],
        [*legend, "mean"],
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),  # outside: inside it covers the curves
    )
    axis.set_xlabel("sensor error ε (± mg/dL on every CGM reading)")
    axis.set_ylabel("verified accuracy")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    return to_png(figure)


def accuracy_bars(robustness: pd.DataFrame, eps: float) -> bytes:
    """Clean, PGD and verified accuracy per individual (verified <= PGD <= clean)."""
    table = robustness.sort_values(["group", "individual"])
    positions = np.arange(len(table))
    figure, axis = plt.subplots(figsize=(11, 3.8))
    for offset, (column, label, colour) in zip(
        (-0.27, 0.0, 0.27),
        (
            ("clean_acc", "clean", "#9db4d3"),
            ("pgd_acc", "PGD", "#dd8452"),
            ("verified_acc", "verified", "#1b7f3a"),
        ),
        strict=True,
    ):
        axis.bar(positions + offset, table[column], width=0.27, color=colour, label=label)
    axis.set_xticks(positions, table["individual"], rotation=90, fontsize=7)
    axis.set_ylabel("accuracy")
    axis.set_ylim(0, 1.02)
    axis.set_title(f"Alert decisions at ±{eps:g} mg/dL, per individual")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return to_png(figure)


def render_certify_report(out: Path) -> Path:
    summary = json.loads((out / "certify.json").read_text())
    settings = json.loads((out / "settings.json").read_text())
    robustness = pd.read_csv(out / "robustness.csv")
    sweep = pd.read_csv(out / "sweep.csv")
    methods = [
        c
        for c in ("verified_ibp", "verified_crown-ibp", "verified_crown", "verified_alpha-crown")
        if c in robustness
    ]
    return write_html(
        "certify.html.j2",
        out / "report.html",
        summary=summary,
        settings=settings,
        rows=robustness.sort_values(["group", "individual"]).to_dict("records"),
        methods=methods,
        command=summary.get("command") or _command_of_older_results(out, summary, settings),
        sweep_png=image_uri(sweep_figure(sweep, f"Verified accuracy ({summary['sweep_method']})")),
        bars_png=image_uri(accuracy_bars(robustness, summary["eps"])),
    )
