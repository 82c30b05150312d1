"""Fairness-aware training (seed 001, Aim 3) as a plan over the one loop.

GroupDRO(eta): trained from scratch on D_G ∪ D_I like Baseline+D_I, but the batch loss is
the group-weighted loss of group distributionally robust optimisation (`models.group_dro`:
a weight per age group, raised for the group with the larger loss after each batch), so the
worst group's loss is what training lowers.
Compared with Baseline+D_I (same data, same steps, plain average loss), its cost and gain in
group gaps are measured by `tailorml experiment` (fairness.csv), not assumed.

ByNeed(n, target, base): personalize (with TL, L2-SP or FD) only the individuals whom the
global model serves below a target; the others keep the global model.
"""

from __future__ import annotations

import numpy as np

from tailorml.evaluate.metrics import classification_metrics
from tailorml.models.group_dro import GroupDRO, group_codes, n_groups
from tailorml.models.predict import predict_proba
from tailorml.models.schedule import epochs
from tailorml.personalize.base import Context, Plan, Strategy
from tailorml.personalize.dataset import PersonalData
from tailorml.personalize.evaluate import policy_of
from tailorml.personalize.generalize import FeatureDistilledTransfer
from tailorml.personalize.shaping import L2SP, TransferLearning

__all__ = ["ByNeed", "GroupDRO", "GroupDROTraining", "sample_groups"]


def sample_groups(data: PersonalData) -> np.ndarray:
    """Group code of every sample of the data set (NO_GROUP: no owner), from each
    individual's train and test indices and `data.groups`."""
    owners = np.full(len(data.y), "", dtype=object)
    for individual in data.groups:
        for part in (data.individual_train, data.individual_test):
            if individual in part:
                owners[part[individual]] = individual
    return group_codes(list(owners), data.groups)


class GroupDROTraining(Strategy):
    name = "group_dro"
    label = "GroupDRO"

    def __init__(self, eta: float = 0.01) -> None:
        if not eta >= 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.eta = eta

    def plan(self, context: Context) -> Plan:
        union = np.concatenate([context.general, context.own])
        codes = sample_groups(context.data)[union]
        if n_groups(codes) < 2:
            raise ValueError("group_dro needs individuals of at least two groups")
        budget = context.budget
        schedule = epochs("union", len(union), budget.batch_size, budget.epochs, context.seed)
        eta, weights = self.eta, budget.class_weights
        return Plan(
            start="scratch",
            sources={"union": union},
            schedule=schedule,
            plugins=[lambda model, ctx: GroupDRO(codes, schedule, eta, weights)],
        )


NEED_BASES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (TransferLearning, L2SP, FeatureDistilledTransfer)
}


class ByNeed(Strategy):
    """Adaptation allocated by need, not equally (seed 001, Aim 3): only an individual whom
    the global model serves below `target` (balanced accuracy of its decisions on the
    individual's own training windows, which the global model never saw) is personalized,
    with `base`(n); everyone else keeps the global model unchanged. Fine-tuning everybody
    helps some people and hurts others (docs/fairness.md); spending it only where the
    global model falls short is meant to lift the worst-served without moving those it
    already serves — measured by the experiment runner, not assumed."""

    name = "by_need"
    label = "ByNeed"

    def __init__(self, n: int = 300, target: float = 0.85, base: str = "feature_distillation"):
        if not 0 < target <= 1:
            raise ValueError(f"target must be a balanced accuracy in (0, 1], got {target!r}")
        if base not in NEED_BASES:
            raise ValueError(f"base must be one of {', '.join(NEED_BASES)}, got {base!r}")
        self.base_strategy = NEED_BASES[base](n=n)  # checks n
        self.n, self.target, self.base = n, target, base

    def served(self, context: Context) -> float:
        """How well the global model serves this individual: balanced accuracy of its
        decisions (by its own alert policy) on the individual's own training windows."""
        data, own, model = context.data, context.own, context.global_model()
        decisions = policy_of(model, data).decide(predict_proba(model, data.x[own]))
        return classification_metrics(data.y[own], decisions)["balanced_accuracy"]

    def check_inputs(self, channels: tuple[str, ...]) -> None:
        self.base_strategy.check_inputs(channels)

    def plan(self, context: Context) -> Plan:
        if self.served(context) >= self.target:
            return Plan(start="global")  # no steps: the global model, unchanged
        return self.base_strategy.plan(context)
