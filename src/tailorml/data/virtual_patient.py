"""The 30 UVA/Padova virtual patients and what a simulation of one starts from.

Both simulation engines (`simulate.simulate_patient`, one patient through simglucose, and
`simulate_batched`, many at once) begin from the same `PatientSetup`: parameters, the drawn
behaviour and day plans, the minute-by-minute sensitivity, sensor and pump masks, meals and
boluses, and the seeds of the reactive and sensor streams. Keeping that here, once, is what
lets the two engines produce the same cohort. All data is synthetic.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from tailorml.config import SimulationConfig
from tailorml.data import scenario
from tailorml.data.schema import TRAIT_COLUMNS
from tailorml.errors import SimulationError

SAMPLE_MINUTES = 5  # minutes between CGM readings, as real sensors report
SENSOR_RANGE_MGDL = (40.0, 400.0)  # what real CGMs report; beyond are 'Low'/'High'
SENSOR = "Dexcom"
PUMP = "Insulet"
SEVERE_HYPO_MGDL = 40.0  # below this someone always intervenes (glucagon / help)
SYMPTOM_HYPO_MGDL = 55.0  # below this a patient notices symptoms even at night
CORRECTION_WAIT_MINUTES = 120  # no correction within 2 h of a bolus...
CORRECTION_CHECK_MINUTES = 60  # ...and at most one decision per hour
NOTICE_BELOW_MGDL = 70.0  # a CGM (or felt) value below this may be treated
METER_BOLUS_ABOVE_MGDL = 150.0  # the bolus calculator adds a correction above this

# Stream numbers of the random generators; changing them changes the cohort.
BEHAVIOUR, DAY, REACTIVE, SENSOR_STREAM = range(4)


@functools.cache
def simglucose() -> SimpleNamespace:
    """Import simglucose lazily and quietly: it pulls in gym, which warns on import."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from simglucose.actuator.pump import InsulinPump
        from simglucose.patient.t1dpatient import Action, T1DPatient
        from simglucose.sensor.cgm import CGMSensor
        from simglucose.sensor.noise_gen import CGMNoise
    import simglucose

    return SimpleNamespace(
        Action=Action,
        T1DPatient=T1DPatient,
        CGMSensor=CGMSensor,
        CGMNoise=CGMNoise,
        InsulinPump=InsulinPump,
        version=getattr(simglucose, "__version__", installed_version("simglucose")),
    )


def installed_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


@functools.cache
def parameter_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """simglucose's patient, therapy (Quest) and sensor parameter tables."""
    from importlib.resources import files

    simglucose()  # import it quietly before `files` imports it loudly
    base = files("simglucose") / "params"
    patients = pd.read_csv(str(base / "vpatient_params.csv"))
    quest = pd.read_csv(str(base / "Quest.csv"))
    sensors = pd.read_csv(str(base / "sensor_params.csv"))
    return patients, quest, sensors


def patient_names() -> list[str]:
    """The 30 virtual patients in simglucose's order (10 adolescents, 10 adults, 10 children)."""
    patients = parameter_tables()[0]
    return list(patients["Name"])


def patient_id(name: str) -> str:
    """'adolescent#001' -> 'adolescent-001' (a '#' is awkward in paths and URLs)."""
    return name.replace("#", "-")


def group(name: str) -> str:
    return name.split("#")[0]


def patient_traits(name: str) -> dict[str, Any]:
    """Traits a study would stratify by: age group, age, weight, therapy and model parameters."""
    patients, quest, _ = parameter_tables()
    params = patients.loc[patients["Name"] == name].squeeze()
    therapy = quest.loc[quest["Name"] == name].squeeze()
    traits = {
        "age_years": float(therapy["Age"]),
        "body_weight_kg": float(params["BW"]),
        "carb_ratio_g_per_u": float(therapy["CR"]),
        "correction_factor_mgdl_per_u": float(therapy["CF"]),
        "total_daily_insulin_u": float(therapy["TDI"]),
        "basal_glucose_mgdl": float(params["Gb"]),
        "basal_insulin_pmol_l": float(params["Ib"]),
        "insulin_sensitivity_vmx": float(params["Vmx"]),
        "liver_insulin_action_kp3": float(params["kp3"]),
        "endogenous_glucose_production": float(params["EGPb"]),
        "carb_absorption_kabs": float(params["kabs"]),
    }
    assert list(traits) == list(TRAIT_COLUMNS)
    return traits


def sensor_params() -> pd.Series:
    """`simglucose`'s Dexcom noise model, sampled on our grid and clipped to the real range.

    The noise generator interpolates its 15-minute noise to the sensor's `sample_time`, so
    the sensor must be told the grid we read it on (reading a 3-minute sensor every 5 minutes
    would stretch the noise's autocorrelation).
    """
    table = parameter_tables()[2]
    params = table.loc[table["Name"] == SENSOR].squeeze().copy()
    params["sample_time"] = float(SAMPLE_MINUTES)
    params["min"], params["max"] = SENSOR_RANGE_MGDL
    return params


