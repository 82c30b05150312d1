"""Typed configuration: defaults live here, TOML files override them.

Why pydantic: it already does what a hand-written validator would (reject unknown keys,
check types, report the dotted path of the offending key), and its models serialise back
to plain dicts for the resolved config that every run stores.
"""

from __future__ import annotations

import json
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import tomlkit
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tailorml.errors import ConfigError
from tailorml.io import safe_component


class _Section(BaseModel):
    """Every section: unknown keys rejected, no type coercion, and no float field anywhere
    in the config accepts inf or nan (a non-finite hyper-parameter is always a mistake)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, validate_assignment=True, allow_inf_nan=False
    )


PositiveInt = Annotated[int, Field(ge=1)]
# a name that becomes a directory name: refused (not rewritten) unless it is a safe one
FileName = Annotated[str, AfterValidator(lambda name: safe_component(name, "name"))]


class MealPlan(_Section):
    """One daily meal: when (hours after midnight), how likely, and how big (grams of carbs)."""

    hour: float = Field(ge=0, lt=24)
    hour_sd: float = Field(ge=0)
    probability: float = Field(ge=0, le=1)
    grams: float = Field(gt=0)
    grams_sd: float = Field(ge=0)


def _default_meals() -> dict[str, MealPlan]:
    return {
        "breakfast": MealPlan(hour=7.5, hour_sd=0.75, probability=0.95, grams=45, grams_sd=12),
        "lunch": MealPlan(hour=12.75, hour_sd=0.75, probability=0.97, grams=65, grams_sd=18),
        "dinner": MealPlan(hour=19.0, hour_sd=1.0, probability=0.99, grams=75, grams_sd=20),
        "snack": MealPlan(hour=16.0, hour_sd=1.5, probability=0.5, grams=20, grams_sd=8),
        "late_snack": MealPlan(hour=22.0, hour_sd=0.75, probability=0.25, grams=20, grams_sd=8),
    }


class SimulationConfig(_Section):
    """Scenario of the synthetic (simulated) virtual cohort; every number is documented in
    docs/simulation.md with the behaviour it models."""

    days: int = Field(default=14, ge=1, le=365)
    seed: int = 20261122
    start: str = "2025-01-06T00:00:00"

    @field_validator("start")
    @classmethod
    def _iso_start(cls, start: str) -> str:
        """The simulator reads it with datetime.fromisoformat: check it here, not after
        the cohort command has started."""
        try:
            datetime.fromisoformat(start)
        except ValueError:
            raise ValueError(
                f"start {start!r} is not an ISO 8601 date-time like 2025-01-06T00:00:00"
            ) from None
        return start

    patients: list[str] = Field(default_factory=list, description="empty = all 30")
    # batched: all patients as one vectorized ODE (docs/simulation.md); reference: one
    # simglucose T1DPatient per patient (made the shipped cohort)
    engine: Literal["batched", "reference"] = "batched"
    meals: dict[str, MealPlan] = Field(default_factory=_default_meals)
    child_meal_scale: float = Field(default=0.6, gt=0)
    adolescent_meal_scale: float = Field(default=1.0, gt=0)
    carb_count_error_sd: float = Field(default=0.3, ge=0)
    carb_count_bias_sd: float = Field(default=0.2, ge=0)
    missed_bolus_probability: float = Field(default=0.12, ge=0, le=1)
    late_bolus_probability: float = Field(default=0.2, ge=0, le=1)
    late_bolus_minutes: tuple[int, int] = (20, 90)
    bolus_target_mgdl: float = Field(default=140, gt=0)
    correction_threshold_mgdl: float = Field(default=250, gt=0)
    correction_probability: float = Field(default=0.4, ge=0, le=1)
    correction_gain_range: tuple[float, float] = (0.8, 1.5)
    basal_factor_range: tuple[float, float] = (0.95, 1.2)
    hypo_treatment_grams: tuple[float, float] = (10.0, 25.0)
    hypo_notice_probability_day: float = Field(default=0.9, ge=0, le=1)
    hypo_notice_probability_night: float = Field(default=0.5, ge=0, le=1)
    hypo_retreat_minutes: int = Field(default=20, ge=3)
    exercise_per_week: float = Field(default=3.0, ge=0)
    exercise_minutes: tuple[int, int] = (30, 75)
    exercise_sensitivity: float = Field(default=2.0, ge=1)
    post_exercise_sensitivity: float = Field(default=1.4, ge=1)
    post_exercise_hours: float = Field(default=8.0, ge=0)
    illness_probability_per_day: float = Field(default=0.07, ge=0, le=1)
    illness_days: tuple[int, int] = (1, 3)
    illness_sensitivity: float = Field(default=0.5, gt=0, le=1)
    illness_liver_glucose: float = Field(default=1.25, ge=1)
    occlusion_per_week: float = Field(default=1.0, ge=0)
    occlusion_hours: tuple[float, float] = (3.0, 8.0)
    dropout_per_day: float = Field(default=0.3, ge=0)
    dropout_minutes: tuple[int, int] = (15, 120)
    sensor_change_days: int = Field(default=10, ge=1)
    sensor_warmup_minutes: int = Field(default=120, ge=0)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> SimulationConfig:
        for name in (
            "late_bolus_minutes",
            "correction_gain_range",
            "basal_factor_range",
            "hypo_treatment_grams",
            "exercise_minutes",
            "illness_days",
            "occlusion_hours",
            "dropout_minutes",
        ):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: lower bound {low} is above upper bound {high}")
        return self


class TaskConfig(_Section):
    """The glucose-alert task: which inputs, which horizon, which thresholds."""

    window_minutes: int = Field(default=120, gt=0)
    horizon_minutes: int = Field(default=30, gt=0)
    hypo_mgdl: float = Field(default=70, gt=0)
    hyper_mgdl: float = Field(default=250, gt=0)
    channels: list[Literal["cgm", "insulin", "cho", "iob", "cob"]] = Field(
        default_factory=lambda: ["cgm"],
        description="model inputs: cgm, and optionally insulin / cho (as recorded) or iob / cob "
        "(insulin and carbs on board, derived from them)",
    )
    stride: int = Field(default=1, ge=1, description="windows start every `stride` readings")

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        if self.hypo_mgdl >= self.hyper_mgdl:
            raise ValueError("hypo_mgdl must be below hyper_mgdl")
        if "cgm" not in self.channels:
            raise ValueError("channels must include 'cgm'")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels must not repeat")
        return self


class SplitConfig(_Section):
    """Chronological per-individual split; the gap keeps any window from straddling parts."""

    train: float = Field(default=0.6, gt=0, lt=1)
    val: float = Field(default=0.2, ge=0, lt=1)
    test: float = Field(default=0.2, gt=0, lt=1)
    gap_minutes: int | None = Field(
        default=None, description="unset = window + horizon (the minimum that prevents leakage)"
    )

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class ModelConfig(_Section):
    """The compact 1-D CNN (kept under 20k parameters so int8 weights fit an STM32F4), or
    the HE-friendly model a CKKS server can evaluate on encrypted windows (docs/privacy.md)."""

    architecture: Literal["cnn", "he_friendly"] = Field(
        default="cnn",
        description="cnn: conv-ReLU-maxpool blocks (the wearable's model); he_friendly: one "
        "conv, x² activations, average pooling (encrypted inference, tailorml.privacy)",
    )
    conv_channels: list[PositiveInt] = Field(default_factory=lambda: [16, 32, 32], min_length=1)
    kernel_size: int = Field(default=5, ge=1)
    hidden: int = Field(
        default=32, ge=0, description="hidden linear units (he_friendly: 0 = none, 2 fewer levels)"
    )
    pool: int = Field(default=2, ge=1, description="he_friendly: average-pooling size")
    activation: Literal["square", "relu_poly"] = Field(
        default="square",
        description="he_friendly: x², or relu_poly (ReLU's quadratic least-squares fit on "
        "[-4, 4]); both cost one CKKS level",
    )
    cgm_levels: list[float] = Field(
        default_factory=list,
        description="he_friendly: glucose levels k (mg/dL, increasing, 40–400) at which a fixed "
        "input encoding adds the channel max(k − CGM, 0); the client computes it before "
        "encrypting, so the quadratic network reads a level as ReLU would (models.levels)",
    )
    max_parameters: int = Field(default=20_000, gt=0)

    @model_validator(mode="after")
    def _architecture_fits(self) -> ModelConfig:
        if self.architecture == "cnn" and self.hidden < 1:
            raise ValueError("hidden = 0 is for architecture = 'he_friendly'; the cnn needs >= 1")
        if self.cgm_levels and self.architecture != "he_friendly":
            raise ValueError(
                "cgm_levels is the he_friendly model's input encoding; remove it for "
                "architecture = 'cnn' (ReLU reads levels itself)"
            )
        levels = self.cgm_levels
        if any(not 40 <= level <= 400 for level in levels) or levels != sorted(set(levels)):
            raise ValueError(
                f"cgm_levels = {levels} must be strictly increasing glucose levels in mg/dL "
                "between 40 and 400, e.g. [75, 85, 95, 110, 140]"
            )
        if self.architecture == "he_friendly" and len(self.conv_channels) != 1:
            raise ValueError(
                f"architecture = 'he_friendly' has one convolution (each layer costs CKKS "
                f"depth), got conv_channels = {self.conv_channels}; set e.g. conv_channels = [4]"
            )
        return self


class TrainConfig(_Section):
    """THE recipe of the predefined (global) model, used by `tailorml train`/`demo`, by
    experiments (their global models and every method trained from scratch) and by soft
    personalization; see `tailorml.recipe`. `seed` and `threads` are the job's."""

    epochs: int = Field(default=10, ge=1, description="epochs over D_G")
    window_stride: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="the predefined model trains on every k-th training window (neighbouring "
        "windows share all but one reading: a long real cohort trains in minutes, not hours); "
        "validation and test always use every window",
    )
    batch_size: int = Field(default=256, ge=1)
    learning_rate: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    class_weighting: Literal["balanced", "none"] = "balanced"
    robust: Literal["none", "pgd", "ibp", "crown-ibp"] = Field(
        default="none",
        description="train the global model against robust.eps sensor error (certified: ibp, "
        "crown-ibp; adversarial: pgd)",
    )
    sparsity: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="share of the global model pruned away during training, in [0, 1); 0 = dense "
        "(structured: share of parameters the compacted model saves; else: of prunable weights)",
    )
    structured: bool = Field(
        default=True,
        description="with sparsity: prune whole channels and save the compacted, physically "
        "smaller network (true), or zero single weights and keep the shape (false)",
    )
    checkpoint_by: Literal["balanced_accuracy", "alerts"] = Field(
        default="alerts",
        description="`tailorml train`: which validation score picks the best epoch — balanced "
        "accuracy of the decisions, or alerts: early sensitivity at the operating point "
        "chosen for the false-alert budget (what a quiet alarm needs)",
    )
    distill_from: str = Field(
        default="",
        description="`tailorml train` only: a teacher's model.pt (a `tailorml train` run of "
        "the same cohort and split); the loss mixes in its softened probabilities "
        "(knowledge distillation, tailorml.models.distill); empty = none",
    )
    distill_weight: float = Field(
        default=0.5, ge=0, le=1, description="share of the teacher's soft term in the loss"
    )
    distill_temperature: float = Field(
        default=2.0, gt=0, description="softmax temperature of teacher and student"
    )
    early_weight: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="`tailorml train` only: extra weight in the loss on the hypo windows whose "
        "low begins at least alerts.useful_lead_minutes ahead (the lows a quiet alarm must "
        "announce early); such a window counts 1 + early_weight times; 0 = the plain loss",
    )
    group_dro_eta: float = Field(
        default=0.0,
        ge=0,
        description="the predefined model (`tailorml train`/`demo`, an experiment's global "
        "models): > 0 trains it with group DRO over the cohort's groups (age group), raising "
        "the weight of the group with the larger loss at this step size after every batch, "
        "so the worst group's loss is what training lowers; 0 = the plain loss",
    )
    seed: int = Field(default=0, description="`tailorml train`: initialisation and batch order")
    threads: int = Field(default=2, ge=1, description="torch threads of train/personalize/certify")

    @model_validator(mode="after")
    def _one_replacement_loss(self) -> TrainConfig:
        """Group DRO, robust training and distillation each replace the batch loss; two at
        once would fail at the first training step, after the data were prepared."""
        if self.group_dro_eta > 0 and self.robust != "none":
            raise ValueError(
                f"group_dro_eta = {self.group_dro_eta:g} with robust = {self.robust!r}: each "
                "replaces the batch loss; set group_dro_eta = 0 or robust = 'none'"
            )
        if self.group_dro_eta > 0 and self.distill_from:
            raise ValueError(
                f"group_dro_eta = {self.group_dro_eta:g} with distill_from: each replaces the "
                "batch loss; set group_dro_eta = 0 or distill_from = ''"
            )
        if self.early_weight > 0:
            others = {
                "robust": self.robust != "none",
                "group_dro_eta": self.group_dro_eta > 0,
                "distill_from": bool(self.distill_from),
            }
            clash = [name for name, used in others.items() if used]
            if clash:
                raise ValueError(
                    f"early_weight = {self.early_weight:g} with {clash[0]}: each replaces the "
                    f"batch loss; set early_weight = 0 or turn {clash[0]} off"
                )
        return self


