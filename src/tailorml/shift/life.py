"""Life changes: new periods of the same virtual patients, re-simulated with changed behaviour.

"Pathologies and lifestyles evolve over time" (seed 000): a model personalized on last
month meets a patient who now eats later and more, exercises daily, is ill, or (a child)
has grown. Sensor faults (`shift.sensor`) perturb readings; these change the glucose itself,
so they need the simulator. Each scenario re-simulates the same patients for the same new
days (another seed than the shipped cohort: data no model was trained on), with one thing
changed; the reference is the same new days with the behaviour *unchanged*, so a drop is the
change's own cost, paired per patient. All of it is synthetic.

Changes (on top of the shipped scenario, `SimulationConfig`; *assumed* magnitudes):
- `life_meals`: every meal 90 min later and 30 % larger (shift work, a new diet);
- `life_exercise`: exercise every day instead of 3 times a week (a new routine);
- `life_illness`: an illness starting every day (insulin sensitivity halved, liver glucose
  output +25 %: the shipped illness model, all the time);
- `life_growth`: children only: body weight +15 % and meals 25 % larger (about a year of
  growth; adults and adolescents are not in this scenario).

The batched engine simulates every scenario and patient in one vectorized run; 30 patients
x 5 scenarios x 3 days took 3 min 18 s on a loaded 2-core machine (BENCHMARKS.md), several
times the sensor suite, which is why `tailorml stress` runs it only with `--life`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from tailorml.config import SimulationConfig
from tailorml.data.cohort import Cohort, load_cohort
from tailorml.data.simulate_batched import simulate_setups
from tailorml.data.virtual_patient import (
    PatientSetup,
    group,
    patient_id,
    patient_names,
    setup_patient,
)
from tailorml.io import atomic_write_json, atomic_write_parquet
from tailorml.policy import AlertPolicy

UNCHANGED = "life_unchanged"
SCENARIOS = {
    UNCHANGED: "same behaviour, new days (the reference)",
    "life_meals": "meals 90 min later and 30 % larger",
    "life_exercise": "exercise every day",
    "life_illness": "ill every day: insulin sensitivity x0.5, liver glucose x1.25",
    "life_growth": "children: body weight +15 %, meals +25 %",
}
NEW_PERIOD_SEED_OFFSET = 1000  # a seed no shipped cohort uses: days no model was trained on


def scenario_config(name: str, base: SimulationConfig) -> SimulationConfig:
    """The simulation config of one life scenario (see the module docstring)."""
    if name == "life_meals":
        meals = {
            key: meal.model_copy(
                update={"hour": min(meal.hour + 1.5, 23.9), "grams": meal.grams * 1.3}
            )
            for key, meal in base.meals.items()
        }
        return base.model_copy(update={"meals": meals})
    if name == "life_exercise":
        return base.model_copy(update={"exercise_per_week": 7.0})
    if name == "life_illness":
        return base.model_copy(update={"illness_probability_per_day": 1.0})
    if name == "life_growth":
        return base.model_copy(update={"child_meal_scale": base.child_meal_scale * 1.25})
    return base


def scenario_setups(name: str, names: Sequence[str], base: SimulationConfig) -> list[PatientSetup]:
    """The patients' setups for one scenario (life_growth: children only, heavier)."""
    config = scenario_config(name, base)
    setups = []
    for patient in names:
        if name == "life_growth" and group(patient) != "child":
            continue
        setup = setup_patient(patient, config)
        if name == "life_growth":
            params = setup.params.copy()
            params["BW"] = float(params["BW"]) * 1.15
            setup = replace(setup, params=params)
        setups.append(setup)
    return setups


