"""Simulate the synthetic virtual type-1 diabetes cohort (the 30 UVA/Padova patients).

Physiology, CGM noise and pump rounding come from `simglucose`; the daily behaviour from
`tailorml.data.scenario`. The simulation loop is ours rather than `simglucose`'s
`T1DSimEnv` because the behaviour needs to react to CGM readings (treating lows,
correcting highs) and to change insulin sensitivity minute by minute, and because reading
patient parameters through a pandas Series made `simglucose` about 14x slower (we hand the
ODE the same numbers as plain floats: identical results, measured in BENCHMARKS.md).

Two engines make the same cohort (`SimulationConfig.engine`): "reference", this module's
loop around one simglucose `T1DPatient` per patient, and "batched" (`simulate_batched`), all
patients of a worker as one vectorized ODE, much faster at cohort sizes. This module also
runs cohorts (parallel, resumable, with metadata) for either.

Output rows are every 5 minutes, the grid of real sensors (Dexcom G6/G7, Medtronic,
Nightscout uploaders, OhioT1DM): the simulator still integrates minute by minute, and the
simulated sensor (`simglucose`'s Dexcom noise model, read every 5 minutes) reports within the
40–400 mg/dL range of real sensors, as their `Low`/`High` readings are imported. All data is
synthetic.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from tailorml.config import SimulationConfig
from tailorml.data import scenario
from tailorml.data.simulate_batched import simulate_patients
from tailorml.data.virtual_patient import (
    CORRECTION_CHECK_MINUTES,
    CORRECTION_WAIT_MINUTES,
    METER_BOLUS_ABOVE_MGDL,
    NOTICE_BELOW_MGDL,
    PUMP,
    SAMPLE_MINUTES,
    SENSOR,
    SEVERE_HYPO_MGDL,
    SYMPTOM_HYPO_MGDL,
    basal_rate,
    installed_version,
    parameter_tables,
    patient_frame,
    patient_id,
    patient_names,
    rng,
    sensor_params,
    setup_patient,
    simglucose,
)
from tailorml.errors import ConfigError, SimulationError
from tailorml.io import atomic_write, atomic_write_json, atomic_write_parquet, fingerprint

# Kept under their old names for callers and tests of this module.
_rng = rng
_simglucose = simglucose
_installed_version = installed_version
_parameter_tables = parameter_tables


class _FastParams(SimpleNamespace):
    """Patient parameters as plain floats: the ODE reads ~40 of them per evaluation."""


def simulate_patient(
    name: str, config: SimulationConfig, minutes: int | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Simulate one patient for `config.days` days (or the first `minutes`) with simglucose's
    own `T1DPatient` (the reference engine).

    Returns the 5-minute table (synthetic) and the patient's behaviour parameters.
    """
    sg = simglucose()
    setup = setup_patient(name, config, minutes)
    sensitivity, liver = setup.sensitivity, setup.liver
    cgm_missing, occluded = setup.cgm_missing, setup.occluded
    meals_at, meal_bolus_grams = setup.meals_at, setup.meal_bolus_grams
    reactive, behaviour = setup.reactive, setup.behaviour
    carb_ratio, correction_factor = setup.carb_ratio, setup.correction_factor
    params = setup.params

    patient = sg.T1DPatient(params)
    fast = _FastParams(**{k: (v if isinstance(v, str) else float(v)) for k, v in params.items()})
    patient._params = fast  # same numbers, plain attribute access (see module docstring)
    base_vmx, base_kp3, base_kp1 = fast.Vmx, fast.kp3, fast.kp1
    sensor = sg.CGMSensor(sensor_params(), seed=setup.sensor_seed)
    pump = sg.InsulinPump.withName(PUMP)
    basal = basal_rate(setup)  # U/min

    n_rows = setup.n_rows
    cgm = np.empty(n_rows)
    bg = np.empty(n_rows)
    cho = np.zeros(n_rows)
    insulin = np.zeros(n_rows)
    last_cgm = float(params["Gb"])
    never = -(10**9)
    last_bolus = last_treatment = last_correction_check = never
    treatment_grams = 0.0
    correction_units = 0.0
    carbs_acc = insulin_acc = 0.0

    for minute in range(setup.total_minutes):
        if minute % SAMPLE_MINUTES == 0:
            # A reading: record it with the carbs and insulin of the 5 minutes before it.
            row = minute // SAMPLE_MINUTES
            reading = sensor.measure(patient)
            true_bg = patient.observation.Gsub
            bg[row] = true_bg
            cgm[row] = np.nan if cgm_missing[minute] else reading
            cho[row], insulin[row] = carbs_acc, insulin_acc
            carbs_acc = insulin_acc = 0.0
            if not cgm_missing[minute]:
                last_cgm = float(reading)
            seen = last_cgm if not cgm_missing[minute] else true_bg  # symptoms, no sensor

            # Lows: the patient eats fast carbs if they notice (less often asleep).
            draw, grams = reactive.random(), reactive.uniform(*config.hypo_treatment_grams)
            if minute - last_treatment >= config.hypo_retreat_minutes:
                if true_bg < SEVERE_HYPO_MGDL:
                    notice = 1.0
                elif seen < NOTICE_BELOW_MGDL:
                    asleep = scenario.is_night(minute) and true_bg >= SYMPTOM_HYPO_MGDL
                    notice = (
                        config.hypo_notice_probability_night
                        if asleep
                        else config.hypo_notice_probability_day
                    )
                else:
                    notice = 0.0
                if draw < notice:
                    treatment_grams = round(float(grams), 1)
                    last_treatment = minute

            # Highs: at most an hourly decision to correct, ignoring insulin on board.
            if (
                seen > config.correction_threshold_mgdl
                and minute - last_bolus >= CORRECTION_WAIT_MINUTES
                and minute - last_correction_check >= CORRECTION_CHECK_MINUTES
            ):
                last_correction_check = minute
                if reactive.random() < config.correction_probability:
                    correction_units = (
                        behaviour.correction_gain
                        * (seen - config.bolus_target_mgdl)
                        / correction_factor
                    )

        carbs_now = meals_at.get(minute, 0.0) + treatment_grams
        bolus_units = correction_units
        if minute in meal_bolus_grams:
            bolus_units += meal_bolus_grams[minute] / carb_ratio
            if last_cgm > METER_BOLUS_ABOVE_MGDL:  # standard bolus calculator: meal + correction
                bolus_units += (last_cgm - config.bolus_target_mgdl) / correction_factor
        if bolus_units > 0:
            last_bolus = minute
        treatment_grams = correction_units = 0.0

        rate = pump.basal(basal) + pump.bolus(bolus_units)  # a bolus takes one minute
        if occluded[minute]:
            rate = 0.0
        fast.Vmx = base_vmx * sensitivity[minute]
        fast.kp3 = base_kp3 * sensitivity[minute]
        fast.kp1 = base_kp1 * liver[minute]
        patient.step(sg.Action(CHO=carbs_now, insulin=rate))
        if not patient._odesolver.successful():  # scipy warned; simglucose would go on
            raise SimulationError(
                f"simulation of {name} failed at minute {minute} (day {minute // 1440 + 1}):"
                " simglucose's ODE solver stopped; the [simulation] scenario drives the model"
                " out of its range"
            )
        carbs_acc += carbs_now
        insulin_acc += rate

    return patient_frame(setup, config, cgm, bg, cho, insulin)


