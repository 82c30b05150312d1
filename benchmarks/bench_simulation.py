"""Simulation speed: seconds per simulated patient-day, and the effect of handing the
UVA/Padova ODE plain floats instead of a pandas Series (see tailorml.data.simulate).

    .venv/bin/python benchmarks/bench_simulation.py [--days 2] [--patients 3]
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from types import SimpleNamespace

import numpy as np


def ode_minutes_per_second(fast: bool, minutes: int = 600) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from simglucose.patient.t1dpatient import Action, T1DPatient
    patient = T1DPatient.withName("adult#001")
    basal = patient._params.u2ss * patient._params.BW / 6000
    if fast:
        patient._params = SimpleNamespace(
            **{k: v if isinstance(v, str) else float(v) for k, v in patient._params.items()}
        )
    start = time.perf_counter()
    for minute in range(minutes):
        patient.step(Action(insulin=basal, CHO=50.0 if minute == 60 else 0.0))
    return minutes / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--patients", type=int, default=3)
    args = parser.parse_args()

    from tailorml.config import SimulationConfig
    from tailorml.data.simulate import patient_names, simulate_patient

    slow, fast = ode_minutes_per_second(False), ode_minutes_per_second(True)
    print(f"machine: {platform.machine()}, python {platform.python_version()}")
    print(f"ODE minutes/s with pandas Series params: {slow:,.0f}")
    print(f"ODE minutes/s with plain float params:   {fast:,.0f}  ({fast / slow:.1f}x)")

    config = SimulationConfig(days=args.days)
    names = patient_names()[:: max(1, 30 // args.patients)][: args.patients]
    seconds = []
    for name in names:
        start = time.perf_counter()
        simulate_patient(name, config)
        seconds.append((time.perf_counter() - start) / args.days)
        print(f"{name}: {seconds[-1]:.2f} s per patient-day")
    print(f"mean: {np.mean(seconds):.2f} s per patient-day (single process)")


if __name__ == "__main__":
    main()
