"""A step a notebook takes as one call on objects: personalize a model for one person
(`personalize_one`, which builds the strategy `Context` and runs the strategy's plan with
the one training loop); evaluating a model is `evaluate.individuals.evaluate_model`.
`tailorml/__init__.py` exports both with the rest of the public face (docs/python_api.md).

Both decide by the model's own alert policy, as the train job, `tailorml evaluate` and the
experiment's columns (`personalize.evaluate`) do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from tailorml.config import Config
from tailorml.data.prepared import Prepared
from tailorml.errors import ConfigError, TailormlError
from tailorml.personalize import execute, make_strategy
from tailorml.personalize.base import Strategy
from tailorml.personalize.dataset import from_prepared
from tailorml.personalize.evaluate import evaluate_personalized, policy_of
from tailorml.personalize.factory import StrategyTraining, context_for


@dataclass(frozen=True)
class Personalized:
    """One person's personalized model and what it changed on their own test windows:
    `before` (the predefined model) and `after` (the personalized one) hold the
    experiment's columns (acc_individual, balanced_acc_individual, acc_general, hypo
    sensitivity, false alerts per day, ...), each decided by that model's own policy."""

    individual: str
    method: str  # the strategy with its settings, e.g. "TL(n=100)"
    model: nn.Module
    train_steps: int  # 0: the plan kept the predefined model unchanged (e.g. by_need)
    before: dict[str, float]
    after: dict[str, float]

    def change(self, metric: str) -> float:
        """after - before of one column (e.g. "balanced_acc_individual")."""
        return self.after[metric] - self.before[metric]


def personalize_one(
    config: Config,
    prepared: Prepared,
    model: nn.Module,
    individual: str,
    method: str | Strategy = "transfer",
    *,
    seed: int | None = None,
    **params: Any,
) -> Personalized:
    """Personalize the predefined `model` for `individual` with one strategy (a name of
    `tailorml.STRATEGIES` and its parameters, or a built `Strategy`): its plan runs with the
    one training loop on the person's training part of `prepared`, with the `[train]`
    recipe, `experiment.finetune_learning_rate` and `experiment.general_stride` of
    `config`, seeded by `seed` (default `train.seed`). `model` itself is not changed.

    No gate, review or registry here: that is `tailorml personalize` (soft
    personalization), which proposes a candidate only if it passes every gate."""
    data = from_prepared(prepared, config, config.experiment.general_stride)
    if individual not in data.ids:
        raise TailormlError(f"unknown individual {individual!r}; valid: {', '.join(data.ids)}")
    if isinstance(method, Strategy):
        if params:
            raise ConfigError("pass a strategy's parameters to its constructor, not here")
        strategy = method
    else:
        strategy = make_strategy(method, **params)
    policy = policy_of(model, data)  # also refuses a model made for other inputs
    try:
        strategy.check_inputs(policy.channels)
    except ValueError as error:
        raise ConfigError(f"method {strategy.describe()}: {error}") from None
    seed = config.train.seed if seed is None else seed
    training = StrategyTraining.from_config(config)
    context = context_for(training, data, individual, seed, lambda: model, policy=policy)
    plan = strategy.plan(context)
    personal = execute(plan, context)
    return Personalized(
        individual=individual,
        method=strategy.describe(),
        model=personal,
        train_steps=len(plan.schedule),
        before=evaluate_personalized(model, data, individual, config),
        after=evaluate_personalized(personal, data, individual, config),
    )
