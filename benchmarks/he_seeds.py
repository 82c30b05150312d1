"""Is the HE-friendly model's alert gap seed noise? Several seeds of each model, and the
HE seeds folded into one ensemble (no extra CKKS depth), compared at equal false alerts.

    .venv/bin/python benchmarks/he_seeds.py --standard RUN [RUN ...] --he RUN [RUN ...] \
        [--rate 0.514]

Each RUN is a `tailorml train` run of the same cohort (the demo config and
experiments/he_friendly.toml with other `train.seed`s). For every run: the best early
sensitivity on its fine test curve at no more than `--rate` false alerts/day
(bench_privacy.fine_curve); then the mean per model, and for the HE runs the folded
ensembles of the first 3 and of all (`models.he_cnn.fold_ensemble`), evaluated on the same
test part. The cohort is SYNTHETIC: figures compare models, not clinical evidence.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from tailorml.config import load_config
from tailorml.data.prepared import prepare
from tailorml.evaluate.individuals import write_evaluation
from tailorml.models.cnn import load_model, save_model
from tailorml.models.he_cnn import fold_ensemble

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_privacy import best_within, fine_curve


def at_rate(run: Path, rate: float) -> tuple[float, float]:
    point = best_within(fine_curve(run), rate)
    return float(point["sensitivity_early"]), float(point["false_alerts_per_day"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--standard", nargs="+", type=Path, required=True)
    parser.add_argument("--he", nargs="+", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=0.514)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}; early sensitivity at <= {args.rate:g}/day")
    print("\n| model | run | early sens. (rate reached) |\n|---|---|---|")
    means = {}
    for name, runs in (("standard", args.standard), ("HE-friendly", args.he)):
        values = []
        for run in runs:
            value, rate = at_rate(run, args.rate)
            values.append(value)
            print(f"| {name} | {run.name} | {value:.3f} ({rate:.2f}) |")
        means[name] = values
    prepared = prepare(load_config(args.he[0] / "config.toml"))
    members = [load_model(run / "model.pt") for run in args.he]
    for k in sorted({min(3, len(members)), len(members)}):
        with tempfile.TemporaryDirectory() as folder:
            folded = fold_ensemble(members[:k])
            write_evaluation(Path(folder), folded, prepared, "test")
            save_model(folded, Path(folder) / "model.pt")
            value, rate = at_rate(Path(folder), args.rate)
        print(
            f"| HE ensemble of {k} (one {folded.spec.conv_channels[0]}-channel net) | – | "
            f"{value:.3f} ({rate:.2f}) |"
        )
    standard, he = np.array(means["standard"]), np.array(means["HE-friendly"])
    print(
        f"\nmean over seeds: standard {standard.mean():.3f} (sd {standard.std(ddof=1):.3f}, "
        f"n {len(standard)}), HE-friendly {he.mean():.3f} (sd {he.std(ddof=1):.3f}, "
        f"n {len(he)}): gap {100 * (he.mean() - standard.mean()):+.1f} points"
    )


if __name__ == "__main__":
    main()