def threshold_grid() -> list[float]:
    """The alert thresholds an operating point is chosen from: 0.02 to 0.88 in steps of 0.02,
    0.90 to 0.99 in steps of 0.01 (where the quiet operating points of a class-balanced
    model lie: on real people one 0.02 step moved false alerts by 0.2 a day), then ever
    closer to 1 (a well-separated model's quiet operating points lie far above 0.95, so a
    grid ending there leaves every quiet choice stuck at its edge)."""
    coarse = [round(0.02 * k, 2) for k in range(1, 45)]
    fine = [round(0.9 + 0.01 * k, 2) for k in range(10)]
    return [*coarse, *fine, 0.995, 0.998, 0.999, 0.9995, 0.9998, 0.9999]


class AlertConfig(_Section):
    """How predictions become hypo alerts and how hypo events are defined (consensus: CGM
    below 70 mg/dL for at least 15 min; an event ends after 15 min at or above 70)."""

    operating_point: Literal["validation", "fixed"] = Field(
        default="validation",
        description="validation: the predefined model's threshold is chosen on the validation "
        "parts (at most max_false_alerts_per_day, most events alerted useful_lead_minutes "
        "ahead); fixed: probability_threshold as given",
    )
    max_false_alerts_per_day: float = Field(
        default=1.0, gt=0, description="the false-alert budget of the chosen operating point"
    )
    probability_threshold: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="the alert threshold when operating_point = fixed (or no validation data)",
    )
    personal_prior_days: float = Field(
        default=7.0,
        ge=0,
        description="a personal threshold (set from a person's first days, `tailorml lodo`, "
        "the train report) counts the population's false-alert rate as this many days of "
        "the person's own data; 0 = their days alone",
    )
    snooze_minutes: int = Field(default=30, ge=0)
    event_min_minutes: int = Field(default=15, ge=0)
    event_end_minutes: int = Field(default=15, ge=0)
    useful_lead_minutes: int = Field(
        default=15, ge=0, description="an alert at least this far ahead of a low is useful"
    )
    # What a decision needs and what no model may silence (docs/alerts.md).
    urgent_low_mgdl: float = Field(
        default=55.0,
        ge=40,
        lt=70,
        description="CGM at or below this (or below the hypo threshold and falling) alarms at "
        "once, whatever the model says and outside the snooze",
    )
    hysteresis: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="an alert stays on until P(hypo) falls this far below the threshold (no "
        "on/off flicker around it)",
    )
    realert_drop_mgdl: float = Field(
        default=10.0,
        gt=0,
        description="a snoozed hypo alert sounds again once CGM fell this "
        "much below the reading of the last alert",
    )
    stale_minutes: int = Field(
        default=15, gt=0, description="the newest reading older than this is stale (Nightscout)"
    )
    stale_alarm_minutes: int = Field(
        default=30, gt=0, description="no reading for this long is itself an alarm (Nightscout)"
    )
    future_minutes: int = Field(
        default=5,
        ge=0,
        le=60,
        description="a reading dated further ahead of the server's clock is stored but not "
        "decided (a phone with a wrong clock)",
    )

    @model_validator(mode="after")
    def _stale_ordered(self) -> AlertConfig:
        if self.stale_minutes > self.stale_alarm_minutes:
            raise ValueError("stale_minutes must be at most stale_alarm_minutes")
        return self


