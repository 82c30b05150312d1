"""THE recipe of the predefined (global) model, and the one function that trains with it.

The recipe is the `[train]` section of the config: epochs over D_G, batch size, learning
rate, weight decay, class weighting, the robust-training kind (with its clean warm-up),
pruning (sparsity, structured or not) and group DRO over the cohort's groups.
`tailorml train`/`demo` (`pipeline.fit_global_model`), soft personalization (which calls
that for a registry without a predefined model) and experiments (their global models, and
every method trained from scratch through `personalize.base.Budget`) all use it; an
experiment TOML that wants another recipe sets `[train]` keys. Pruning is the exception:
only `tailorml train` prunes (`require_dense` refuses it elsewhere), because the
methods of an experiment and the candidates of soft personalization would not keep the
masks (fine-tuning revives pruned weights).

What differs between those callers is *data*, not recipe: the job trains on all D_G
training windows and keeps the checkpoint with the best validation balanced accuracy; an
experiment trains on every `experiment.general_stride`-th window of an individual's D_G and
has no validation set. Both initialise the network from the same seed they shuffle with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from tailorml.config import ModelConfig, TrainConfig
from tailorml.errors import ConfigError
from tailorml.models.cnn import SmallCNN, build_model
from tailorml.models.group_dro import GroupDRO, n_groups
from tailorml.models.levels import encode_levels
from tailorml.models.sample_weights import SampleWeights
from tailorml.models.schedule import Step, epochs
from tailorml.models.train import (
    LabeledData,
    LoopPlugin,
    TrainResult,
    balanced_class_weights,
    train,
)
from tailorml.sparse.prune import Pruner, PruningSchedule, compact

if TYPE_CHECKING:
    from tailorml.robust.perturbation import SensorError
    from tailorml.robust.training import RobustTraining


@dataclass(frozen=True)
class Recipe:
    """How the predefined model trains (the values of `[train]` except seed and threads)."""

    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    class_weighting: Literal["balanced", "none"]
    robust: Literal["none", "pgd", "ibp", "crown-ibp"] = "none"
    sparsity: float = 0.0
    structured: bool = True
    group_dro_eta: float = 0.0  # > 0: the predefined model minimises the worst group's loss

    @classmethod
    def from_config(cls, train: TrainConfig) -> Recipe:
        return cls(
            epochs=train.epochs,
            batch_size=train.batch_size,
            learning_rate=train.learning_rate,
            weight_decay=train.weight_decay,
            class_weighting=train.class_weighting,
            robust=train.robust,
            sparsity=train.sparsity,
            structured=train.structured,
            group_dro_eta=train.group_dro_eta,
        )

    def class_weights(self, labels: np.ndarray, n_classes: int) -> torch.Tensor | None:
        """Balanced weights of `labels` (the training data), or None (plain loss)."""
        if self.class_weighting == "balanced":
            return balanced_class_weights(labels, n_classes)
        return None

    def schedule(self, n_samples: int, seed: int, source: str = "general") -> list[Step]:
        """`epochs` shuffled passes over the `n_samples` of D_G."""
        return epochs(source, n_samples, self.batch_size, self.epochs, seed)

    def steps_per_epoch(self, n_samples: int) -> int:
        return -(-n_samples // self.batch_size)

    def robust_training(self, perturbation: SensorError) -> RobustTraining | None:
        """The robust objective against `perturbation` (with the predefined model's clean
        warm-up), or None when the recipe trains on clean data only."""
        if self.robust == "none":
            return None
        from tailorml.robust.training import RobustTraining

        return RobustTraining.for_predefined(self.robust, perturbation)

    def pruning(self) -> PruningSchedule | None:
        """How the predefined model is pruned while it trains, or None (dense)."""
        if self.sparsity == 0:
            return None
        return PruningSchedule(self.sparsity, self.structured)

    def describe_pruning(self) -> str:
        if self.structured:
            return f"{self.sparsity:.0%} fewer parameters (whole channels pruned, then compacted)"
        return f"{self.sparsity:.0%} of the weights zeroed (magnitude pruning)"


NOT_PRUNED_HERE = (
    "train.sparsity = {sparsity:g}: {job} does not prune ({why}); pruning is for the "
    "predefined model of `tailorml train`: set train.sparsity = 0{fix}"
)


def require_dense(train: TrainConfig, job: str, why: str, fix: str = "") -> None:
    """Refuse a pruning recipe in a job that would not honour it, rather than leave some of
    its models pruned and others not (a silent half-state)."""
    if train.sparsity:
        raise ConfigError(
            NOT_PRUNED_HERE.format(sparsity=train.sparsity, job=job, why=why, fix=fix)
        )


NO_TEACHER_HERE = (
    "train.distill_from = {path!r}: {job} does not distil (the teacher was trained on the "
    "pooled training windows, which the models of this job must not see through it); "
    'distillation is for the predefined model of `tailorml train`: set train.distill_from = ""'
)


NO_EARLY_WEIGHT_HERE = (
    "train.early_weight = {weight:g}: {job} trains its models with the plain loss (the "
    "early-warning weight is for the predefined model of `tailorml train`); set "
    "train.early_weight = 0"
)


def require_train_only_options(train: TrainConfig, job: str) -> None:
    """Refuse the options only `tailorml train` applies, rather than ignore them silently:
    distillation (the teacher saw the pooled training windows, so an individual's held-out
    data could leak through it into this job's models) and the early-warning weight."""
    if train.distill_from:
        raise ConfigError(NO_TEACHER_HERE.format(path=train.distill_from, job=job))
    if train.early_weight:
        raise ConfigError(NO_EARLY_WEIGHT_HERE.format(weight=train.early_weight, job=job))


GROUP_DRO_NEEDS = (
    "train.group_dro_eta = {eta:g}: group DRO needs training windows of at least two groups "
    "(the cohort file's `group` column); {found}. Set train.group_dro_eta = 0"
)


def group_dro_plugin(
    recipe: Recipe, groups: np.ndarray | None, schedule: list[Step], weights: torch.Tensor | None
) -> GroupDRO | None:
    """The group-DRO loss of a recipe with `group_dro_eta` > 0, or None; refused where it
    cannot work (one group) or would fight another loss (robust training)."""
    if recipe.group_dro_eta <= 0:
        return None
    if recipe.robust != "none":
        raise ConfigError(
            "train.group_dro_eta: group DRO replaces the batch loss, so it cannot be combined "
            f"with robust training (train.robust = {recipe.robust!r}); set one of them off"
        )
    if groups is None:
        raise ValueError("group DRO needs the group of every training sample")
    if n_groups(groups) < 2:
        found = (
            "the training windows have no group"
            if n_groups(groups) == 0
            else "the training windows are all of one group"
        )
        raise ConfigError(GROUP_DRO_NEEDS.format(eta=recipe.group_dro_eta, found=found))
    return GroupDRO(groups, schedule, recipe.group_dro_eta, weights)


@dataclass
class PredefinedFit:
    """A trained predefined model and how its training went."""

    model: nn.Module  # after structured pruning: a new, narrower (compacted) network
    result: TrainResult


def channel_statistics(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation over samples and time/pixels (scale >= 1e-3)."""
    axes = tuple(axis for axis in range(x.ndim) if axis != 1)
    mean = x.mean(axis=axes, dtype=np.float64)
    scale = np.maximum(x.std(axis=axes, dtype=np.float64), 1e-3)
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(scale, dtype=torch.float32)


def fresh_model(
    config: ModelConfig, x_general: np.ndarray, n_classes: int, seed: int, dims: int = 1
) -> SmallCNN:
    """A new network initialised from `seed`, normalised with the statistics of the
    training inputs `x_general` (n, channels, length) or (n, channels, height, width), after
    the model's fixed input encoding if it has one (`models.levels`)."""
    mean, scale = channel_statistics(encode_levels(x_general, config.cgm_levels))
    torch.manual_seed(seed)
    return build_model(config, x_general.shape[1], x_general.shape[2], n_classes, mean, scale, dims)


def fit_predefined(
    model: nn.Module,
    general: LabeledData,
    recipe: Recipe,
    *,
    n_classes: int,
    seed: int,
    perturbation: SensorError | None = None,
    validate: Callable[[nn.Module], float] | None = None,
    plugins: Sequence[LoopPlugin] = (),
    groups: np.ndarray | None = None,
    sample_weights: np.ndarray | None = None,
) -> PredefinedFit:
    """Train `model` on `general` (D_G) with `recipe`; the one way a predefined model is
    trained. With `validate` (higher is better), checked after every epoch, the best
    checkpoint is kept. Robust training and pruning ignore it and keep their final weights:
    ε ramps up over training, so the best *clean* checkpoint would come from before the
    ramp, and an earlier checkpoint would bring pruned weights back.

    With structured pruning the returned model is the compacted one (same outputs, fewer
    parameters); use `PredefinedFit.model`, not the network passed in. `groups` (the group
    code of every sample of `general`, `models.group_dro.group_codes`) is needed when the
    recipe asks for group DRO; `sample_weights` (one per sample of `general`) weigh each
    sample's loss (`models.sample_weights`)."""
    schedule = recipe.schedule(len(general), seed)
    weights = recipe.class_weights(general.y.numpy(), n_classes)
    fairness = group_dro_plugin(recipe, groups, schedule, weights)
    weighting = None
    if sample_weights is not None:
        if len(sample_weights) != len(general):
            raise ValueError(
                f"{len(sample_weights)} sample weights for {len(general)} training samples"
            )
        weighting = SampleWeights(sample_weights, schedule, weights)
    robust = None
    if recipe.robust != "none":
        if perturbation is None:
            raise ValueError(f"robust training ({recipe.robust}) needs the sensor error")
        robust = recipe.robust_training(perturbation)
    pruning = recipe.pruning()
    # the pruner re-applies its masks after every optimiser step, so the robust loss of the
    # next step already sees the pruned network
    loop_plugins = [
        *([robust.plugin(len(schedule), weights)] if robust else []),
        *([Pruner(model, pruning, len(schedule))] if pruning else []),
        *([fairness] if fairness else []),
        *([weighting] if weighting else []),
        *plugins,
    ]
    result = train(
        model,
        {"general": general},
        schedule,
        learning_rate=recipe.learning_rate,
        weight_decay=recipe.weight_decay,
        class_weights=weights,
        plugins=loop_plugins,
        validate=None if robust or pruning else validate,
        validate_every=recipe.steps_per_epoch(len(general)),
        seed=seed,
    )
    if pruning and pruning.structured:
        model = compact(model)  # physically smaller, same outputs
    return PredefinedFit(model, result)