def simulate_life(
    patients: Sequence[str], days: int, seed: int, out_dir: str | Path
) -> dict[str, Cohort]:
    """Simulate every scenario for `patients` (ids like 'child-001' or simglucose names) and
    `days` new days; write each as a synthetic cohort file under `out_dir` and load it."""
    known = {patient_id(name): name for name in patient_names()}
    names = [known.get(patient, patient) for patient in patients]
    base = SimulationConfig(days=days, seed=seed + NEW_PERIOD_SEED_OFFSET)
    plan: list[tuple[str, PatientSetup]] = []
    for scenario in SCENARIOS:
        plan += [(scenario, setup) for setup in scenario_setups(scenario, names, base)]
    results = simulate_setups([setup for _, setup in plan], base)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cohorts = {}
    for scenario in SCENARIOS:
        frames = [
            frame for (name, _), (frame, _) in zip(plan, results, strict=True) if name == scenario
        ]
        if not frames:
            continue
        path = out_dir / f"{scenario}.parquet"
        atomic_write_parquet(path, pd.concat(frames, ignore_index=True))
        atomic_write_json(
            path.with_suffix(".json"),
            {
                "synthetic": True,
                "description": f"life change: {SCENARIOS[scenario]}",
                "seed": base.seed,
                "days": days,
                "generator": "tailorml.shift.life",
            },
        )
        cohorts[scenario] = load_cohort(path)
    return cohorts


def describe(cohorts: dict[str, Cohort]) -> pd.DataFrame:
    """Per scenario and patient: mean glucose and time below 70 / above 250 (what changed)."""
    rows = []
    for scenario, cohort in cohorts.items():
        for individual_id in cohort.ids:
            cgm = cohort.of(individual_id)["cgm"].dropna()
            rows.append(
                {
                    "shift": scenario,
                    "patient_id": individual_id,
                    "mean_cgm": float(cgm.mean()),
                    "below_70": float((cgm < 70).mean()),
                    "above_250": float((cgm > 250).mean()),
                }
            )
    return pd.DataFrame(rows)


def is_virtual_patient(patient: str) -> bool:
    """Whether `patient` is one of the UVA/Padova virtual patients (the simulator can
    re-simulate them), e.g. adult-001."""
    return patient in {patient_id(name) for name in patient_names()}


@functools.lru_cache(maxsize=16)
def _scenario_days(path: str, modified: int, individual: str, task: str):
    """One individual's windows and CGM trace on a scenario's new days, or None when the
    scenario does not have them. Cached per worker process: the runner evaluates every
    method of an individual on the same days, so they are read and windowed once, not once
    per method (`modified` keys the cache to the file's version)."""
    from tailorml.config import TaskConfig
    from tailorml.data.prepared import prepare_whole

    if individual not in set(pd.read_parquet(path, columns=["patient_id"])["patient_id"]):
        return None
    cohort = load_cohort(path, [individual])
    whole = prepare_whole(cohort, TaskConfig.model_validate_json(task))
    return whole, cohort.of(individual)["cgm"].to_numpy(float)


def life_columns(
    model: nn.Module, policy: AlertPolicy, folder: str | Path, individual: str
) -> dict[str, float]:
    """One individual's metrics on the new days of every life scenario simulated into
    `folder` (by `simulate_life`), as result columns `<scenario>__<metric>`: the experiment
    runner's life changes for every personalized model. Scenarios without this individual
    (growth: children only) give no columns."""
    from tailorml.shift.suite import STRESS_METRICS, evaluate_shift

    columns: dict[str, float] = {}
    task = policy.task().model_dump_json()
    for scenario in SCENARIOS:
        path = Path(folder) / f"{scenario}.parquet"
        if not path.exists():
            continue
        found = _scenario_days(str(path.resolve()), path.stat().st_mtime_ns, individual, task)
        if found is None:
            continue
        whole, trace = found
        for row in evaluate_shift(model, whole, {individual: (trace, trace)}, "all", policy):
            for metric in STRESS_METRICS:
                value = float(row[metric])
                columns[f"{scenario}__{metric}"] = value if np.isfinite(value) else float("nan")
    return columns