class WritersConfig(_Section):
    """The synthetic-writers benchmark (see tailorml.data.writers); all of it synthetic."""

    individuals: int = Field(default=100, ge=2)
    general_writers: int = Field(default=50, ge=1, description="writers of D_G")
    samples_per_class: int = Field(default=10, ge=1, description="per writer, digit, orientation")
    image_size: int = Field(default=16, ge=8)
    substyles: int = Field(default=4, ge=1, description="k-means sub-styles per digit")
    max_slant: float = Field(default=0.35, ge=0)
    max_rotation: float = Field(default=12.0, ge=0)
    scale_range: tuple[float, float] = (0.85, 1.1)
    max_noise: float = Field(default=0.1, ge=0)
    label_swap_probability: float = Field(default=0.5, ge=0, le=1)
    individual_train_fraction: float = Field(default=0.7, gt=0, lt=1)
    general_test_fraction: float = Field(default=0.1, gt=0, lt=1)
    seed: int = 0


class RobustConfig(_Section):
    """Robustness to sensor error: the perturbation, its certification and PGD attacks
    (docs/robustness.md). ε is in input units: mg/dL on the CGM channel for glucose."""

    eps: float = Field(default=10.0, ge=0, description="sensor error ±ε (glucose: mg/dL)")
    relative_percent: float = Field(default=0.0, ge=0, lt=100, description="plus ±p % of reading")
    eps_grid: list[float] = Field(
        default_factory=lambda: [0.0, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0],
        min_length=1,
        description="ε values of the verified-accuracy curve",
    )
    method: Literal["ibp", "crown-ibp", "crown", "alpha-crown", "bab"] = Field(
        default="crown",
        description="bound used for certification at ε; bab: CROWN, then α-CROWN, then branch "
        "and bound over the input box on what is left (seconds a window: for few windows)",
    )
    bab_domains: int = Field(
        default=256,
        ge=1,
        description="method bab: most boxes bounded per margin of a window (its time budget)",
    )
    sweep_method: Literal["ibp", "crown-ibp", "crown", "alpha-crown"] = Field(
        default="crown", description="bound used for the ε sweep"
    )
    pgd_steps: int = Field(default=10, ge=1)
    max_windows: int = Field(
        default=300, ge=0, description="evenly spaced test windows per individual; 0 = all"
    )
    sweep_windows: int = Field(
        default=50, ge=0, description="test windows per individual for the ε sweep; 0 = all"
    )
    evaluate: bool = Field(
        default=False, description="experiment: add PGD and verified accuracy to every result"
    )

    @model_validator(mode="after")
    def _grid_non_negative(self) -> RobustConfig:
        if any(value < 0 for value in self.eps_grid):
            raise ValueError("eps_grid values must be >= 0")
        return self


