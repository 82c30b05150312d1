"""The predefined (global) model: THE recipe on a prepared cohort's training windows, the
checkpoint kept by validation, its alert threshold chosen on the validation parts.

A library step (`fit_global_model(config, prepared) -> GlobalFit`): the train/demo job
(`jobs.train`), the lodo job, experiments and personalization sessions call it; it writes
no file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tailorml.config import Config
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
from tailorml.models.recipe import Recipe, fit_predefined, fresh_model
from tailorml.models.train import EpochProgress, LabeledData, TrainResult
from tailorml.policy import AlertPolicy
from tailorml.progress import SILENT, Reporter
from tailorml.sparse.prune import weight_sparsity


@dataclass
class GlobalFit:
    """The predefined model (after structured pruning: the compacted one), how its training
    went, how its threshold was chosen, and what pruning did."""

    model: SmallCNN
    result: TrainResult
    operating_point: OperatingPoint | None  # None: the configured fixed threshold
    pruning: dict | None = None  # None: a dense model


def teacher_plugins(
    config: Config, recipe: Recipe, y_train: np.ndarray, reporter: Reporter = SILENT
) -> list[Distillation]:
    """Knowledge distillation from `train.distill_from` (a trained model.pt), or nothing."""
    train = config.train
    if not train.distill_from:
        return []
    if recipe.robust != "none" or recipe.sparsity or recipe.group_dro_eta:
        raise ConfigError(
            "train.distill_from: distillation replaces the batch loss, so it cannot be "
            "combined with robust training, pruning or group DRO (train.group_dro_eta)"
        )
    path = Path(train.distill_from).expanduser()
    if not path.is_file():
        raise ConfigError(f"train.distill_from = {str(path)!r}: no such model file")
    teacher = load_model(path)
    reporter.log(
        f"distilling from {path} ({count_parameters(teacher):,} parameters; weight "
        f"{train.distill_weight:g}, temperature {train.distill_temperature:g})"
    )
    return [
        Distillation(
            teacher,
            weight=train.distill_weight,
            temperature=train.distill_temperature,
            class_weights=recipe.class_weights(y_train, len(CLASSES)),
        )
    ]


def early_warning_weights(config: Config, prepared: Prepared, indices: np.ndarray) -> np.ndarray:
    """1 + `train.early_weight` for the hypo windows whose low begins at least
    `alerts.useful_lead_minutes` ahead, 1 for every other window (`models.sample_weights`)."""
    lead = prepared.windows.hypo_lead_minutes[indices]
    early = np.nan_to_num(lead, nan=-1.0) >= config.alerts.useful_lead_minutes
    return 1.0 + config.train.early_weight * early


def window_groups(prepared: Prepared, indices: np.ndarray) -> np.ndarray:
    """Group code of each of these windows (its individual's group), for group DRO."""
    windows = prepared.windows
    owners = [windows.ids[i] for i in windows.individual[indices]]
    group_of = {person.id: person.group for person in prepared.cohort.individuals}
    return group_codes(owners, group_of)


def fit_global_model(config: Config, prepared: Prepared, reporter: Reporter = SILENT) -> GlobalFit:
    """The predefined (global) model: the `[train]` recipe on all training windows, keeping
    the checkpoint with the best balanced accuracy on the validation windows (if any; robust
    and pruned training keep their final weights), then its alert threshold chosen on them
    for the false-alert budget (`alerts.operating_point`). A structured-pruned model is
    compacted before its threshold is chosen: the compacted model is the one evaluated and
    saved."""
    windows, splits = prepared.windows, prepared.splits
    train_indices = splits.pooled("train")[:: config.train.window_stride]
    val_indices = splits.pooled("val")
    if len(train_indices) == 0:
        raise TailormlError("no training windows: the cohort is too short for the split")
    recipe = Recipe.from_config(config.train)
    seed = config.train.seed
    x_train, y_train = windows.x[train_indices], windows.y[train_indices]
    model = fresh_model(config.model, x_train, len(CLASSES), seed)
    policy = AlertPolicy.from_config(config, windows.sample_minutes)
    model.policy = policy
    perturbation = None
    if recipe.robust != "none":
        from tailorml.robust.evaluate import perturbation_for

        perturbation = perturbation_for(config, policy)
        reporter.log(f"robust training: {recipe.robust_training(perturbation).describe()} mg/dL")
    dense_parameters = count_parameters(model)
    if recipe.sparsity:
        reporter.log(f"pruning: {recipe.describe_pruning()}")
    validate = None
    if len(val_indices):
        x_val, y_val = windows.x[val_indices], windows.y[val_indices]

        def validate(candidate: torch.nn.Module) -> float:
            predicted = policy.decide(predict_proba(candidate, x_val))
            return classification_metrics(y_val, predicted)["balanced_accuracy"]

        if config.train.checkpoint_by == "alerts":
            validate = alert_score(config, prepared, policy, val_indices)

    sample_weights = None
    if config.train.early_weight:
        sample_weights = early_warning_weights(config, prepared, train_indices)
        weighted = int((sample_weights > 1).sum())
        reporter.log(
            f"early-warning weight: {weighted:,} hypo windows at least "
            f"{config.alerts.useful_lead_minutes} min before their low count "
            f"{1 + config.train.early_weight:g} times"
        )
    total = len(recipe.schedule(len(y_train), seed))
    with reporter.task("training global model", total=total) as task:
        fit = fit_predefined(
            model,
            LabeledData.from_numpy(x_train, y_train),
            recipe,
            n_classes=len(CLASSES),
            seed=seed,
            perturbation=perturbation,
            validate=validate,
            plugins=[
                EpochProgress(task, recipe.steps_per_epoch(len(y_train))),
                *teacher_plugins(config, recipe, y_train, reporter),
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
    if config.alerts.operating_point == "validation":
        point = _choose_threshold(config, model, prepared, val_indices)
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
    config: Config, prepared: Prepared, policy: AlertPolicy, val_indices: np.ndarray
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
        point = choose_operating_point(
            people, policy, config.alerts.max_false_alerts_per_day, "validation"
        )
        if not point.met_budget or np.isnan(point.sensitivity_early):
            return -1.0
        return point.sensitivity_early

    return score


def _choose_threshold(
    config: Config, model: SmallCNN, prepared: Prepared, val_indices: np.ndarray
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
        config.alerts.max_false_alerts_per_day,
        f"the validation parts of {len(people)} individuals",
    )
