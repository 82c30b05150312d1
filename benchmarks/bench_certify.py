"""Certification throughput of IBP, CROWN-IBP, CROWN and α-CROWN on the alert model, the
fast CROWN against the op-by-op one side by side (same bounds, checked), its memory per
window, and tightness of the bounds against the exact MILP optimum on small ReLU networks.

    .venv/bin/python benchmarks/bench_certify.py [--model runs/<run>/model.pt] [--windows 256]
    .venv/bin/python benchmarks/bench_certify.py --windows 0     # tightness only

Throughput: float64, 2 threads, real windows of the shipped synthetic cohort, the given
model (or a freshly initialised default one: the cost of CROWN does not depend on the
weights, since every neuron is bounded). Rates under load are only comparable within
one run (the ratios); the script prints the load average.
Tightness: for random tiny networks and inputs, with f(x) the clean margin and m* the MILP
minimum over the box, ratio = (f(x) - bound) / (f(x) - m*): 1 = exact, 2 = twice as
pessimistic as the true worst case; the last column is branch and bound over the input
box on CROWN (`tailorml.robust.bab`) with at most BAB_DOMAINS boxes per bound.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import itertools
import os
import platform
import resource
import time

import numpy as np
import torch
from torch import nn

from tailorml.config import Config
from tailorml.data.prepared import prepare
from tailorml.models.cnn import load_model
from tailorml.models.train import use_threads
from tailorml.policy import AlertPolicy
from tailorml.recipe import fresh_model
from tailorml.robust import crown
from tailorml.robust.bab import minimum_bound
from tailorml.robust.bounds import METHODS, bounds, op_by_op_bounds, pairwise_spec
from tailorml.robust.certify import certify
from tailorml.robust.milp import minimize
from tailorml.robust.perturbation import SensorError, cgm_error

BAB_DOMAINS = 1024


def _windows(n_windows: int):
    config = Config()
    config.cohort.individuals = ["adult-002", "child-003"]
    prepared = prepare(config)
    pooled = prepared.splits.pooled("test")
    test = pooled[np.linspace(0, len(pooled) - 1, n_windows).round().astype(int)]
    return config, prepared.windows.x[test], prepared.windows.y[test]


def _rate(work, n: int, seconds: float = 3.0) -> float:
    """Windows per second of `work()` (n windows a call), repeated for about `seconds`."""
    done, start = 0, time.perf_counter()
    while True:
        work()
        done += n
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def _rates(work, n: int, seconds: float = 3.0) -> tuple[float, float]:
    """Windows per wall second and per CPU-second of the process (all threads)."""
    cpu, wall = time.process_time(), time.perf_counter()
    rate = _rate(work, n, seconds)
    windows = rate * (time.perf_counter() - wall)
    return rate, windows / (time.process_time() - cpu)


def _peak_kib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


@contextlib.contextmanager
def _without_shared_start():
    """`bounds(..., "crown")` as it was before `crown._shared_start` (same bounds)."""
    original = crown.backward
    crown.backward = functools.partial(original, shared=False)
    try:
        yield
    finally:
        crown.backward = original


def crown_side_by_side(model, x: np.ndarray) -> None:
    """Margin bounds (the 6 pairwise rows certification uses) of the op-by-op CROWN, the
    flat one, and the flat one without its shared first steps, in one run; bounds
    compared; peak memory per window."""
    double = copy.deepcopy(model).double().eval()
    error = cgm_error(10.0, 0.0, list(model.policy.channels) if model.policy else ["cgm"])
    windows = torch.as_tensor(x, dtype=torch.float64)
    n_classes = int(double(windows[:1]).shape[1])
    print(f"\nCROWN margin bounds, {len(windows)} windows, old (op by op) vs new (flat)")
    with torch.no_grad():
        spec = pairwise_spec(len(windows), n_classes, torch.float64)
        # memory first, before the old path raises the process's peak: the growth of the
        # peak from 256 windows to 2,048 (the windows repeated) is what a window costs
        many = windows.repeat(2048 // len(windows) + 1, 1, 1)[:2048]
        many_spec = pairwise_spec(len(many), n_classes, torch.float64)
        bounds(double, many[:256], error, "crown", spec=many_spec[:256], lower_only=True)
        before = _peak_kib()
        bounds(double, many, error, "crown", spec=many_spec, lower_only=True)
        new_grown = _peak_kib() - before
        new = lambda: bounds(double, windows, error, "crown", spec=spec, lower_only=True)  # noqa: E731
        for batch in (1, 16, 64):
            part = windows[:batch]
            rate = _rate(
                lambda p=part, s=spec[:batch]: op_by_op_bounds(
                    double, p, error, s, lower_only=True
                ),
                len(part),
            )
            print(f"  old  batch {batch:4d}: {rate:8.1f} windows/s")
        # the flat CROWN with and without its shared first steps, alternated: wall rate and
        # windows per CPU-second of the process (both threads; less sensitive to load)
        paths = (("new", contextlib.nullcontext), ("flat", _without_shared_start)) * 2
        for name, context in paths:
            with context():
                rate, cpu = _rates(new, len(windows))
            print(f"  {name:4s} batch {len(windows):4d}: {rate:8.1f} windows/s, {cpu:6.1f}/CPU-s")
        with _without_shared_start():
            flat = new()[0]
        difference = float((flat - new()[0]).abs().max())
        print(f"  max |flat - new| on {len(windows)} windows: {difference:.2e}")
        before = _peak_kib()
        want = op_by_op_bounds(double, windows[:64], error, spec[:64], lower_only=True)[0]
        old_grown = _peak_kib() - before
        got = new()[0][:64]
        print(f"  max |old - new| on 64 windows: {float((want - got).abs().max()):.2e}")
        print(
            f"  peak memory growth: new {new_grown:.0f} KiB from 256 to 2,048 windows "
            f"({new_grown / 1792:.1f} KiB/window); "
            f"old {old_grown / 1024:.1f} MiB for 64 windows "
            f"({old_grown / 64 / 1024:.2f} MiB/window)"
        )


def throughput(model_path: str | None, n_windows: int, methods: list[str]) -> None:
    config, x, y = _windows(n_windows)
    model = load_model(model_path) if model_path else fresh_model(config.model, x, 3, seed=0)
    policy = model.policy or AlertPolicy()
    crown_side_by_side(model, x)
    print(f"\ncertify, {len(x)} windows, eps ±10 mg/dL, float64, 2 threads")
    print(f"{'method':12s} {'samples/s':>10s} {'certified':>9s} {'correct':>8s}")
    for method in methods:
        start = time.perf_counter()
        certificate = certify(model, x, y, cgm_error(10.0), policy, method)
        seconds = time.perf_counter() - start
        print(
            f"{method:12s} {len(x) / seconds:10.1f} {int(certificate.certified.sum()):9d} "
            f"{int(certificate.correct.sum()):8d}"
        )


def tightness(trials: int) -> None:
    print(f"\ntightness against the MILP optimum ({trials} random nets x 1 input each)")
    columns = [*METHODS, f"bab{BAB_DOMAINS}"]
    print(
        f"{'network':24s} {'unstable':>8s} {'milp s':>7s} {'bab s':>7s} "
        + " ".join(f"{m:>10s}" for m in columns)
    )
    for widths, eps in (((4, 8, 8, 2), 0.3), ((4, 16, 16, 2), 0.2), ((8, 16, 16, 16, 2), 0.1)):
        ratios = {method: [] for method in columns}
        unstable, seconds, bab_seconds = [], [], []
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
            low, high = error.box(x)
            start = time.perf_counter()
            found = minimum_bound(net, low, high, torch.tensor(spec), max_domains=BAB_DOMAINS)
            bab_seconds.append(time.perf_counter() - start)
            ratios[columns[-1]].append((clean - found.lower) / (clean - exact.value))
        name = "-".join(map(str, widths)) + f" eps {eps:g}"
        cells = " ".join(f"{np.median(ratios[m]):10.2f}" for m in columns)
        print(
            f"{name:24s} {np.mean(unstable):8.1f} {np.mean(seconds):7.3f} "
            f"{np.mean(bab_seconds):7.3f} {cells}"
        )
    print(
        "(cells: median ratio (f(x) - bound) / (f(x) - exact minimum); 1.00 = exact; "
        f"bab{BAB_DOMAINS}: branch and bound on CROWN, at most {BAB_DOMAINS} boxes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--windows", type=int, default=256)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="bound methods certify is timed with"
    )
    args = parser.parse_args()
    use_threads(2)
    print(
        f"machine: {platform.machine()}, python {platform.python_version()}, "
        f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}"
    )
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if args.windows > 0:
        throughput(args.model, args.windows, methods)
    if args.trials > 0:
        tightness(args.trials)


if __name__ == "__main__":
    main()