def _default_methods() -> dict[str, dict[str, list[int | float]]]:
    """The Table-I grid of "Personalization of Deep Learning", at the glucose cohort's scale,
    plus the two fine-tuning baselines users expect."""
    return {
        "baseline": {},
        "baseline_with_individual": {},
        "early_shaping": {"n": [40, 400]},
        "sample_weighing": {"n_i": [12, 2]},
        "transfer": {"n": [10, 300]},
        "last_layer": {"n": [300]},
        "l2sp": {"n": [300], "alpha": [0.01]},
        "single_sample_grouping": {"n": [1500, 6500]},
        "individual_grouping": {"n": [3, 8]},
        "random_grouping": {"n": [1500, 6500]},
    }


class ExperimentConfig(_Section):
    """`tailorml experiment`: methods x settings x seeds over individuals. How the global
    model and every from-scratch method train is the `[train]` recipe."""

    dataset: Literal["glucose", "writers"] = "glucose"
    name: FileName = Field(default="table1", description="run directory name (safe file name)")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)

    @field_validator("seeds")
    @classmethod
    def _seeds_once(cls, seeds: list[int]) -> list[int]:
        """A repeated seed is the same task twice: its results would be kept once, so the
        run would silently have fewer seeds than the config lists."""
        repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if repeated:
            raise ValueError(f"seeds repeat {repeated}; list each seed once")
        return seeds

    individuals: list[str] = Field(default_factory=list, description="empty = all")
    max_individuals: int | None = Field(default=None, ge=1, description="the first N only")
    workers: int = Field(default=2, ge=1)
    backend: Literal["local", "ray"] = "local"
    ray_address: str = Field(default="", description="empty = start a local Ray instance")
    threads_per_worker: int = Field(default=1, ge=1)
    finetune_learning_rate: float = Field(
        default=1e-3, gt=0, description="methods that start from the predefined model"
    )
    general_stride: int = Field(default=5, ge=1, description="glucose: every k-th D_G window")
    autoencoder_epochs: int = Field(default=5, ge=1)
    min_individual_samples: int = Field(default=50, ge=1)
    required_classes: list[str] | None = Field(
        default=None, description="classes D_I must contain; unset = all"
    )
    reference: str = Field(default="baseline", description="method the p-values compare with")
    stress: bool = Field(
        default=False,
        description="also evaluate every personalized model under the sensor faults of "
        "`tailorml stress` (columns <fault>__<metric>)",
    )
    life_days: int = Field(
        default=0,
        ge=0,
        le=28,
        description="> 0: also evaluate every personalized model on this many re-simulated "
        "days of each life change of `tailorml stress --life` (virtual patients only; columns "
        "<scenario>__<metric>, compared with life_unchanged)",
    )


