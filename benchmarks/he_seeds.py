"""Is the HE-friendly model's alert gap seed noise? Several seeds of each model, and the
HE seeds folded into one ensemble (no extra CKKS depth), compared at equal false alerts.

    .venv/bin/python benchmarks/he_seeds.py --standard RUN [RUN ...] --he RUN [RUN ...] \
        [--rate 0.514] [--no-ensembles]

Each RUN is a `tailorml train` run of the same cohort (the demo config and
experiments/he_friendly.toml with other `train.seed`s). For every run: the best early
sensitivity, and separately the best any-lead sensitivity, on its fine test curve at no more
than `--rate` false alerts/day (bench_privacy.fine_curve); then the mean per model with the
gap's Welch 95 % interval (seeds of one model are independent draws, so the interval says
whether a gap is beyond seed noise), and for the HE runs the folded ensembles of the first
3 and of all (`models.he_cnn.fold_ensemble`; one-convolution networks only), evaluated on
the same test part. The cohort is SYNTHETIC: figures compare models, not clinical evidence.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import stats

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


def sensitivities_at_rate(run: Path, rate: float) -> tuple[float, float, float]:
    """Early sensitivity and the rate it reached, and separately the best sensitivity at any
    lead (caught in the horizon at all: the looser reading of "event sensitivity"), each the
    best at no more than `rate` false alerts/day on one sweep of the run's fine test curve."""
    curve = fine_curve(run)
    early = best_within(curve, rate)
    any_lead = best_within(curve, rate, by="sensitivity")
    return (
        float(early["sensitivity_early"]),
        float(early["false_alerts_per_day"]),
        float(any_lead["sensitivity"]),
    )


def welch_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """mean(a) − mean(b) and its 95 % interval, variances not assumed equal (Welch)."""
    interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return float(a.mean() - b.mean()), float(interval.low), float(interval.high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--standard", nargs="+", type=Path, required=True)
    parser.add_argument("--he", nargs="+", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=0.514)
    parser.add_argument(
        "--no-ensembles", action="store_true", help="skip folding the HE runs (deeper nets)"
    )
    args = parser.parse_args()
    if min(len(args.standard), len(args.he)) < 2:
        parser.error("--standard and --he need two runs or more each (a spread over seeds)")
    print(f"load average {os.getloadavg()[0]:.1f}; sensitivity at <= {args.rate:g}/day")
    print("\n| model | run | early sens. (rate reached) | any-lead sens. |\n|---|---|---|---|")
    early, any_lead = {}, {}
    for name, runs in (("standard", args.standard), ("HE-friendly", args.he)):
        early[name], any_lead[name] = [], []
        for run in runs:
            value, rate, caught = sensitivities_at_rate(run, args.rate)
            early[name].append(value)
            any_lead[name].append(caught)
            print(f"| {name} | {run.name} | {value:.3f} ({rate:.2f}) | {caught:.3f} |")
    if not args.no_ensembles:
        print_ensembles(args.he, args.rate)
    for label, values in (("early", early), ("any-lead", any_lead)):
        standard, he = np.array(values["standard"]), np.array(values["HE-friendly"])
        gap, low, high = welch_interval(he, standard)
        print(
            f"\n{label} sensitivity, mean over seeds: standard {standard.mean():.3f} "
            f"(sd {standard.std(ddof=1):.3f}, n {len(standard)}), HE-friendly {he.mean():.3f} "
            f"(sd {he.std(ddof=1):.3f}, n {len(he)}): gap {100 * gap:+.1f} points "
            f"(Welch 95 % [{100 * low:+.1f}, {100 * high:+.1f}])"
        )


def print_ensembles(he_runs: list[Path], rate: float) -> None:
    prepared = prepare(load_config(he_runs[0] / "config.toml"))
    members = [load_model(run / "model.pt") for run in he_runs]
    for k in sorted({min(3, len(members)), len(members)}):
        with tempfile.TemporaryDirectory() as folder:
            folded = fold_ensemble(members[:k])
            write_evaluation(Path(folder), folded, prepared, "test")
            save_model(folded, Path(folder) / "model.pt")
            value, reached = at_rate(Path(folder), rate)
        print(
            f"| HE ensemble of {k} (one {folded.spec.conv_channels[0]}-channel net) | – | "
            f"{value:.3f} ({reached:.2f}) | |"
        )


if __name__ == "__main__":
    main()
