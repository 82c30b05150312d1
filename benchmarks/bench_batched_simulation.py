"""The batched simulation engine: agreement with simglucose and speed, side by side.

    .venv/bin/python benchmarks/bench_batched_simulation.py [--shipped-days 1] [--population 1000]
        [--population-days 3] [--skip-full] [--sizes 1 5 10]

1. Speed per simulated patient-day, one process each, in this one run:
   - simglucose as shipped: simglucose's `T1DPatient` reading its parameters from a pandas
     Series (as simglucose does), driven by our scenario loop (the reference engine's loop);
   - the reference engine (the same loop, parameters as plain floats);
   - the batched engine on the 30 patients.
2. The full comparison: the batched engine on all 30 patients for the shipped cohort's
   whole length (14 days, the default scenario that made the file) against the shipped file,
   which the reference engine made (`make simulate` reproduces it byte for byte): max |dBG|,
   max |dCGM|, identical or not, and the speed.
3. A population: `--population` SYNTHETIC virtual patients for `--population-days` days,
   extrapolated to 90 days. simglucose has only 30 parameter sets, so each of these patients
   is one of the 30 (drawn with replacement) with its own scenario seed (its own meals,
   habits, illnesses and sensor noise): a population of behaviours, NOT of new physiologies.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np
import pandas as pd

from tailorml.config import SimulationConfig
from tailorml.data import simulate, simulate_batched
from tailorml.data.cohort import default_cohort_path
from tailorml.data.virtual_patient import patient_names, setup_patient

DAYS_OF_A_STUDY = 90


def shipped_simglucose_seconds_per_day(names: list[str], days: int) -> float:
    """The reference loop with simglucose's parameter access as shipped (a pandas Series)."""
    original = simulate._FastParams
    simulate._FastParams = lambda **params: pd.Series(params)  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        for name in names:
            simulate.simulate_patient(name, SimulationConfig(days=days))
        return (time.perf_counter() - start) / (len(names) * days)
    finally:
        simulate._FastParams = original  # type: ignore[misc]


def reference_seconds_per_day(names: list[str], days: int) -> float:
    start = time.perf_counter()
    for name in names:
        simulate.simulate_patient(name, SimulationConfig(days=days))
    return (time.perf_counter() - start) / (len(names) * days)


def batched_seconds_per_day(names: list[str], days: int) -> float:
    start = time.perf_counter()
    simulate_batched.simulate_patients(names, SimulationConfig(days=days))
    return (time.perf_counter() - start) / (len(names) * days)


def full_comparison() -> tuple[float, pd.DataFrame]:
    """All 30 patients, 14 days, against the shipped file; seconds per patient-day."""
    config = SimulationConfig()  # the CLI default made the shipped file
    names = patient_names()
    start = time.perf_counter()
    results = simulate_batched.simulate_patients(names, config)
    seconds = (time.perf_counter() - start) / (len(names) * config.days)
    batched = pd.concat([frame for frame, _ in results], ignore_index=True)
    shipped = pd.read_parquet(default_cohort_path())
    rows = []
    for pid, mine in batched.groupby("patient_id", sort=False):
        theirs = shipped[shipped["patient_id"] == pid]
        rows.append(
            {
                "patient": pid,
                "max_abs_dbg": float(np.abs(mine["bg"].to_numpy() - theirs["bg"].to_numpy()).max()),
                "max_abs_dcgm": float(
                    np.nanmax(np.abs(mine["cgm"].to_numpy() - theirs["cgm"].to_numpy()))
                ),
                "identical": mine.reset_index(drop=True).equals(theirs.reset_index(drop=True)),
            }
        )
    return seconds, pd.DataFrame(rows)


def population_seconds(count: int, days: int, seed: int = 1) -> float:
    """`count` synthetic patients (see the module docstring) for `days` days, one process."""
    config = SimulationConfig(days=days)
    parents = np.random.default_rng(seed).choice(patient_names(), size=count)
    start = time.perf_counter()  # drawing the scenarios is part of the work
    setups = [
        setup_patient(str(name), config.model_copy(update={"seed": config.seed + k}))
        for k, name in enumerate(parents)
    ]
    frames = simulate_batched.simulate_setups(setups, config)
    seconds = time.perf_counter() - start
    bg = np.concatenate([frame["bg"].to_numpy() for frame, _ in frames])
    assert np.isfinite(bg).all()
    print(
        f"  SYNTHETIC population BG: mean {bg.mean():.0f} mg/dL, "
        f"{(bg < 70).mean():.1%} of readings < 70, {(bg > 250).mean():.1%} > 250"
    )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shipped-days", type=int, default=1, help="days for the speed runs")
    parser.add_argument("--shipped-patients", type=int, default=2, help="simglucose as shipped")
    parser.add_argument("--population", type=int, default=1000)
    parser.add_argument("--population-days", type=int, default=3)
    parser.add_argument("--skip-full", action="store_true", help="no 30 x 14-day comparison")
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=[], help="also time batches of these sizes"
    )
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, load {os.getloadavg()[0]:.1f} at start")  # fmt: skip

    names = patient_names()
    slow_names = names[:: 30 // args.shipped_patients][: args.shipped_patients]
    shipped = shipped_simglucose_seconds_per_day(slow_names, args.shipped_days)
    reference = reference_seconds_per_day(slow_names, args.shipped_days)
    batched = batched_seconds_per_day(names, args.shipped_days)
    print(f"1. seconds per patient-day (one process, {args.shipped_days} day(s)):")
    print(f"  simglucose as shipped ({len(slow_names)} patients): {shipped:.2f}")
    print(f"  reference engine ({len(slow_names)} patients):      {reference:.3f}"
          f"  ({shipped / reference:.1f}x simglucose as shipped)")  # fmt: skip
    print(f"  batched engine (30 patients):        {batched:.4f}"
          f"  ({shipped / batched:.0f}x simglucose as shipped)")  # fmt: skip
    for size in args.sizes:  # a minute costs about the same for any batch size
        small = batched_seconds_per_day(names[:: 30 // size][:size], args.shipped_days)
        print(f"  batched engine ({size} patients):  {small:.4f}"
              f"  ({shipped / small:.0f}x simglucose as shipped)")  # fmt: skip

    if not args.skip_full:
        seconds, table = full_comparison()
        print("2. batched vs the shipped cohort (reference engine), 30 patients x 14 days:")
        print(f"  max |dBG| {table['max_abs_dbg'].max():.4g} mg/dL, "
              f"max |dCGM| {table['max_abs_dcgm'].max():.4g} mg/dL, "
              f"{int(table['identical'].sum())}/30 patients identical value for value")  # fmt: skip
        print(f"  {seconds:.4f} s per patient-day ({shipped / seconds:.0f}x simglucose as "
              f"shipped), {seconds * 30 * 14:.0f} s for the cohort in one process")  # fmt: skip

    if args.population:
        count, days = args.population, args.population_days
        print(f"3. population: {count} SYNTHETIC patients x {days} days (one process)")
        seconds = population_seconds(count, days)
        per_day = seconds / (count * days)
        study = per_day * count * DAYS_OF_A_STUDY
        print(f"  {seconds:.0f} s: {per_day:.4f} s per patient-day "
              f"({shipped / per_day:.0f}x simglucose as shipped)")  # fmt: skip
        slow_hours = shipped * count * DAYS_OF_A_STUDY / 3600
        print(f"  extrapolated to {count} x {DAYS_OF_A_STUDY} days: {study / 60:.0f} min in "
              f"one process (simglucose as shipped: {slow_hours:.0f} h)")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
