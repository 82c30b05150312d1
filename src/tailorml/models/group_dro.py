"""Group DRO (Sagawa et al., ICLR 2020, their online algorithm) as a plugin of the one loop.

A weight q_g per group, q_g <- q_g exp(eta * loss_g) after each batch (then normalised); the
batch loss is sum_g q_g loss_g over the groups in the batch, so the worst group's loss is
what training lowers. Used for the predefined model (`train.group_dro_eta`) and by the
GroupDRO personalization method (`personalize.fair`); it lives here, beside the loop,
because both the predefined model's recipe and the methods use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tailorml.models.schedule import Step
from tailorml.models.train import LoopPlugin

NO_GROUP = -1


def group_codes(owners: Sequence[str], group_of: Mapping[str, str]) -> np.ndarray:
    """Group code (index into the sorted group names) of each sample, from its owner's id;
    NO_GROUP for a sample whose owner has no group."""
    names = sorted(set(group_of.values()))
    lookup = {owner: names.index(group) for owner, group in group_of.items()}
    return np.array([lookup.get(owner, NO_GROUP) for owner in owners], dtype=np.int64)


def n_groups(codes: np.ndarray) -> int:
    return len(np.unique(codes[codes != NO_GROUP]))


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
