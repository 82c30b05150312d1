"""Daily life of a synthetic virtual patient: meals, boluses, exercise, illness, sensor gaps.

The UVA/Padova model in `simglucose` only simulates physiology; with its plain scenario
(perfect carb counting, every bolus on time) few patients ever go low. Hypo- and
hyperglycaemia in real life come from behaviour, so this module draws it: carb-counting
errors, missed and late boluses, exercise and illness that change insulin sensitivity,
pump occlusions (an infusion set that delivers nothing for hours) and sensor dropouts.
Everything here is *synthetic*; docs/simulation.md documents each number.

Each day is drawn from its own random stream (seed, patient, day), so simulating the first
hours of a patient gives exactly the first hours of the full simulation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tailorml.config import SimulationConfig

MINUTES_PER_DAY = 24 * 60
NIGHT_START_HOUR = 23
NIGHT_END_HOUR = 7


@dataclass(frozen=True)
class Behaviour:
    """Habits fixed for one patient over the whole simulation."""

    carb_bias: float  # multiplies every carb estimate (<1: the patient under-counts)
    basal_factor: float  # programmed basal relative to the model's steady-state basal
    correction_gain: float  # how aggressively high glucose is corrected (>1: over-corrects)
    meal_scale: float  # age-group meal size relative to an adult


@dataclass(frozen=True)
class Meal:
    minute: int  # minutes since the start of the simulation
    grams: float  # carbohydrate actually eaten
    estimated_grams: float  # what the patient counted and bolused for
    bolus_minute: int | None  # None: the bolus was forgotten


@dataclass
class DayPlan:
    meals: list[Meal] = field(default_factory=list)
    exercise: list[tuple[int, int]] = field(default_factory=list)  # [start, end) minutes
    illness_days: int = 0  # an illness starting this day lasts this many days (0: none)
    occlusions: list[tuple[int, int]] = field(default_factory=list)  # pump delivers nothing
    dropouts: list[tuple[int, int]] = field(default_factory=list)  # CGM missing [start, end)


def draw_behaviour(config: SimulationConfig, group: str, rng: np.random.Generator) -> Behaviour:
    scale = {"child": config.child_meal_scale, "adolescent": config.adolescent_meal_scale}
    return Behaviour(
        carb_bias=float(np.exp(rng.normal(0.0, config.carb_count_bias_sd))),
        basal_factor=float(rng.uniform(*config.basal_factor_range)),
        correction_gain=float(rng.uniform(*config.correction_gain_range)),
        meal_scale=scale.get(group, 1.0),
    )


def draw_day(
    config: SimulationConfig, behaviour: Behaviour, day: int, rng: np.random.Generator
) -> DayPlan:
    """Plan one day. Only `rng` is random, so the plan of day d never depends on other days."""
    offset = day * MINUTES_PER_DAY
    plan = DayPlan()
    for meal_plan in config.meals.values():
        happens = rng.random() < meal_plan.probability
        hour = rng.normal(meal_plan.hour, meal_plan.hour_sd)
        grams = rng.normal(meal_plan.grams, meal_plan.grams_sd) * behaviour.meal_scale
        count_error = np.exp(rng.normal(0.0, config.carb_count_error_sd))
        missed = rng.random() < config.missed_bolus_probability
        late = rng.random() < config.late_bolus_probability
        delay = int(rng.integers(config.late_bolus_minutes[0], config.late_bolus_minutes[1] + 1))
        if not happens:
            continue
        minute = offset + int(np.clip(round(hour * 60), 0, MINUTES_PER_DAY - 1))
        grams = float(max(grams, 5.0))
        estimate = grams * behaviour.carb_bias * count_error
        bolus_minute = None if missed else minute + (delay if late else 0)
        plan.meals.append(Meal(minute, round(grams, 1), round(float(estimate), 1), bolus_minute))
    plan.meals.sort(key=lambda meal: meal.minute)

    if rng.random() < config.exercise_per_week / 7.0:
        start_hour = rng.choice([7.0, 12.5, 17.5]) + rng.uniform(0.0, 1.5)
        length = int(rng.integers(config.exercise_minutes[0], config.exercise_minutes[1] + 1))
        start = offset + int(start_hour * 60)
        plan.exercise.append((start, start + length))

    if rng.random() < config.illness_probability_per_day:
        plan.illness_days = int(rng.integers(config.illness_days[0], config.illness_days[1] + 1))

    occlusion_start = offset + int(rng.integers(0, MINUTES_PER_DAY))
    occlusion_length = int(rng.uniform(*config.occlusion_hours) * 60)
    if rng.random() < config.occlusion_per_week / 7.0:
        plan.occlusions.append((occlusion_start, occlusion_start + occlusion_length))

    for _ in range(int(rng.poisson(config.dropout_per_day))):
        start = offset + int(rng.integers(0, MINUTES_PER_DAY))
        length = int(rng.integers(config.dropout_minutes[0], config.dropout_minutes[1] + 1))
        plan.dropouts.append((start, start + length))
    if day > 0 and day % config.sensor_change_days == 0 and config.sensor_warmup_minutes > 0:
        start = offset + int(rng.integers(8 * 60, 20 * 60))
        plan.dropouts.append((start, start + config.sensor_warmup_minutes))
    return plan


def sensitivity_profile(
    config: SimulationConfig, plans: list[DayPlan], total_minutes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Multipliers for every simulated minute (1 = the model's own): insulin sensitivity
    (raised by exercise, lowered by illness) and liver glucose output (raised by illness,
    as stress hormones do)."""
    profile = np.ones(total_minutes)
    liver = np.ones(total_minutes)
    post_minutes = int(config.post_exercise_hours * 60)
    for day, plan in enumerate(plans):
        for start, end in plan.exercise:
            after = slice(min(end, total_minutes), min(end + post_minutes, total_minutes))
            profile[after] = np.maximum(profile[after], config.post_exercise_sensitivity)
            during = slice(min(start, total_minutes), min(end, total_minutes))
            profile[during] = np.maximum(profile[during], config.exercise_sensitivity)
        if plan.illness_days:
            start = day * MINUTES_PER_DAY
            ill = slice(start, min(start + plan.illness_days * MINUTES_PER_DAY, total_minutes))
            profile[ill] = np.minimum(profile[ill], config.illness_sensitivity)
            liver[ill] = config.illness_liver_glucose
    return profile, liver


def interval_mask(intervals: list[tuple[int, int]], total_minutes: int) -> np.ndarray:
    """True for every minute inside one of the [start, end) intervals."""
    mask = np.zeros(total_minutes, dtype=bool)
    for start, end in intervals:
        mask[min(start, total_minutes) : min(end, total_minutes)] = True
    return mask


def is_night(minute: int) -> bool:
    hour = (minute % MINUTES_PER_DAY) / 60.0
    return hour >= NIGHT_START_HOUR or hour < NIGHT_END_HOUR
