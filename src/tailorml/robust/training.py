"""Robust training objectives (loop plugins for the one training loop): PGD adversarial training and
certified (IBP / CROWN-IBP) training, each with the usual ramps.

Certified training minimises a mix of the clean loss and the loss of the *worst-case
logits* implied by lower margin bounds (Gowal et al. 2018; Zhang et al. 2020):
    loss = kappa * CE(z, y) + (1 - kappa) * CE(-lower(z_y - z_j)_j, y)
Starting at full ε destroys training, so ε ramps linearly from 0 to its target over
`ramp_fraction` of the steps (after a clean `warmup_fraction`), kappa from 1 to `kappa_end`,
and for CROWN-IBP the bound mixes beta * CROWN-IBP + (1 - beta) * IBP with beta from 1 to
0 (CROWN-IBP's tighter bounds early, IBP's better-trained ones late).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tailorml.models.train import LoopPlugin
from tailorml.robust.attack import pgd
from tailorml.robust.bounds import bounds, margin_spec
from tailorml.robust.perturbation import SensorError

Kind = Literal["pgd", "ibp", "crown-ibp"]
KINDS: tuple[str, ...] = ("pgd", "ibp", "crown-ibp")


@dataclass(frozen=True)
class Ramp:
    """0 during warm-up, then linear up to 1 at warm-up + ramp, then 1."""

    total_steps: int
    warmup_fraction: float = 0.0
    ramp_fraction: float = 0.5

    def __call__(self, step: int) -> float:
        start = self.warmup_fraction * self.total_steps
        length = max(self.ramp_fraction * self.total_steps, 1e-9)
        return float(min(max((step - start) / length, 0.0), 1.0))


@dataclass(frozen=True)
class RobustTraining:
    """How a plan trains robustly; `plugin` turns it into a loss for the loop."""

    kind: Kind
    perturbation: SensorError
    warmup_fraction: float = 0.0
    ramp_fraction: float = 0.5
    kappa_end: float = 0.5
    pgd_steps: int = 5

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown robust training {self.kind!r}; choose one of {KINDS}")
        if not 0 <= self.kappa_end <= 1:
            raise ValueError(f"kappa_end must lie in [0, 1], got {self.kappa_end}")

    @classmethod
    def for_predefined(cls, kind: Kind, perturbation: SensorError) -> RobustTraining:
        """How a predefined model is trained from scratch: a clean tenth first, so the
        network has learned something before ε starts to grow."""
        return cls(kind, perturbation, warmup_fraction=0.1)

    def describe(self) -> str:
        return f"{self.kind} at {self.perturbation.describe()}"

    def plugin(self, total_steps: int, class_weights: torch.Tensor | None) -> RobustLoss:
        """The loop plugin that trains a schedule of `total_steps` steps this way."""
        return RobustLoss(
            self, Ramp(total_steps, self.warmup_fraction, self.ramp_fraction), class_weights
        )


@dataclass(frozen=True)
class RobustLoss(LoopPlugin):
    """Replaces the batch loss by the ramped adversarial or certified objective."""

    training: RobustTraining
    ramp: Ramp
    class_weights: torch.Tensor | None = None

    def batch_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int
    ) -> torch.Tensor:
        training, weights = self.training, self.class_weights
        progress = self.ramp(step)
        perturbation = training.perturbation.scaled(progress)
        logits = model(x)
        clean = F.cross_entropy(logits, y, weight=weights)
        if progress == 0:
            return clean
        if training.kind == "pgd":
            attacked = pgd(model, x, y, perturbation, steps=training.pgd_steps, seed=step)
            return 0.5 * clean + 0.5 * F.cross_entropy(model(attacked), y, weight=weights)
        worst = worst_case_logits(
            model, x, y, perturbation, training.kind, beta=1 - progress, n_classes=logits.shape[1]
        )
        kappa = 1 - progress * (1 - training.kappa_end)
        robust = F.cross_entropy(worst, y, weight=weights)
        return kappa * clean + (1 - kappa) * robust


def worst_case_logits(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    perturbation: SensorError,
    kind: str,
    beta: float = 0.0,
    n_classes: int | None = None,
) -> torch.Tensor:
    """Logits whose cross-entropy bounds the worst case over the box: 0 for the true class,
    minus the margin lower bound for every other class. Pass `n_classes` when the logits
    are at hand (training), to spare a forward pass."""
    n_classes = n_classes or model(x[:1]).shape[1]
    spec = margin_spec(y, n_classes, x.dtype)
    lower, _ = bounds(model, x, perturbation, "ibp", spec=spec, lower_only=True)
    if kind == "crown-ibp" and beta > 0:
        crown, _ = bounds(model, x, perturbation, "crown-ibp", spec=spec, lower_only=True)
        lower = beta * crown + (1 - beta) * lower
    logits = torch.zeros(len(x), n_classes, dtype=x.dtype)
    others = ~F.one_hot(y, n_classes).bool()
    logits[others] = -lower.reshape(-1)
    return logits
