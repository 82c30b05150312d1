"""The strategy `Context` of one individual and seed (`context_for`): the budget (the
recipe plus the fine-tuning rate), fresh networks, the predefined model, the autoencoder
latent space and the sensor error robust methods train against. What those are made of is
one value, `StrategyTraining` (`from_config` reads it from a Config's sections), so the
experiment, soft personalization, the device simulation's cloud reference and
`tailorml.personalize_one` build contexts alike and none hands a whole Config down."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from tailorml.config import Config, ModelConfig, RobustConfig
from tailorml.personalize.base import Budget, Context
from tailorml.personalize.dataset import PersonalData
from tailorml.policy import AlertPolicy
from tailorml.recipe import Recipe, fresh_model
from tailorml.robust.evaluate import perturbation_for


@dataclass(frozen=True)
class StrategyTraining:
    """How personalization strategies train: the recipe (`[train]`), the network
    (`[model]`), the fine-tuning rate and autoencoder epochs (`[experiment]`) and the
    sensor error robust methods train against (`[robust]`)."""

    recipe: Recipe
    model: ModelConfig
    finetune_learning_rate: float
    autoencoder_epochs: int
    robust: RobustConfig

    @classmethod
    def from_config(cls, config: Config) -> StrategyTraining:
        return cls(
            recipe=Recipe.from_config(config.train),
            model=config.model,
            finetune_learning_rate=config.experiment.finetune_learning_rate,
            autoencoder_epochs=config.experiment.autoencoder_epochs,
            robust=config.robust,
        )


def context_for(
    training: StrategyTraining,
    data: PersonalData,
    individual: str,
    seed: int,
    global_model: Callable[[], nn.Module],
    *,
    latents: Callable[[], np.ndarray] | None = None,
    policy: AlertPolicy | None = None,
) -> Context:
    """What a strategy may look at when planning for `individual` and `seed`: the
    `budget`, fresh networks (`model_factory`), the predefined model (`global_model`, called
    only by plans that start from it), the latent of every sample (`latents`; default: an
    autoencoder fitted on first use, `latents_of`) and the sensor error of
    `training.robust` on the inputs of `policy` (default: the data's; pass the predefined
    model's)."""
    return Context(
        data=data,
        individual=individual,
        seed=seed,
        budget=budget(training, data, individual),
        new_model=model_factory(training.model, data, individual, seed),
        global_model=global_model,
        latents=latents or functools.cache(lambda: latents_of(training, data, seed)),
        perturbation=perturbation_for(training.robust, data.policy if policy is None else policy),
    )


def budget(training: StrategyTraining, data: PersonalData, individual: str) -> Budget:
    """The recipe, the fine-tuning rate, and the class weights of `individual`'s D_G."""
    recipe = training.recipe
    return Budget(
        recipe=recipe,
        finetune_learning_rate=training.finetune_learning_rate,
        class_weights=recipe.class_weights(data.y[data.general_train(individual)], data.n_classes),
    )


def model_factory(
    architecture: ModelConfig, data: PersonalData, individual: str, seed: int
) -> Callable[[], nn.Module]:
    """Fresh networks of `architecture`, initialised from `seed`, normalised with D_G's
    statistics, deciding by the data's alert policy (what they will be trained and judged
    for)."""
    general = data.x[data.general_train(individual)]

    def new_model() -> nn.Module:
        model = fresh_model(architecture, general, data.n_classes, seed, data.dims)
        model.policy = data.policy
        return model

    return new_model


def latents_of(training: StrategyTraining, data: PersonalData, seed: int) -> np.ndarray:
    """Autoencoder latent of every sample, the autoencoder fitted on the training data
    (every `general_stride`-th sample, with the recipe's batch size)."""
    from tailorml.models.autoencoder import fit_autoencoder

    train_indices = data.all_train()[:: data.general_stride]
    model = fit_autoencoder(
        data.x[train_indices],
        n_epochs=training.autoencoder_epochs,
        batch_size=training.recipe.batch_size,
        seed=seed,
    )
    return model.encode(data.x)
