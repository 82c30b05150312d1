"""Fairness-aware training (seed 001, Aim 3) as a plan over the one loop.

GroupDRO(eta): trained from scratch on D_G ∪ D_I like Baseline+D_I, but the batch loss is
the group-weighted loss of group distributionally robust optimisation (Sagawa et al., ICLR
2020, their online algorithm): a weight q_g per age group, q_g <- q_g exp(eta * loss_g) after
each batch (then normalised), loss = sum_g q_g loss_g over the groups in the batch. Groups
whose windows are hard get more weight, so the worst group's loss is what training lowers.
Compared with Baseline+D_I (same data, same steps, plain average loss), its cost and gain in
group gaps are measured by `tailorml experiment` (fairness.csv), not assumed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tailorml.models.schedule import Step, epochs
from tailorml.models.train import LoopPlugin
from tailorml.personalize.base import Context, Plan, Strategy, register


def sample_groups(context: Context) -> np.ndarray:
    """Group code of every sample of the data set (-1: no owner), from each individual's
    train and test indices and `data.groups`."""
    data = context.data
    names = sorted(set(data.groups.values()))
    codes = np.full(len(data.y), -1, dtype=np.int64)
    for individual, group in data.groups.items():
        for part in (data.individual_train, data.individual_test):
            if individual in part:
                codes[part[individual]] = names.index(group)
    return codes


class GroupDRO(LoopPlugin):
    """Online group DRO over the groups of each step's samples (`codes`: the group of every
    sample of the step's source, by position)."""

    def __init__(
        self,
        codes: np.ndarray,
        schedule: list[Step],
        eta: float,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        self.codes = torch.as_tensor(codes, dtype=torch.long)
        self.groups = int(codes.max()) + 1 if len(codes) else 0
        self.q = torch.full((self.groups,), 1.0 / max(self.groups, 1))
        self.indices = [torch.as_tensor(step.indices, dtype=torch.long) for step in schedule]
        self.eta, self.class_weights = eta, class_weights

    def batch_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int
    ) -> torch.Tensor | None:
        losses = F.cross_entropy(model(x), y, weight=self.class_weights, reduction="none")
        groups = self.codes[self.indices[step - 1]]
        present = torch.unique(groups[groups >= 0])
        if len(present) == 0:
            return losses.mean()
        means = torch.stack([losses[groups == g].mean() for g in present])
        with torch.no_grad():
            self.q[present] *= torch.exp(self.eta * means)
            self.q /= self.q.sum()
        weights = self.q[present] / self.q[present].sum()
        return (weights * means).sum()


@register
class GroupDROTraining(Strategy):
    name = "group_dro"
    label = "GroupDRO"

    def __init__(self, eta: float = 0.01) -> None:
        if not eta >= 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.eta = eta

    def plan(self, context: Context) -> Plan:
        if len(set(context.data.groups.values())) < 2:
            raise ValueError("group_dro needs individuals of at least two groups")
        union = np.concatenate([context.general, context.own])
        budget = context.budget
        schedule = epochs("union", len(union), budget.batch_size, budget.epochs, context.seed)
        codes = sample_groups(context)[union]
        eta, weights = self.eta, budget.class_weights
        return Plan(
            start="scratch",
            sources={"union": union},
            schedule=schedule,
            plugins=[lambda model, ctx: GroupDRO(codes, schedule, eta, weights)],
        )