def _default_candidates() -> dict[str, dict[str, list[int | float]]]:
    """Gentle personalizations of the predefined model (soft: small, reviewable changes)."""
    return {
        "transfer": {"n": [100, 300]},
        "l2sp": {"n": [300], "alpha": [0.01]},
        "last_layer": {"n": [300]},
    }


class SoftConfig(_Section):
    """Soft personalization: candidates, conservative gates, review. The clinical reason of
    every default is in docs/soft_personalization.md."""

    registry: str = Field(default="registry", description="registry directory")
    candidates: dict[str, dict[str, list[int | float | bool | str] | int | float | bool | str]] = (
        Field(default_factory=_default_candidates)
    )
    threshold_candidate: bool = Field(
        default=True, description="also offer the predefined model with a personal threshold"
    )
    # gate 1: data sufficiency and representativeness of D_I (its training part)
    min_days: float = Field(default=7.0, gt=0)
    min_hypo_events: int = Field(default=3, ge=0)
    min_hyper_events: int = Field(default=2, ge=0)
    min_fraction_per_range: float = Field(default=0.01, ge=0, le=1)
    max_missing_fraction: float = Field(default=0.2, ge=0, le=1)
    # gate 2: hypo sensitivity non-inferiority on held-out events (paired bootstrap)
    sensitivity_margin: float = Field(default=0.05, ge=0, le=1)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    bootstrap_samples: int = Field(default=2000, ge=100)
    min_held_out_events: int = Field(default=3, ge=1)
    # gate 3: harmful states stay alarming
    stress_required_fraction: float = Field(default=1.0, ge=0, le=1)
    # gate 4: general-data floor
    general_accuracy_margin: float = Field(default=0.02, ge=0, le=1)
    # certified robustness: verified accuracy at robust.eps (paired bootstrap, same windows)
    robustness_margin: float = Field(default=0.05, ge=0, le=1)
    robustness_windows: int = Field(
        default=100, ge=1, description="evenly spaced held-out windows certified per model"
    )
    # gate 5: bounded change
    min_in_range_agreement: float = Field(default=0.85, ge=0, le=1)
    # gate 6: personal alert threshold under a conservative bound
    target_sensitivity: float = Field(default=0.7, gt=0, le=1)
    calibration_confidence: float = Field(default=0.8, gt=0.5, lt=1)
    thresholds: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=threshold_grid,
        min_length=1,
        description="alert thresholds the personal calibration may choose, each in (0, 1)",
    )
    gates: list[str] = Field(
        default_factory=lambda: [
            "safety_non_inferiority",
            "harmful_states",
            "general_floor",
            "bounded_change",
            "certified_robustness",
            "threshold_calibration",
        ],
        description="model gates applied to every candidate, in order",
    )


