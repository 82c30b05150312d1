"""Per-window weights in the batch loss (a `LoopPlugin` of the one loop).

Class weights make every class count equally; some windows of one class still matter more
than others. A quiet alarm is judged by the lows it announces early enough to act on
(`alerts.useful_lead_minutes`), and the windows that precede such a low by a useful lead
are few among the hypo windows, most of which already sit at the edge of the low. Giving
those windows more weight (`train.early_weight`, chosen in `tailorml.pipeline`) tells
training which mistakes cost the most. The loss is the weighted mean

    Σ_i w_i · c_{y_i} · CE_i / Σ_i w_i · c_{y_i}

(c the class weights), which is exactly the plain class-weighted cross-entropy when every
w_i is 1. The weights are indexed by the position of each window in the training source,
read through the schedule's batches, as group DRO reads its groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tailorml.models.schedule import Step
from tailorml.models.train import LoopPlugin


def weighted_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    sample_weights: torch.Tensor,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Σ w_i c_{y_i} CE_i / Σ w_i c_{y_i}: the class-weighted mean, each window weighted."""
    losses = F.cross_entropy(logits, labels, weight=class_weights, reduction="none")
    per_class = class_weights[labels] if class_weights is not None else torch.ones_like(losses)
    return (sample_weights * losses).sum() / (sample_weights * per_class).sum()


class SampleWeights(LoopPlugin):
    """Replaces the batch loss by `weighted_cross_entropy` with `weights` (one per window of
    the schedule's source, by position)."""

    def __init__(
        self,
        weights: np.ndarray,
        schedule: Sequence[Step],
        class_weights: torch.Tensor | None = None,
    ) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1 or not np.isfinite(weights).all() or (weights <= 0).any():
            raise ValueError("sample weights must be one finite, positive number per window")
        self.weights = torch.as_tensor(weights, dtype=torch.float32)
        self.indices = [torch.as_tensor(step.indices, dtype=torch.long) for step in schedule]
        self.class_weights = class_weights

    def batch_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int
    ) -> torch.Tensor | None:
        weights = self.weights[self.indices[step - 1]]
        return weighted_cross_entropy(model(x), y, weights, self.class_weights)