# Bump when a change to the simulation code changes its output (invalidates cached parts).
GENERATOR_VERSION = 2  # 2: 5-minute grid, 40-400 mg/dL sensor range


def resolve_patients(requested: Sequence[str]) -> list[str]:
    """Map requested names ('adolescent#001' or 'adolescent-001'; empty = all) to simglucose's."""
    names = patient_names()
    if not requested:
        return names
    by_id = {patient_id(name): name for name in names}
    resolved = []
    for item in requested:
        name = item if item in names else by_id.get(item)
        if name is None:
            raise ValueError(
                f"unknown virtual patient {item!r} in simulation.patients; "
                f"valid: {', '.join(by_id)}"
            )
        resolved.append(name)
    return resolved


def _write_part(part: str | Path, frame: pd.DataFrame, info: dict[str, Any]) -> None:
    atomic_write_json(Path(part).with_suffix(".json"), info)
    atomic_write_parquet(part, frame)  # written last: its presence marks the patient done


def _simulate_to_part(name: str, config_json: str, part: str) -> str:
    """Worker (reference engine): simulate one patient and write its part files atomically."""
    config = SimulationConfig.model_validate_json(config_json)
    _write_part(part, *simulate_patient(name, config))
    return name


def cohort_fingerprint(config: SimulationConfig) -> str:
    """What a patient's simulated data depends on (not which patients are simulated).

    The reference engine's fingerprint is the one it had before engines existed, so the
    shipped cohort's metadata stays valid; another engine is part of the fingerprint (its
    numbers may differ in the last bits), so parts of one engine are never reused by the other.
    """
    data: dict[str, Any] = {
        "generator": GENERATOR_VERSION,
        "simglucose": installed_version("simglucose"),
        "scenario": config.model_dump(mode="json", exclude={"patients", "engine"}),
    }
    if config.engine != "reference":
        data["engine"] = config.engine
    return fingerprint(data)


def metadata_path(cohort_path: str | Path) -> Path:
    return Path(cohort_path).with_suffix(".json")


OUT_SUFFIXES = (".parquet", ".csv")
BAD_OUT_SUFFIX = (
    "--out {path}: a cohort file ends in .parquet (Parquet) or .csv (CSV), not '{suffix}'; "
    "rename it"
)


def check_out_path(out_path: str | Path) -> Path:
    """`out_path` if its suffix names a cohort format, else a ConfigError naming --out."""
    out_path = Path(out_path)
    if out_path.suffix.lower() not in OUT_SUFFIXES:
        raise ConfigError(BAD_OUT_SUFFIX.format(path=out_path, suffix=out_path.suffix))
    return out_path


