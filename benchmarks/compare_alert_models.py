"""Which predefined model raises the best alerts: CGM only vs CGM + insulin and carbs on
board, short vs long training — each at its operating point chosen on validation data
(at most `--budget` false alerts/day), measured on the shipped cohort's test parts.

.venv/bin/python benchmarks/compare_alert_models.py [--epochs 8 20] [--budget 1.0]

Prints a Markdown table for docs/alerts.md. The cohort is SYNTHETIC: the figures compare
models on simulated patients and are not clinical evidence.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

from tailorml.config import Config
from tailorml.jobs import train

INPUTS = {"CGM": ["cgm"], "CGM + IOB + COB": ["cgm", "iob", "cob"]}


def measure(channels: list[str], epochs: int, budget: float, runs_dir: str) -> dict:
    config = Config().model_copy(deep=True)
    config.task.channels = channels
    config.train.epochs = epochs
    config.alerts.max_false_alerts_per_day = budget
    config.run.runs_dir = runs_dir
    config.run.name = f"{'-'.join(channels)}-{epochs}"
    start = time.perf_counter()
    result = train.run(config)
    seconds = time.perf_counter() - start
    metrics = result.metrics
    summary = metrics["per_individual_summary"]
    return {
        "seconds": seconds,
        "parameters": metrics["model"]["parameters"],
        "point": metrics["operating_point"],
        "alerting": metrics["alerting"],
        "early": summary["hypo_sensitivity_early"]["mean"],
        "any": summary["hypo_sensitivity"]["mean"],
        "false": summary["false_alerts_per_day"]["mean"],
        "precision": summary["alert_precision"]["mean"],
        "balanced": summary["balanced_accuracy"]["mean"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[8, 20])
    parser.add_argument("--budget", type=float, default=1.0)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, python {platform.python_version()}; SYNTHETIC cohort")
    print(
        "| inputs | epochs | params | threshold (val) | early sens. | any-lead sens. | "
        "false alerts/day | precision | margin over best baseline | balanced acc. | train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as runs_dir:
        for name, channels in INPUTS.items():
            for epochs in args.epochs:
                row = measure(channels, epochs, args.budget, runs_dir)
                point, margin = row["point"], row["alerting"].get("margin")
                print(
                    f"| {name} | {epochs} | {row['parameters']} | {point['threshold']:g}"
                    f"{' (edge)' if point['at_edge'] else ''} | {row['early']:.3f} | "
                    f"{row['any']:.3f} | {row['false']:.2f} | {row['precision']:.3f} | "
                    f"{'n/a' if margin is None else f'{margin:+.3f}'} | {row['balanced']:.3f} | "
                    f"{row['seconds']:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
