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

from tailorml.errors import ConfigError
from tailorml.models.schedule import Step, epochs
from tailorml.models.train import LabeledData, train
from tailorml.personalize.dataset import PersonalData
from tailorml.robust.perturbation import DEFAULT_EPS_MGDL, SensorError
from tailorml.robust.training import RobustTraining
from tailorml.sparse.prune import Pruner, PruningSchedule, compact


@dataclass
class Budget:
    """Training settings shared by every method of an experiment (fair comparison)."""

    epochs: int = 4
    batch_size: int = 128
    learning_rate: float = 2e-3
    finetune_learning_rate: float = 1e-3
    weight_decay: float = 0.0
    class_weights: torch.Tensor | None = None


@dataclass
class Plan:
    start: Literal["scratch", "global"]
    sources: dict[str, np.ndarray] = field(default_factory=dict)  # name -> indices into x
    schedule: list[Step] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    l2sp: float = 0.0  # weight alpha of alpha/2 * ||w - w_start||^2
    robust: RobustTraining | None = None  # adversarial or certified objective
    pruning: PruningSchedule | None = None  # sparsity reached during the schedule


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

    Like scikit-learn estimators, hyper-parameters are the constructor's arguments."""

    name: ClassVar[str]
    label: ClassVar[str]

    def plan(self, context: Context) -> Plan:
        raise NotImplementedError

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
    """How the predefined (global) model is trained: from scratch, epochs over D_G."""
    general = context.general
    return Plan(
        start="scratch",
        sources={"general": general},
        schedule=epochs(
            "general", len(general), context.budget.batch_size, context.budget.epochs, context.seed
        ),
    )


def l2sp_penalty(model: nn.Module, alpha: float) -> Callable[[nn.Module], torch.Tensor]:
    """alpha/2 * squared distance of the trainable weights from their starting values."""
    start = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    def penalty(net: nn.Module) -> torch.Tensor:
        total = sum(
            ((p - start[name]) ** 2).sum() for name, p in net.named_parameters() if name in start
        )
        return 0.5 * alpha * total

    return penalty


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
    frozen = list(plan.frozen)
    total = len(plan.schedule)
    objective = plan.robust.objective(total, context.budget.class_weights) if plan.robust else None
    pruner = Pruner(model, plan.pruning, total) if plan.pruning else None
    train(
        model,
        sources,
        plan.schedule,
        learning_rate=learning_rate,
        weight_decay=context.budget.weight_decay,
        class_weights=context.budget.class_weights,
        frozen=frozen,
        objective=objective,
        penalty=l2sp_penalty(model, plan.l2sp) if plan.l2sp else None,
        seed=context.seed,
        on_step=pruner.after_step if pruner else None,
    )
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if plan.pruning and plan.pruning.structured:
        model = compact(model)  # physically smaller, same outputs
    return model.eval()


REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    REGISTRY[cls.name] = cls
    return cls


def make_strategy(name: str, **params: Any) -> Strategy:
    """Build a strategy by registry name; bad names and parameters list the valid ones."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown method '{name}'; valid methods: {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[name]
    valid = list(inspect.signature(cls).parameters)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(
            f"method '{name}' has no parameter {', '.join(unknown)}; valid: "
            f"{', '.join(valid) if valid else '(none)'}"
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"method '{name}': {error}") from None
