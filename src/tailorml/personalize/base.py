"""The strategy API: a personalization method is a *plan* for the one training loop.

A plan says where training starts (a fresh network or the global model), which samples
form each data source, the schedule of batches over those sources, which layers are frozen
and whether weights are pulled back towards the start (L2-SP). `execute` runs any plan with
`tailorml.models.train.train`; strategies never train anything themselves, so a test can
check a strategy's schedule without training.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from tailorml.models.schedule import Step
from tailorml.models.train import LabeledData, LoopPlugin, train
from tailorml.personalize.dataset import PersonalData
from tailorml.recipe import Recipe
from tailorml.robust.perturbation import DEFAULT_EPS_MGDL, SensorError
from tailorml.robust.training import RobustTraining
from tailorml.sparse.prune import Pruner, PruningSchedule, compact


@dataclass(frozen=True)
class Budget:
    """Training settings shared by every method (fair comparison): the predefined model's
    recipe (`[train]`) for everything trained from scratch, a learning rate for fine-tuning
    the predefined model, and the class weights of the individual's D_G."""

    recipe: Recipe
    finetune_learning_rate: float = 1e-3
    class_weights: torch.Tensor | None = None

    @property
    def epochs(self) -> int:
        return self.recipe.epochs

    @property
    def batch_size(self) -> int:
        return self.recipe.batch_size

    @property
    def learning_rate(self) -> float:
        return self.recipe.learning_rate

    @property
    def weight_decay(self) -> float:
        return self.recipe.weight_decay


@dataclass
class Plan:
    start: Literal["scratch", "global"]
    sources: dict[str, np.ndarray] = field(default_factory=dict)  # name -> indices into x
    schedule: list[Step] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    l2sp: float = 0.0  # weight alpha of alpha/2 * ||w - w_start||^2
    robust: RobustTraining | None = None  # adversarial or certified objective
    pruning: PruningSchedule | None = None  # sparsity reached during the schedule
    # further objectives: each called with (the model being trained, the context) once the
    # start is chosen, giving a LoopPlugin (feature distillation, co-teaching, group DRO)
    plugins: list[Callable[[nn.Module, Context], LoopPlugin]] = field(default_factory=list)


@dataclass
class Context:
    """What a strategy may look at when planning for one individual and seed."""

    data: PersonalData
    individual: str
    seed: int
    budget: Budget
    new_model: Callable[[], nn.Module]  # a freshly initialised network (seeded)
    global_model: Callable[[], nn.Module]  # the predefined model trained on this D_G
    latents: Callable[[], np.ndarray]  # autoencoder latent of every sample
    # the sensor error robust methods train against (glucose: CGM channel, mg/dL)
    perturbation: SensorError = field(default_factory=lambda: SensorError(DEFAULT_EPS_MGDL))

    @property
    def general(self) -> np.ndarray:
        return self.data.general_train(self.individual)

    @property
    def own(self) -> np.ndarray:
        return self.data.individual_train[self.individual]


class Strategy:
    """Base of all methods; subclasses set `name`/`label` and implement `plan`.

    Like scikit-learn estimators, hyper-parameters are the constructor's arguments.
    `needs` names what a plan looks at beyond data and models (e.g. "latents": the
    autoencoder's latent space), so a runner prepares it only when some method needs it."""

    name: ClassVar[str]
    label: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()

    def plan(self, context: Context) -> Plan:
        raise NotImplementedError

    def check_inputs(self, channels: tuple[str, ...]) -> None:
        """Raise ValueError if this method cannot personalize a model reading `channels`
        (called by runners before any training, so a bad config fails early)."""

    def params(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in inspect.signature(type(self)).parameters}

    def describe(self) -> str:
        inner = ", ".join(
            f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in self.params().items()
            if value is not None  # an unset option (e.g. eps from the config) says nothing
        )
        return f"{self.label}({inner})" if inner else self.label


def global_plan(context: Context) -> Plan:
    """The predefined model's schedule as a plan: from scratch, the recipe's epochs over D_G
    (without its robust objective; a strategy that wants one sets `plan.robust`)."""
    general = context.general
    return Plan(
        start="scratch",
        sources={"general": general},
        schedule=context.budget.recipe.schedule(len(general), context.seed),
    )


class L2SP(LoopPlugin):
    """alpha/2 * squared distance of the trainable weights from their values at creation
    (Li, Grandvalet & Davoine, ICML 2018), added to every step."""

    def __init__(self, model: nn.Module, alpha: float) -> None:
        self.alpha = alpha
        self.start = {
            name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad
        }

    def penalty(self, model: nn.Module, step: int) -> torch.Tensor:
        total = sum(
            ((p - self.start[name]) ** 2).sum()
            for name, p in model.named_parameters()
            if name in self.start
        )
        return 0.5 * self.alpha * total


def execute(plan: Plan, context: Context) -> nn.Module:
    """Run a plan with the one training loop and return the trained network."""
    if plan.start == "global":
        model = copy.deepcopy(context.global_model())
        learning_rate = context.budget.finetune_learning_rate
    else:
        model = context.new_model()
        learning_rate = context.budget.learning_rate
    if not plan.schedule:
        return model.eval()
    data = context.data
    sources = {
        name: LabeledData.from_numpy(data.x[indices], data.y[indices])
        for name, indices in plan.sources.items()
    }
    total = len(plan.schedule)
    plugins: list[LoopPlugin] = []
    if plan.robust:
        plugins.append(plan.robust.plugin(total, context.budget.class_weights))
    if plan.l2sp:
        plugins.append(L2SP(model, plan.l2sp))
    if plan.pruning:
        plugins.append(Pruner(model, plan.pruning, total))
    plugins += [make(model, context) for make in plan.plugins]
    train(
        model,
        sources,
        plan.schedule,
        learning_rate=learning_rate,
        weight_decay=context.budget.weight_decay,
        class_weights=context.budget.class_weights,
        frozen=list(plan.frozen),
        plugins=plugins,
        seed=context.seed,
    )
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if plan.pruning and plan.pruning.structured:
        model = compact(model)  # physically smaller, same outputs
    return model.eval()
