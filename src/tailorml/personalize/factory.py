"""The strategy `Context` of one individual and seed, built from a config (`context_for`):
the budget (the `[train]` recipe plus fine-tuning settings), fresh networks, the predefined
model, the autoencoder latent space and the sensor error robust methods train against.
The one builder behind experiments, soft personalization and `tailorml.personalize_one`."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from torch import nn

from tailorml.config import Config
from tailorml.personalize.base import Budget, Context
from tailorml.personalize.dataset import PersonalData
from tailorml.policy import AlertPolicy
from tailorml.recipe import Recipe, fresh_model
from tailorml.robust.evaluate import perturbation_for


def context_for(
    config: Config,
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
    autoencoder fitted on first use, `latents_of`) and the configured sensor error on the
    inputs of `policy` (default: the data's; pass the predefined model's)."""
    return Context(
        data=data,
        individual=individual,
        seed=seed,
        budget=budget(config, data, individual),
        new_model=model_factory(config, data, individual, seed),
        global_model=global_model,
        latents=latents or functools.cache(lambda: latents_of(config, data, seed)),
        perturbation=perturbation_for(config, data.policy if policy is None else policy),
    )


def budget(config: Config, data: PersonalData, individual: str) -> Budget:
    """The recipe of `[train]`, the experiment's fine-tuning rate, and the class weights
    of `individual`'s D_G."""
    recipe = Recipe.from_config(config.train)
    return Budget(
        recipe=recipe,
        finetune_learning_rate=config.experiment.finetune_learning_rate,
        class_weights=recipe.class_weights(data.y[data.general_train(individual)], data.n_classes),
    )


def model_factory(
    config: Config, data: PersonalData, individual: str, seed: int
) -> Callable[[], nn.Module]:
    """Fresh networks, initialised from `seed`, normalised with D_G's statistics, deciding
    by the data's alert policy (what they will be trained and judged for)."""
    general = data.x[data.general_train(individual)]

    def new_model() -> nn.Module:
        model = fresh_model(config.model, general, data.n_classes, seed, data.dims)
        model.policy = data.policy
        return model

    return new_model


def latents_of(config: Config, data: PersonalData, seed: int) -> np.ndarray:
    """Autoencoder latent of every sample, the autoencoder fitted on the training data
    (every `general_stride`-th sample, with the recipe's batch size)."""
    from tailorml.models.autoencoder import fit_autoencoder

    train_indices = data.all_train()[:: data.general_stride]
    model = fit_autoencoder(
        data.x[train_indices],
        n_epochs=config.experiment.autoencoder_epochs,
        batch_size=config.train.batch_size,
        seed=seed,
    )
    return model.encode(data.x)
