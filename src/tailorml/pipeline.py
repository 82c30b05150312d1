"""The predefined (global) model: THE recipe on a prepared cohort's training windows, the
checkpoint kept by validation, its alert threshold chosen on the validation parts.

A library step whose door takes objects, not a whole `Config`:
`fit_global_model(prepared, GlobalTraining(recipe, policy, ...)) -> GlobalFit`. A notebook
builds the `GlobalTraining` it wants; the train/demo job (`jobs.train`), the lodo job and
personalization sessions build it from their config with `GlobalTraining.from_config`. It
writes no file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from tailorml.config import Config, ModelConfig
from tailorml.data.glucose import CLASSES
from tailorml.data.prepared import Prepared
from tailorml.errors import ConfigError, TailormlError
from tailorml.evaluate.curves import MODEL
from tailorml.evaluate.metrics import classification_metrics
from tailorml.evaluate.operating_point import (
    OperatingPoint,
    choose_operating_point,
    people_of_part,
)
from tailorml.models.cnn import SmallCNN, count_parameters, load_model
from tailorml.models.distill import Distillation
from tailorml.models.group_dro import group_codes
from tailorml.models.predict import predict_proba
from tailorml.models.train import EpochProgress, LabeledData, TrainResult
from tailorml.policy import AlertPolicy
from tailorml.progress import SILENT, Reporter
from tailorml.recipe import Recipe, fit_predefined, fresh_model
from tailorml.robust.perturbation import SensorError
from tailorml.sparse.prune import weight_sparsity


@dataclass
class GlobalFit:
    """The predefined model (after structured pruning: the compacted one), how its training
    went, how its threshold was chosen, and what pruning did."""

    model: SmallCNN
    result: TrainResult
    operating_point: OperatingPoint | None  # None: the configured fixed threshold
    pruning: dict | None = None  # None: a dense model


@dataclass(frozen=True)
class Teacher:
    """Knowledge distillation from a trained model (`models.distill`): its soft outputs at
    `temperature` weigh `weight` in the batch loss."""

    model: torch.nn.Module
    weight: float = 0.5
    temperature: float = 2.0

    def plugin(self, recipe: Recipe, y_train: np.ndarray) -> Distillation:
        return Distillation(
            self.model,
            weight=self.weight,
            temperature=self.temperature,
            class_weights=recipe.class_weights(y_train, len(CLASSES)),
        )


@dataclass(frozen=True)
class GlobalTraining:
    """Everything fitting the predefined model needs besides the data: THE recipe, the
    alert policy the model will decide by (its threshold is re-chosen on the validation
    parts for `false_alerts_per_day` unless `choose_threshold` is False), the network, the
    seed, which training windows (every `window_stride`-th), how early-warning windows
    weigh, how the checkpoint is kept, the sensor error robust training defends against,
    and an optional teacher."""

    recipe: Recipe
    policy: AlertPolicy
    architecture: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 0
    window_stride: int = 1
    early_weight: float = 0.0  # hypo windows >= policy.useful_lead_minutes ahead weigh 1 + this
    checkpoint_by: Literal["balanced_accuracy", "alerts"] = "balanced_accuracy"
    false_alerts_per_day: float = 1.0  # the budget the threshold (and checkpoint) is chosen for
    choose_threshold: bool = True  # False: keep policy.threshold
    perturbation: SensorError | None = None  # required by robust recipes
    teachers: Sequence[Teacher] = ()

    def __post_init__(self) -> None:
        if self.recipe.robust != "none" and self.perturbation is None:
            raise ConfigError(
                f"train.robust = {self.recipe.robust!r} needs the sensor error it defends "
                "against: pass perturbation= (robust.evaluate.perturbation_for)"
            )
        if self.teachers:
            require_distillable(self.recipe)

    @classmethod
    def from_config(
        cls, config: Config, sample_minutes: int, reporter: Reporter = SILENT
    ) -> GlobalTraining:
        """`[train]`, `[model]`, `[alerts]` and `[robust]` of `config`, for a cohort on a
        `sample_minutes` grid."""
        train = config.train
        recipe = Recipe.from_config(train)
        policy = AlertPolicy.from_config(config, sample_minutes)
        perturbation = None
        if recipe.robust != "none":
            from tailorml.robust.evaluate import perturbation_for

            perturbation = perturbation_for(config.robust, policy)
        return cls(
            recipe=recipe,
            policy=policy,
            architecture=config.model,
            seed=train.seed,
            window_stride=train.window_stride,
            early_weight=train.early_weight,
            checkpoint_by=train.checkpoint_by,
            false_alerts_per_day=config.alerts.max_false_alerts_per_day,
            choose_threshold=config.alerts.operating_point == "validation",
            perturbation=perturbation,
            teachers=teachers_of(config, recipe, reporter),
        )


def require_distillable(recipe: Recipe) -> None:
    """Distillation replaces the batch loss: refuse recipes that need their own."""
    if recipe.robust != "none" or recipe.sparsity or recipe.group_dro_eta:
        raise ConfigError(
            "train.distill_from: distillation replaces the batch loss, so it cannot be "
            "combined with robust training, pruning or group DRO (train.group_dro_eta)"
        )


def teachers_of(config: Config, recipe: Recipe, reporter: Reporter = SILENT) -> list[Teacher]:
    """The teacher of `train.distill_from` (a trained model.pt), or none."""
    train = config.train
    if not train.distill_from:
        return []
    require_distillable(recipe)
    path = Path(train.distill_from).expanduser()
    if not path.is_file():
        raise ConfigError(f"train.distill_from = {str(path)!r}: no such model file")
    teacher = load_model(path)
    reporter.log(
        f"distilling from {path} ({count_parameters(teacher):,} parameters; weight "
        f"{train.distill_weight:g}, temperature {train.distill_temperature:g})"
    )
    return [Teacher(teacher, train.distill_weight, train.distill_temperature)]


def early_warning_weights(
    early_weight: float, useful_lead_minutes: float, prepared: Prepared, indices: np.ndarray
) -> np.ndarray:
    """1 + `early_weight` for the hypo windows whose low begins at least
    `useful_lead_minutes` ahead, 1 for every other window (`models.sample_weights`)."""
    lead = prepared.windows.hypo_lead_minutes[indices]
    early = np.nan_to_num(lead, nan=-1.0) >= useful_lead_minutes
    return 1.0 + early_weight * early


def window_groups(prepared: Prepared, indices: np.ndarray) -> np.ndarray:
    """Group code of each of these windows (its individual's group), for group DRO."""
    windows = prepared.windows
    owners = [windows.ids[i] for i in windows.individual[indices]]
    group_of = {person.id: person.group for person in prepared.cohort.individuals}
    return group_codes(owners, group_of)


def fit_global_model(
    prepared: Prepared, training: GlobalTraining, reporter: Reporter = SILENT
) -> GlobalFit:
    """The predefined (global) model: `training.recipe` on the training windows, keeping
    the checkpoint with the best balanced accuracy on the validation windows (if any; robust
    and pruned training keep their final weights), then its alert threshold chosen on them
    for `training.false_alerts_per_day`. A structured-pruned model is compacted before its
    threshold is chosen: the compacted model is the one evaluated and saved."""
    windows, splits = prepared.windows, prepared.splits
    recipe, policy, seed = training.recipe, training.policy, training.seed
    train_indices = splits.pooled("train")[:: training.window_stride]
    val_indices = splits.pooled("val")
    if len(train_indices) == 0:
        raise TailormlError("no training windows: the cohort is too short for the split")
    x_train, y_train = windows.x[train_indices], windows.y[train_indices]
    model = fresh_model(training.architecture, x_train, len(CLASSES), seed)
    model.policy = policy
    if recipe.robust != "none":
        described = recipe.robust_training(training.perturbation).describe()
        reporter.log(f"robust training: {described} mg/dL")
    dense_parameters = count_parameters(model)
    if recipe.sparsity:
        reporter.log(f"pruning: {recipe.describe_pruning()}")
    validate = None
    if len(val_indices):
        x_val, y_val = windows.x[val_indices], windows.y[val_indices]

        def validate(candidate: torch.nn.Module) -> float:
            predicted = policy.decide(predict_proba(candidate, x_val))
            return classification_metrics(y_val, predicted)["balanced_accuracy"]

        if training.checkpoint_by == "alerts":
            validate = alert_score(prepared, policy, val_indices, training.false_alerts_per_day)

    sample_weights = None
    if training.early_weight:
        sample_weights = early_warning_weights(
            training.early_weight, policy.useful_lead_minutes, prepared, train_indices
        )
        weighted = int((sample_weights > 1).sum())
        reporter.log(
            f"early-warning weight: {weighted:,} hypo windows at least "
            f"{policy.useful_lead_minutes} min before their low count "
            f"{1 + training.early_weight:g} times"
        )
    total = len(recipe.schedule(len(y_train), seed))
    with reporter.task("training global model", total=total) as task:
        fit = fit_predefined(
            model,
            LabeledData.from_numpy(x_train, y_train),
            recipe,
            n_classes=len(CLASSES),
            seed=seed,
            perturbation=training.perturbation,
            validate=validate,
            plugins=[
                EpochProgress(task, recipe.steps_per_epoch(len(y_train))),
                *(teacher.plugin(recipe, y_train) for teacher in training.teachers),
            ],
            groups=window_groups(prepared, train_indices) if recipe.group_dro_eta else None,
            sample_weights=sample_weights,
        )
    model = fit.model
    pruning = pruning_record(recipe, dense_parameters, model)
    if pruning:
        reporter.log(
            f"pruned: {pruning['parameters']:,} of {dense_parameters:,} parameters, "
            f"{pruning['zero_weights']:.0%} of its weights zero"
        )
    point = None
    if training.choose_threshold:
        point = _choose_threshold(model, prepared, val_indices, training.false_alerts_per_day)
        if point is None:
            reporter.log(
                "no validation windows: the alert threshold stays at "
                f"alerts.probability_threshold = {policy.threshold:g}",
                style="yellow",
            )
        else:
            model.policy = policy.with_threshold(point.threshold)
            reporter.log(f"operating point: {point.describe()}")
    return GlobalFit(model, fit.result, point, pruning)


def pruning_record(recipe: Recipe, dense_parameters: int, model: SmallCNN) -> dict | None:
    """What pruning did, for training.json and the report (None: the recipe is dense)."""
    if not recipe.sparsity:
        return None
    return {
        "sparsity": recipe.sparsity,
        "structured": recipe.structured,
        "dense_parameters": dense_parameters,
        "parameters": count_parameters(model),
        "zero_weights": weight_sparsity(model),
    }


def alert_score(
    prepared: Prepared, policy: AlertPolicy, val_indices: np.ndarray, false_alerts_per_day: float
) -> Callable[[torch.nn.Module], float]:
    """A checkpoint score: the early sensitivity (mean over individuals) of the operating
    point chosen on the validation parts for the false-alert budget, exactly as the
    final threshold is chosen; -1 when no threshold meets the budget. The validation
    people and their events are built once; each call only re-scores their windows."""
    probabilities = np.zeros((len(prepared.windows), len(CLASSES)))
    people = people_of_part(policy, prepared, probabilities, "val")
    rows = [prepared.splits.of(individual, "val") for individual in prepared.cohort.ids]
    rows = [indices for indices in rows if len(indices)]
    x_val = prepared.windows.x[val_indices]
    position = np.full(len(prepared.windows), -1)
    position[val_indices] = np.arange(len(val_indices))

    def score(candidate: torch.nn.Module) -> float:
        alert = predict_proba(candidate, x_val)[:, policy.alert_index]
        for person, indices in zip(people, rows, strict=True):
            person.scores[MODEL] = alert[position[indices]]
        point = choose_operating_point(people, policy, false_alerts_per_day, "validation")
        if not point.met_budget or np.isnan(point.sensitivity_early):
            return -1.0
        return point.sensitivity_early

    return score


def _choose_threshold(
    model: SmallCNN, prepared: Prepared, val_indices: np.ndarray, false_alerts_per_day: float
) -> OperatingPoint | None:
    """The threshold for the false-alert budget on the validation parts (None: none)."""
    if len(val_indices) == 0:
        return None
    probabilities = np.zeros((len(prepared.windows), len(CLASSES)))
    probabilities[val_indices] = predict_proba(model, prepared.windows.x[val_indices])
    people = people_of_part(model.policy, prepared, probabilities, "val")
    return choose_operating_point(
        people,
        model.policy,
        false_alerts_per_day,
        f"the validation parts of {len(people)} individuals",
    )