class PrivacyConfig(_Section):
    """`tailorml privacy check`: the encrypted round trip on a run's test windows (its
    command-line options; privacy_check.json records them)."""

    individuals: int = Field(
        default=3, ge=1, description="individuals whose test windows make the round trip"
    )
    max_windows: int = Field(
        default=0, ge=0, description="test windows per individual, evenly spaced (0 = all)"
    )
    batch: int = Field(
        default=1, ge=1, description="windows per ciphertext (1 = one request per window)"
    )


class StressConfig(_Section):
    """`tailorml stress`: the seeded shifts of a stress run (its command-line options; a
    stress run's config.toml records them)."""

    seed: int = Field(default=0, description="seed of every sensor fault and life scenario")
    life: bool = Field(
        default=False,
        description="also re-simulate new days of the virtual patients with life changes "
        "(slower; minutes)",
    )
    life_days: int = Field(default=3, ge=1, le=28, description="days per life scenario")
    life_patients: list[str] = Field(
        default_factory=list,
        description="virtual patients for the life changes (e.g. adult-001); empty = the "
        "cohort's own (or the --individual)",
    )


class LodoConfig(_Section):
    """`tailorml lodo`: leave one dataset out — train on the other datasets of the cohort,
    judge on the one left out (a new population and sensor), per docs/real_data.md."""

    datasets: list[str] = Field(
        default_factory=list,
        description="datasets to leave out in turn (the cohort's `dataset` trait); empty = all",
    )
    calibration_days: float = Field(
        default=7.0,
        gt=0,
        description="each new person's first days: they set the personal thresholds; the "
        "rest (after a gap of window + horizon) is where every rule is judged",
    )
    bootstrap_samples: int = Field(
        default=2000,
        ge=100,
        le=100_000,
        description="resamples of people for the intervals of means",
    )


class DeployExportConfig(_Section):
    """`tailorml deploy export` (its --emulate option)."""

    emulate: int = Field(
        default=3,
        ge=0,
        description="individuals whose every test window also runs in the emulated target",
    )


class DeploySimulateConfig(_Section):
    """`tailorml deploy simulate` (its --days, --emulate and --cloud-iterations options)."""

    days: int | None = Field(
        default=None, ge=1, description="live only the first N days; unset = all of them"
    )
    emulate: bool = Field(
        default=False,
        description="also live through the data on the emulated target (slower; counts the "
        "instructions of every update)",
    )
    cloud_iterations: int = Field(
        default=300,
        ge=0,
        description="iterations of the cloud model's transfer learning (0: no cloud model)",
    )


