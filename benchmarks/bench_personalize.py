"""Personalization cost per individual for every method setting of an experiment config,
measured in one process with one thread (one worker's share of a 2-core machine).

    .venv/bin/python benchmarks/bench_personalize.py [experiments/table1.toml] [--individual ID]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

from tailorml.config import load_config
from tailorml.experiment import tasks
from tailorml.models.train import use_threads
from tailorml.personalize.base import execute
from tailorml.personalize.grid import expand


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", nargs="?", default="experiments/table1.toml")
    parser.add_argument("--individual", default=None)
    args = parser.parse_args()
    config = load_config(args.config)
    use_threads(1)
    start = time.perf_counter()
    data = tasks.load_data(config)
    print(f"machine: {platform.machine()}, python {platform.python_version()}, 1 thread")
    print(f"{config.experiment.dataset}: data ready in {time.perf_counter() - start:.1f} s")
    individual = args.individual or data.ids[0]
    run_dir = tempfile.mkdtemp(prefix="tailorml-bench-")
    json_config = config.model_dump_json()

    start = time.perf_counter()
    tasks.run_autoencoder(json_config, run_dir, 0)
    print(f"autoencoder + latents: {time.perf_counter() - start:.1f} s")
    context = tasks.make_context(config, data, run_dir, individual, 0)
    start = time.perf_counter()
    tasks.run_global(json_config, run_dir, individual, 0)  # the [train] recipe, as experiments
    print(f"global model ({len(context.general)} D_G samples): {time.perf_counter() - start:.1f} s")
    print(f"{'setting':32s} {'plan s':>7s} {'train s':>8s} {'steps':>6s}")
    total = 0.0
    for setting in expand(config.methods):
        start = time.perf_counter()
        plan = setting.strategy().plan(context)
        planned = time.perf_counter()
        execute(plan, context)
        done = time.perf_counter()
        total += done - start
        print(
            f"{setting.label:32s} {planned - start:7.2f} {done - planned:8.2f} "
            f"{len(plan.schedule):6d}"
        )
    print(f"all settings for one individual and seed: {total:.1f} s")


if __name__ == "__main__":
    main()