def seed_sequence(
    config: SimulationConfig, patient_index: int, stream: int, day: int = 0
) -> np.random.SeedSequence:
    return np.random.SeedSequence(config.seed, spawn_key=(patient_index, stream, day))


def rng(
    config: SimulationConfig, patient_index: int, stream: int, day: int = 0
) -> np.random.Generator:
    return np.random.default_rng(seed_sequence(config, patient_index, stream, day))


@dataclass
class PatientSetup:
    """Everything one patient's simulation is driven by, drawn before the first minute."""

    name: str
    index: int  # position among the 30 (part of every seed)
    total_minutes: int
    behaviour: scenario.Behaviour
    params: pd.Series  # simglucose's row for this patient
    carb_ratio: float
    correction_factor: float
    sensitivity: np.ndarray  # per minute: multiplies Vmx and kp3
    liver: np.ndarray  # per minute: multiplies kp1
    cgm_missing: np.ndarray  # per minute: sensor dropout or warm-up
    occluded: np.ndarray  # per minute: the pump delivers nothing
    meals_at: dict[int, float]  # minute -> grams eaten
    meal_bolus_grams: dict[int, float]  # minute -> counted grams to bolus for
    reactive: np.random.Generator  # treating lows, deciding corrections
    sensor_seed: int

    @property
    def n_rows(self) -> int:
        return self.total_minutes // SAMPLE_MINUTES


def check_name(name: str) -> int:
    names = patient_names()
    if name not in names:
        raise ValueError(f"unknown virtual patient {name!r}; valid: {', '.join(names)}")
    return names.index(name)


def setup_patient(name: str, config: SimulationConfig, minutes: int | None = None) -> PatientSetup:
    """Draw the behaviour and plans of `name` for `config.days` days (or the first `minutes`)."""
    index = check_name(name)
    total_minutes = config.days * scenario.MINUTES_PER_DAY if minutes is None else minutes
    total_minutes -= total_minutes % SAMPLE_MINUTES
    n_days = math.ceil(total_minutes / scenario.MINUTES_PER_DAY)

    behaviour = scenario.draw_behaviour(config, group(name), rng(config, index, BEHAVIOUR))
    plans = [
        scenario.draw_day(config, behaviour, day, rng(config, index, DAY, day))
        for day in range(n_days)
    ]
    sensitivity, liver = scenario.sensitivity_profile(config, plans, total_minutes)
    cgm_missing = scenario.interval_mask([d for p in plans for d in p.dropouts], total_minutes)
    occluded = scenario.interval_mask([o for p in plans for o in p.occlusions], total_minutes)

    patients, quest, _ = parameter_tables()
    params = patients.loc[patients["Name"] == name].squeeze()
    therapy = quest.loc[quest["Name"] == name].squeeze()

    meals_at: dict[int, float] = {}
    meal_bolus_grams: dict[int, float] = {}
    for plan in plans:
        for meal in plan.meals:
            meals_at[meal.minute] = meals_at.get(meal.minute, 0.0) + meal.grams
            if meal.bolus_minute is not None:
                meal_bolus_grams[meal.bolus_minute] = (
                    meal_bolus_grams.get(meal.bolus_minute, 0.0) + meal.estimated_grams
                )
    return PatientSetup(
        name=name,
        index=index,
        total_minutes=total_minutes,
        behaviour=behaviour,
        params=params,
        carb_ratio=float(therapy["CR"]),
        correction_factor=float(therapy["CF"]),
        sensitivity=sensitivity,
        liver=liver,
        cgm_missing=cgm_missing,
        occluded=occluded,
        meals_at=meals_at,
        meal_bolus_grams=meal_bolus_grams,
        reactive=rng(config, index, REACTIVE),
        sensor_seed=int(seed_sequence(config, index, SENSOR_STREAM).generate_state(1)[0]),
    )


def basal_rate(setup: PatientSetup) -> float:
    """The programmed basal (U/min): the model's steady-state basal times the patient's habit."""
    return (
        float(setup.params["u2ss"])
        * float(setup.params["BW"])
        / 6000.0
        * setup.behaviour.basal_factor
    )


def patient_frame(
    setup: PatientSetup,
    config: SimulationConfig,
    cgm: np.ndarray,
    bg: np.ndarray,
    cho: np.ndarray,
    insulin: np.ndarray,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The 5-minute table (synthetic) of one patient and its behaviour parameters."""
    name = setup.name
    if not np.isfinite(bg).all():  # never data: an engine that let one through is wrong
        raise SimulationError(f"simulation of {name} produced a non-finite blood glucose")
    start = datetime.fromisoformat(config.start)
    frame = pd.DataFrame(
        {
            "patient_id": patient_id(name),
            "group": group(name),
            "time": pd.to_datetime(
                [start + timedelta(minutes=SAMPLE_MINUTES * i) for i in range(setup.n_rows)]
            ),
            "cgm": np.round(cgm),
            "bg": np.round(bg, 2),
            "cho": np.round(cho, 1),
            "insulin": np.round(insulin, 4),
        }
    )
    for trait, value in patient_traits(name).items():
        frame[trait] = value
    info = {"simglucose_name": name, "behaviour": asdict(setup.behaviour)}
    return frame, info