class DeployLearnerConfig(_Section):
    """The on-device learner of `deploy simulate` (docs/ondevice.md): what it keeps, how it
    trains and how its gates judge. Every number is compiled into the generated C."""

    train_per_stratum: int = Field(
        default=48, ge=1, description="training reservoir slots per stratum"
    )
    held_per_stratum: int = Field(
        default=48, ge=1, description="held-back reservoir slots per stratum"
    )
    recency: int = Field(
        default=4,
        ge=0,
        description="a new window replaces a kept one with probability >= 1/recency "
        "(0: keep all history)",
    )
    held_out_every: int = Field(
        default=4, ge=2, description="every k-th block of labelled windows is held back"
    )
    held_out_block: int = Field(
        default=12, ge=1, description="windows per held-back block (12 x 5 min = one hour)"
    )
    near_low_mgdl: int = Field(
        default=90,
        ge=1,
        le=400,
        description="an in-range window whose next reading is below this is 'near low'",
    )
    near_low_weight: float = Field(
        default=2.0,
        gt=0,
        lt=100,
        description="loss weight of a near-low window, times its class weight",
    )
    epochs: int = Field(
        default=20, ge=1, description="passes over the training reservoir per update"
    )
    batch_size: int = Field(default=16, ge=1, description="windows per gradient step")
    learning_rate: float = Field(
        default=0.05, gt=0, lt=10, description="SGD step of the float head"
    )
    l2_pull: float = Field(
        default=0.01, ge=0, lt=100, description="strength of the pull back to the factory weights"
    )
    train_bias: bool = Field(default=True, description="train the head's bias as well")
    threshold_aware: bool = Field(
        default=True, description="the loss's boundary at the deployed alert threshold"
    )
    min_days: int = Field(
        default=7, ge=0, description="days of readings before the first update (as soft.min_days)"
    )
    min_hypo_train: int = Field(
        default=16, ge=1, description="hypo windows needed in the training reservoir"
    )
    min_held: int = Field(
        default=6, ge=1, description="held-back hypo and near-low windows needed to judge"
    )
    sensitivity_margin: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="held-back sensitivity may drop this much at the lower bound "
        "(as soft.sensitivity_margin)",
    )
    alarm_margin: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="more near-low windows alarmed, at the lower bound",
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="of the one-sided lower bounds"
    )
    seed: int = Field(
        default=20261123,
        ge=1,
        le=2**32 - 1,
        description="xorshift32 seed of the reservoirs (the training one is derived)",
    )
    budget_bytes: int = Field(
        default=16384, ge=1, description="RAM of the learner state, checked when compiling"
    )


class DeployConfig(_Section):
    """`tailorml deploy export` and `deploy simulate`: the target and the int8 model both
    start from, each command's own options and the on-device learner's settings
    (deploy.json and simulate.json record them)."""

    target: Literal["cortex-m4", "cortex-m3", "stm32f401", "stm32l151"] = Field(
        default="cortex-m4",
        description="target profile: stm32f401 (= cortex-m4) or stm32l151 (= cortex-m3)",
    )
    calibration_windows: int = Field(
        default=4096,
        ge=1,
        description="general training windows the int8 activations are calibrated on "
        "(evenly spaced)",
    )
    export: DeployExportConfig = Field(default_factory=DeployExportConfig)
    simulate: DeploySimulateConfig = Field(default_factory=DeploySimulateConfig)
    learner: DeployLearnerConfig = Field(default_factory=DeployLearnerConfig)


class CohortConfig(_Section):
    path: str = Field(
        default="",
        description="a cohort file (.parquet/.csv) or a shipped cohort: real (azt1d + t1d_uom "
        "+ physiocgm), azt1d, t1d_uom, physiocgm, synthetic; empty = the default cohort",
    )
    individuals: list[str] = Field(default_factory=list, description="empty = all")
    max_days: float | None = Field(default=None, gt=0, description="keep only the first days")


class RunConfig(_Section):
    runs_dir: str = "runs"
    name: FileName = Field(default="demo", description="run directory name (safe file name)")
    report_patient: str = Field(default="", description="patient shown in the trace plot")


