"""The batched engine: many virtual patients simulated together, minute by minute.

`simulate.simulate_patient` (the reference engine) steps one simglucose `T1DPatient` at a
time; a population study of a thousand patients over months would take hours that way,
because every minute of every patient pays Python's overhead around a 13-equation ODE.
Here the whole cohort is one state array: each minute, the behaviour (meals, boluses,
treating lows, corrections, pump, sensor) is decided for all patients with array
operations, and one call of the batched integrator (`dopri5`, the same steps and step-size
rules as scipy's, column by column) advances every patient's UVA/Padova model
(`uva_padova`, simglucose's equations in simglucose's order).

The inputs are the reference engine's own (`virtual_patient.setup_patient`), the random
streams are the same streams consumed in the same order, and the sensor noise comes from
simglucose's generator with the same seed, so the output is the reference engine's cohort
up to floating-point rounding (tests and benchmarks/bench_batched_simulation.py measure the
difference). All data is synthetic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tailorml.config import SimulationConfig
from tailorml.data import dopri5, scenario, uva_padova
from tailorml.data.virtual_patient import (
    CORRECTION_CHECK_MINUTES,
    CORRECTION_WAIT_MINUTES,
    METER_BOLUS_ABOVE_MGDL,
    NOTICE_BELOW_MGDL,
    PUMP,
    SAMPLE_MINUTES,
    SENSOR_RANGE_MGDL,
    SEVERE_HYPO_MGDL,
    SYMPTOM_HYPO_MGDL,
    PatientSetup,
    basal_rate,
    patient_frame,
    sensor_params,
    setup_patient,
    simglucose,
)
from tailorml.errors import SimulationError

EAT_RATE_G_PER_MIN = 5.0  # T1DPatient.EAT_RATE: an announced meal is eaten at 5 g/min
_NEVER = -(10**9)
_R = uva_padova.ROWS


class _Draws:
    """Each patient's reactive stream, drawn ahead in blocks.

    A NumPy Generator's doubles do not depend on how many are asked for at once, and
    `uniform(a, b)` is `a + (b - a) * random()`: taking them from a block in the reference
    engine's order gives the reference engine's numbers."""

    def __init__(self, generators: Sequence[np.random.Generator]) -> None:
        self._generators = list(generators)
        n = len(self._generators)
        self._block = np.empty((n, 0))
        self._pos = np.zeros(n, dtype=np.int64)
        self._len = np.zeros(n, dtype=np.int64)

    def reserve(self, count: int) -> None:
        """Make at least `count` further draws available to every patient."""
        rows = [
            np.concatenate([self._block[i, self._pos[i] : self._len[i]], g.random(count)])
            for i, g in enumerate(self._generators)
        ]
        self._len = np.array([len(row) for row in rows], dtype=np.int64)
        self._block = np.full((len(rows), int(self._len.max())), np.nan)
        for i, row in enumerate(rows):
            self._block[i, : len(row)] = row
        self._pos[:] = 0

    def take(self, who: np.ndarray | None = None) -> np.ndarray:
        """The next draw of every patient (or of the patients indexed by `who`)."""
        who = np.arange(len(self._pos)) if who is None else who
        if np.any(self._pos[who] >= self._len[who]):  # reserve() was not asked for enough
            raise RuntimeError("internal error: reactive draws exhausted")
        values = self._block[who, self._pos[who]]
        self._pos[who] += 1
        return values


class _Cohort:
    """The vectorized state of every patient: model, meal memory, controller, outputs."""

    def __init__(self, setups: list[PatientSetup], config: SimulationConfig) -> None:
        """`config` supplies the behaviour's thresholds and probabilities (one for all)."""
        sg = simglucose()
        self.setups, self.config = setups, config
        n = len(setups)
        table = pd.DataFrame([setup.params for setup in setups])
        self.rows = uva_padova.parameter_rows(table)
        self.x = uva_padova.initial_state(table)
        self.base_vmx = self.rows[_R["Vmx"]].copy()
        self.base_kp3 = self.rows[_R["kp3"]].copy()
        self.base_kp1 = self.rows[_R["kp1"]].copy()
        self.pump = sg.InsulinPump.withName(PUMP)
        self.basal = np.array([self.pump.basal(basal_rate(setup)) for setup in setups])
        self.carb_ratio = np.array([setup.carb_ratio for setup in setups])
        self.correction_factor = np.array([setup.correction_factor for setup in setups])
        self.correction_gain = np.array([setup.behaviour.correction_gain for setup in setups])
        self.noise = [sg.CGMNoise(sensor_params(), seed=setup.sensor_seed) for setup in setups]
        self.draws = _Draws([setup.reactive for setup in setups])
        self.meals = [_events(setup.meals_at) for setup in setups]
        self.boluses = [_events(setup.meal_bolus_grams) for setup in setups]

        # T1DPatient.step's meal memory
        self.planned = np.zeros(n)
        self.last_eaten = np.zeros(n)
        self.last_qsto = self.x[0] + self.x[1]
        self.last_foodtaken = np.zeros(n)
        self.eating = np.zeros(n, dtype=bool)
        # the behaviour's memory (simulate_patient's locals)
        self.last_cgm = table["Gb"].to_numpy(dtype=float)
        self.last_bolus = np.full(n, _NEVER, dtype=np.int64)
        self.last_treatment = np.full(n, _NEVER, dtype=np.int64)
        self.last_correction_check = np.full(n, _NEVER, dtype=np.int64)
        self.treatment_grams = np.zeros(n)
        self.correction_units = np.zeros(n)
        self.carbs_acc = np.zeros(n)
        self.insulin_acc = np.zeros(n)
        # outputs, one row per 5-minute reading
        n_rows = setups[0].n_rows
        self.cgm, self.bg = np.empty((n, n_rows)), np.empty((n, n_rows))
        self.cho, self.insulin = np.zeros((n, n_rows)), np.zeros((n, n_rows))

    def load(self, start: int, end: int) -> None:
        """Per-minute inputs of minutes [start, end) as (patients, minutes) arrays."""
        self.start = start
        self.sensitivity = np.stack([s.sensitivity[start:end] for s in self.setups])
        self.liver = np.stack([s.liver[start:end] for s in self.setups])
        self.missing = np.stack([s.cgm_missing[start:end] for s in self.setups])
        self.occluded = np.stack([s.occluded[start:end] for s in self.setups])
        self.meal_grams = _grid(self.meals, start, end)
        self.bolus_grams = _grid(self.boluses, start, end)
        self.has_bolus = _grid(self.boluses, start, end, present=True)
        first = -(-start // SAMPLE_MINUTES) * SAMPLE_MINUTES
        readings = len(range(first, end, SAMPLE_MINUTES))
        self.noise_block = np.array(
            [[next(stream) for _ in range(readings)] for stream in self.noise]
        ).reshape(len(self.setups), readings)
        self.next_noise = 0
        self.draws.reserve(3 * readings)  # at most 3 draws per reading

    def reading(self, minute: int) -> None:
        """The 5-minute reading and the decisions taken on it (simulate_patient's block)."""
        config, j = self.config, minute - self.start
        row = minute // SAMPLE_MINUTES
        true_bg = uva_padova.subcutaneous_glucose(self.x, self.rows)
        noisy = true_bg + self.noise_block[:, self.next_noise]
        self.next_noise += 1
        reading = np.minimum(np.maximum(noisy, SENSOR_RANGE_MGDL[0]), SENSOR_RANGE_MGDL[1])
        missing = self.missing[:, j]
        self.bg[:, row] = true_bg
        self.cgm[:, row] = np.where(missing, np.nan, reading)
        self.cho[:, row], self.insulin[:, row] = self.carbs_acc, self.insulin_acc
        self.carbs_acc, self.insulin_acc = np.zeros_like(true_bg), np.zeros_like(true_bg)
        self.last_cgm = np.where(missing, self.last_cgm, reading)
        seen = np.where(missing, true_bg, self.last_cgm)

        draw = self.draws.take()
        low, high = config.hypo_treatment_grams
        grams = low + (high - low) * self.draws.take()
        asleep = scenario.is_night(minute) & (true_bg >= SYMPTOM_HYPO_MGDL)
        felt = np.where(
            asleep, config.hypo_notice_probability_night, config.hypo_notice_probability_day
        )
        notice = np.where(
            true_bg < SEVERE_HYPO_MGDL, 1.0, np.where(seen < NOTICE_BELOW_MGDL, felt, 0.0)
        )
        treat = ((minute - self.last_treatment) >= config.hypo_retreat_minutes) & (draw < notice)
        for i in np.flatnonzero(treat):
            self.treatment_grams[i] = round(float(grams[i]), 1)
            self.last_treatment[i] = minute

        check = (
            (seen > config.correction_threshold_mgdl)
            & (minute - self.last_bolus >= CORRECTION_WAIT_MINUTES)
            & (minute - self.last_correction_check >= CORRECTION_CHECK_MINUTES)
        )
        if check.any():
            who = np.flatnonzero(check)
            self.last_correction_check[who] = minute
            yes = who[self.draws.take(who) < config.correction_probability]
            self.correction_units[yes] = (
                self.correction_gain[yes]
                * (seen[yes] - config.bolus_target_mgdl)
                / self.correction_factor[yes]
            )

    def step(self, minute: int) -> None:
        """Carbs and insulin of this minute, then one minute of the model for everyone."""
        config, j = self.config, minute - self.start
        carbs_now = self.meal_grams[:, j] + self.treatment_grams
        bolus_units = self.correction_units.copy()
        bolusing = np.flatnonzero(self.has_bolus[:, j])
        if bolusing.size:
            bolus_units[bolusing] += self.bolus_grams[bolusing, j] / self.carb_ratio[bolusing]
            high = bolusing[self.last_cgm[bolusing] > METER_BOLUS_ABOVE_MGDL]
            bolus_units[high] += (
                self.last_cgm[high] - config.bolus_target_mgdl
            ) / self.correction_factor[high]
        self.last_bolus[bolus_units > 0] = minute
        self.treatment_grams[:] = 0.0
        self.correction_units[:] = 0.0
        rate = self.basal.copy()
        for i in np.flatnonzero(bolus_units != 0):  # a bolus takes one minute
            rate[i] = self.basal[i] + self.pump.bolus(bolus_units[i])
        rate[self.occluded[:, j]] = 0.0

        eaten = self._eat(carbs_now)
        rows = self.rows
        rows[_R["Vmx"]] = self.base_vmx * self.sensitivity[:, j]
        rows[_R["kp3"]] = self.base_kp3 * self.sensitivity[:, j]
        rows[_R["kp1"]] = self.base_kp1 * self.liver[:, j]
        uva_padova.set_inputs(rows, eaten, rate, self.last_qsto, self.last_foodtaken)
        try:
            self.x = dopri5.integrate(
                uva_padova.derivatives, self.x, rows, float(minute), float(minute + 1)
            )
        except dopri5.IntegrationError as error:
            names = ", ".join(self.setups[i].name for i in error.columns)
            raise SimulationError(
                f"simulation of {names} failed at minute {minute} (day {minute // 1440 + 1}):"
                f" {error}; the [simulation] scenario drives the model out of its range"
            ) from None
        self.carbs_acc = self.carbs_acc + carbs_now
        self.insulin_acc = self.insulin_acc + rate

    def _eat(self, carbs_now: np.ndarray) -> np.ndarray:
        """T1DPatient.step's meal handling: announced carbs are eaten at 5 g/min, and the
        stomach content at the start of a meal is remembered (it shapes gastric emptying)."""
        self.planned = self.planned + carbs_now
        eaten = np.where(self.planned > 0, np.minimum(EAT_RATE_G_PER_MIN, self.planned), 0.0)
        left = np.maximum(0.0, self.planned - eaten)
        self.planned = np.where(self.planned > 0, left, self.planned)
        starts = (eaten > 0) & (self.last_eaten <= 0)
        self.last_qsto = np.where(starts, self.x[0] + self.x[1], self.last_qsto)
        self.last_foodtaken = np.where(starts, 0.0, self.last_foodtaken)
        self.eating |= starts
        self.last_foodtaken = np.where(
            self.eating, self.last_foodtaken + eaten, self.last_foodtaken
        )
        self.eating &= ~((eaten <= 0) & (self.last_eaten > 0))
        self.last_eaten = eaten
        return eaten


def _events(by_minute: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    minutes = np.array(sorted(by_minute), dtype=np.int64)
    return minutes, np.array([by_minute[m] for m in minutes], dtype=float)


def _grid(
    events: list[tuple[np.ndarray, np.ndarray]], start: int, end: int, present: bool = False
) -> np.ndarray:
    """(patients, minutes) array of event values (or of True where there is an event)."""
    grid = np.zeros((len(events), end - start), dtype=bool if present else float)
    for i, (minutes, values) in enumerate(events):
        lo, hi = np.searchsorted(minutes, [start, end])
        grid[i, minutes[lo:hi] - start] = True if present else values[lo:hi]
    return grid


def simulate_patients(
    names: Sequence[str],
    config: SimulationConfig,
    minutes: int | None = None,
    on_day_done: Callable[[int], None] | None = None,
) -> list[tuple[pd.DataFrame, dict[str, Any]]]:
    """Simulate `names` together for `config.days` days (or the first `minutes`).

    Returns, per patient and in order, what `simulate.simulate_patient` returns: the
    5-minute table (synthetic) and the behaviour parameters. `on_day_done(n)` is called
    after each simulated day with the number of patient-days it completed.
    """
    setups = [setup_patient(name, config, minutes) for name in names]
    return simulate_setups(setups, config, on_day_done)


def simulate_setups(
    setups: Sequence[PatientSetup],
    config: SimulationConfig,
    on_day_done: Callable[[int], None] | None = None,
) -> list[tuple[pd.DataFrame, dict[str, Any]]]:
    """`simulate_patients` from setups drawn beforehand (all of the same length); a study
    can draw each setup with its own scenario (e.g. its own seed)."""
    setups = list(setups)
    if not setups:
        return []
    total = setups[0].total_minutes
    if any(setup.total_minutes != total for setup in setups):
        raise ValueError("simulate_setups: every setup must cover the same minutes")
    cohort = _Cohort(setups, config)
    for start in range(0, total, scenario.MINUTES_PER_DAY):
        end = min(total, start + scenario.MINUTES_PER_DAY)
        cohort.load(start, end)
        for minute in range(start, end):
            if minute % SAMPLE_MINUTES == 0:
                cohort.reading(minute)
            cohort.step(minute)
        if on_day_done:
            on_day_done(len(setups))
    return [
        patient_frame(setup, config, cohort.cgm[i], cohort.bg[i], cohort.cho[i], cohort.insulin[i])
        for i, setup in enumerate(setups)
    ]