DESCRIPTIONS = {
    "reference": (
        "SYNTHETIC virtual type-1 diabetes cohort simulated with simglucose "
        "(UVA/Padova model) and tailorml's behaviour scenario; not clinical data."
    ),
    "batched": (
        "SYNTHETIC virtual type-1 diabetes cohort simulated with tailorml's batched engine "
        "(simglucose's UVA/Padova model, parameters, sensor and pump) and tailorml's "
        "behaviour scenario; not clinical data."
    ),
}


def _run_reference(
    todo: list[str],
    config: SimulationConfig,
    part_of: dict[str, Path],
    workers: int,
    finished: Callable[[str, bool], None],
) -> None:
    config_json = config.model_dump_json()
    if workers <= 1 or len(todo) == 1:
        for name in todo:
            _simulate_to_part(name, config_json, str(part_of[name]))
            finished(name, False)
        return
    from tailorml.workers import process_pool

    with process_pool(workers) as pool:
        futures = [
            pool.submit(_simulate_to_part, name, config_json, str(part_of[name])) for name in todo
        ]
        for future in as_completed(futures):
            finished(future.result(), False)


def _run_batched(
    todo: list[str],
    config: SimulationConfig,
    part_of: dict[str, Path],
    finished: Callable[[str, bool], None],
    on_progress: Callable[[int], None] | None,
) -> None:
    """All patients in this process, as one batch: a batched minute costs about the same for
    1 or 30 patients (NumPy's per-call overhead dominates, BENCHMARKS.md), so splitting them
    over worker processes would spend more CPU for the same wall time."""
    results = simulate_patients(todo, config, on_day_done=on_progress)
    for name, (frame, info) in zip(todo, results, strict=True):
        _write_part(part_of[name], frame, info)
        finished(name, False)


def simulate_cohort(
    config: SimulationConfig,
    out_path: str | Path,
    workers: int = 2,
    on_patient_done: Callable[[str, bool], None] | None = None,
    force: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """Simulate every requested patient into one cohort file plus a metadata JSON.

    `config.engine` chooses the simulator: "batched" integrates all patients together in
    this process (simulate_batched), "reference" runs simglucose's own patient one at a time,
    in `workers` parallel processes. Resumable: each finished patient is kept under
    `<out>.parts/<fingerprint>/` and skipped on rerun (the batched engine finishes its
    patients together), the final file is written atomically.
    `on_patient_done(name, reused)` is called once per patient, `on_progress(n)` whenever n
    more patient-days are simulated or reused (both for progress bars).
    The format follows the suffix of `out_path`: .parquet (Parquet) or .csv (CSV); any
    other suffix is refused before any work.
    """
    out_path = check_out_path(out_path)
    names = resolve_patients(config.patients)
    key = cohort_fingerprint(config)
    meta_file = metadata_path(out_path)

    def finished(name: str, reused: bool) -> None:
        if on_patient_done:
            on_patient_done(name, reused)
        if on_progress and (reused or config.engine == "reference"):
            on_progress(config.days)

    if not force and out_path.exists() and meta_file.exists():
        existing = json.loads(meta_file.read_text())
        if existing.get("fingerprint") == key and existing.get("patients") == [
            patient_id(name) for name in names
        ]:
            for name in names:
                finished(name, True)
            return out_path

    parts_dir = out_path.with_name(out_path.name + ".parts") / key[:16]
    parts_dir.mkdir(parents=True, exist_ok=True)
    part_of = {name: parts_dir / f"{patient_id(name)}.parquet" for name in names}
    todo = [name for name in names if force or not part_of[name].exists()]
    for name in names:
        if name not in todo:
            finished(name, True)

    if todo and config.engine == "batched":
        _run_batched(todo, config, part_of, finished, on_progress)
    elif todo:
        _run_reference(todo, config, part_of, workers, finished)

    frames = [pd.read_parquet(part_of[name]) for name in names]
    infos = {
        patient_id(name): json.loads(part_of[name].with_suffix(".json").read_text())
        for name in names
    }
    cohort = pd.concat(frames, ignore_index=True)
    metadata = {
        "synthetic": True,
        "description": DESCRIPTIONS[config.engine],
        "engine": config.engine,
        "generator": "tailorml.data.simulate",
        "generator_version": GENERATOR_VERSION,
        "tailorml_version": installed_version("tailorml"),
        "simglucose_version": installed_version("simglucose"),
        "fingerprint": key,
        "sample_minutes": SAMPLE_MINUTES,
        "sensor": SENSOR,
        "pump": PUMP,
        "seed": config.seed,
        "days": config.days,
        "patients": [patient_id(name) for name in names],
        "scenario": config.model_dump(mode="json"),
        "per_patient": infos,
    }
    if out_path.suffix.lower() == ".csv":
        atomic_write(out_path, lambda path: cohort.to_csv(path, index=False))
    else:
        atomic_write_parquet(out_path, cohort)
    atomic_write_json(meta_file, metadata)
    shutil.rmtree(parts_dir.parent, ignore_errors=True)
    return out_path