class Config(_Section):
    cohort: CohortConfig = Field(default_factory=CohortConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    alerts: AlertConfig = Field(default_factory=AlertConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)
    methods: dict[str, dict[str, list[int | float | bool | str] | int | float | bool | str]] = (
        Field(default_factory=_default_methods)
    )
    writers: WritersConfig = Field(default_factory=WritersConfig)
    soft: SoftConfig = Field(default_factory=SoftConfig)
    robust: RobustConfig = Field(default_factory=RobustConfig)
    lodo: LodoConfig = Field(default_factory=LodoConfig)
    stress: StressConfig = Field(default_factory=StressConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)

    @model_validator(mode="after")
    def _he_friendly_recipe(self) -> Config:
        """The x² activations have no bound propagation and no channel compaction: refuse
        here rather than after the cohort is prepared."""
        if self.model.architecture != "he_friendly":
            return self
        if self.train.robust in ("ibp", "crown-ibp"):
            raise ValueError(
                f"train.robust = {self.train.robust!r} needs bounds through ReLU layers; the "
                "he_friendly model has x² activations: set train.robust = 'none' or 'pgd'"
            )
        if self.train.sparsity:
            raise ValueError(
                "train.sparsity: pruning compacts SmallCNN channels only; set "
                "train.sparsity = 0 for model.architecture = 'he_friendly'"
            )
        if self.model.cgm_levels and self.task.channels[0] != "cgm":
            raise ValueError(
                f"model.cgm_levels encodes input channel 0, but task.channels = "
                f"{self.task.channels} starts with {self.task.channels[0]!r}: put 'cgm' first"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


NOT_UTF8 = (
    "{path} is not UTF-8 text (byte {position} is not valid UTF-8; TOML files must be UTF-8): "
    "save it as UTF-8 in your editor or with `iconv -f latin1 -t utf-8`"
)


_UNION_TAGS = {"int", "float", "bool", "str"}

# keys that moved: the predefined model has one recipe, [train], for every job
MOVED_KEYS = {
    **{
        f"experiment.{key}": f"train.{key}"
        for key in ("epochs", "batch_size", "learning_rate", "weight_decay", "class_weighting")
    },
    "experiment.global_robust": "train.robust",
}


def _format_errors(error: ValidationError, source: str) -> str:
    """One line per offending key. A value of a union field (the [methods] grids) fails
    once per member type; those lines are merged into the most telling one."""
    lines = [f"invalid configuration in {source}:"]
    seen: dict[str, int] = {}
    for item in error.errors():
        parts = [str(p) for p in item["loc"] if str(p) not in _UNION_TAGS and "[" not in str(p)]
        key = ".".join(parts) or "(top level)"
        if item["type"] == "extra_forbidden" and key in MOVED_KEYS:
            line = f"  - '{key}' moved: set '{MOVED_KEYS[key]}' instead"
        elif item["type"] == "extra_forbidden":
            line = f"  - unknown key '{key}': remove it or check its spelling"
        elif item["type"] == "missing":
            line = f"  - missing key '{key}'"
        else:
            given = item.get("input")
            given_text = f" (got {given!r})" if not isinstance(given, dict) else ""
            message = item["msg"].removeprefix("Value error, ")
            line = f"  - '{key}': {message}{given_text}"
        if key in seen:  # a union member's error: keep the one that is not a plain type error
            if not item["type"].endswith("_type"):
                lines[seen[key]] = line
            continue
        seen[key] = len(lines)
        lines.append(line)
    # the scalar branch of a "list or scalar" union names the parent of a deeper error: drop it
    deeper = {key for key in seen if any(other.startswith(key + ".") for other in seen)}
    lines = [line for index, line in enumerate(lines) if index not in {seen[k] for k in deeper}]
    lines.append("Run `tailorml config show` for every key with its default.")
    return "\n".join(lines)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate `data` (a partial config) over the defaults."""
    merged = _deep_merge(Config().to_dict(), data)
    if "methods" in data:  # a methods table is the whole grid, not an addition to the default
        merged["methods"] = data["methods"]
    if "candidates" in data.get("soft", {}):  # likewise the candidate grid
        merged["soft"]["candidates"] = data["soft"]["candidates"]
    try:
        # JSON mode: lists are accepted for tuple fields, ints for floats, nothing looser.
        return Config.model_validate_json(json.dumps(merged))
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file at `path`, then `overrides` (e.g. from CLI options)."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{path} is a folder; pass the TOML config file inside it")
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            # utf-8-sig: a byte-order mark (Windows Notepad writes one) is not TOML text
            data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(NOT_UTF8.format(path=path, position=error.start)) from None
        source = str(path)
    if overrides:
        data = _deep_merge(data, overrides)
    return config_from_dict(data, source)


UNSET = "# {key} = (unset){note}"


def _toml_table(values: dict[str, Any], model: Any, table: Any) -> Any:
    """Fill `table` with `values`. TOML has no null, so an unset optional key (None)
    becomes a comment naming it and what unset means: leaving it out would hide it from
    `config show`, and the comment reads back as the same (unset) config."""
    fields = type(model).model_fields if isinstance(model, BaseModel) else {}
    for key, value in values.items():
        child = getattr(model, key, None) if isinstance(model, BaseModel) else None
        if isinstance(model, dict):
            child = model.get(key)
        if value is None:
            description = fields[key].description if key in fields else None
            note = f" -- {description}" if description else ""
            table.add(tomlkit.comment(UNSET.format(key=key, note=note)[2:]))
        elif isinstance(value, dict):
            table.add(key, _toml_table(value, child, tomlkit.table()))
        else:
            table.add(key, value)
    return table


def to_toml(config: Config) -> str:
    """Serialise a config as TOML (what `config show` prints and every run stores): every
    key, unset optional ones as `# key = (unset) -- meaning` comments."""
    return tomlkit.dumps(_toml_table(config.to_dict(), config, tomlkit.document()))
