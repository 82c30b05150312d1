"""Certification throughput of IBP, CROWN-IBP and CROWN on the alert model, and tightness of
the bounds against the exact MILP optimum on small ReLU networks.

    .venv/bin/python benchmarks/bench_certify.py [--model runs/<run>/model.pt] [--windows 256]

Throughput: float64, 2 threads, real windows of the shipped synthetic cohort, the default
18k-parameter model (the given one, or a freshly initialised one: the cost of our bounds
does not depend on the weights, since every neuron is bounded).
Tightness: for random tiny networks and inputs, with f(x) the clean margin and m* the MILP
minimum over the box, ratio = (f(x) - bound) / (f(x) - m*): 1 = exact, 2 = twice as
pessimistic as the true worst case.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time

import numpy as np
import torch
from torch import nn

from tailorml.config import Config
from tailorml.data.prepared import prepare
from tailorml.models.cnn import load_model
from tailorml.models.recipe import fresh_model
from tailorml.models.train import use_threads
from tailorml.policy import AlertPolicy
from tailorml.robust.bounds import METHODS, bounds
from tailorml.robust.certify import certify
from tailorml.robust.milp import minimize
from tailorml.robust.perturbation import SensorError, cgm_error


def throughput(model_path: str | None, n_windows: int) -> None:
    config = Config()
    config.cohort.individuals = ["adult-002", "child-003"]
    prepared = prepare(config)
    pooled = prepared.splits.pooled("test")
    test = pooled[np.linspace(0, len(pooled) - 1, n_windows).round().astype(int)]
    x, y = prepared.windows.x[test], prepared.windows.y[test]
    model = load_model(model_path) if model_path else fresh_model(config.model, x, 3, seed=0)
    print(f"\n{len(x)} windows, eps ±10 mg/dL, float64, 2 threads")
    print(f"{'method':10s} {'batch':>6s} {'samples/s':>10s} {'verified':>9s}")
    for method in METHODS:
        batches = (1, 4, 16) if method == "crown" else (64, 512)
        if method == "crown" and model_path is None:
            batches = (1,)
        for batch in batches:
            start = time.perf_counter()
            certificate = certify(
                model, x, y, cgm_error(10.0), AlertPolicy(), method, batch_size=batch
            )
            seconds = time.perf_counter() - start
            print(
                f"{method:10s} {batch:6d} {len(x) / seconds:10.1f} "
                f"{certificate.verified_accuracy:9.3f}"
            )


def tightness(trials: int) -> None:
    print(f"\ntightness against the MILP optimum ({trials} random nets x 1 input each)")
    print(
        f"{'network':24s} {'unstable':>8s} {'milp s':>7s} " + " ".join(f"{m:>10s}" for m in METHODS)
    )
    for widths, eps in (((4, 8, 8, 2), 0.3), ((4, 16, 16, 2), 0.2), ((8, 16, 16, 16, 2), 0.1)):
        ratios = {method: [] for method in METHODS}
        unstable, seconds = [], []
        for trial in range(trials):
            torch.manual_seed(trial)
            layers: list[nn.Module] = []
            for a, b in itertools.pairwise(widths):
                layers += [nn.Linear(a, b), nn.ReLU()]
            net = nn.Sequential(*layers[:-1]).double()
            x = torch.randn(1, widths[0], dtype=torch.float64)
            spec = np.array([1.0, -1.0])
            error = SensorError(eps)
            start = time.perf_counter()
            exact = minimize(net, x, spec, error)
            seconds.append(time.perf_counter() - start)
            unstable.append(exact.unstable)
            with torch.no_grad():
                clean = float(net(x)[0] @ torch.tensor(spec))
            if clean - exact.value < 1e-9:
                continue  # the box does not move the margin: ratio undefined
            spec_tensor = torch.tensor(spec).reshape(1, 1, 2)
            for method in METHODS:
                with torch.no_grad():
                    lower, _ = bounds(net, x, error, method, spec=spec_tensor, lower_only=True)
                ratios[method].append((clean - float(lower)) / (clean - exact.value))
        name = "-".join(map(str, widths)) + f" eps {eps:g}"
        cells = " ".join(f"{np.median(ratios[m]):10.2f}" for m in METHODS)
        print(f"{name:24s} {np.mean(unstable):8.1f} {np.mean(seconds):7.3f} {cells}")
    print("(cells: median ratio (f(x) - bound) / (f(x) - exact minimum); 1.00 = exact)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--windows", type=int, default=256)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    use_threads(2)
    print(
        f"machine: {platform.machine()}, python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )
    throughput(args.model, args.windows)
    if args.trials > 0:
        tightness(args.trials)


if __name__ == "__main__":
    main()
