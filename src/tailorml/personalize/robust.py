"""Robust and sparse personalization methods (Aim 2 of "Personalized and Robust Deep
Learning"): the same plans as transfer learning, with another objective or a pruning
schedule for the one training loop.

- Certified training: the predefined model trained from scratch with IBP / CROWN-IBP.
- Adversarial fine-tuning: TL(n) with PGD examples in the sensor-error box.
- Certified fine-tuning: TL(n) with the IBP / CROWN-IBP objective.
- Sparse fine-tuning: TL(n) while pruning to `sparsity` (magnitude, or whole channels with
  `structured`), optionally with the certified objective (joint sparse + certified).

ε defaults to the experiment's `robust.eps` (the context's perturbation); a method's own
`eps` overrides it, in the same units (mg/dL on the CGM channel for glucose).
"""

from __future__ import annotations

from tailorml.personalize.base import Context, Plan, Strategy, global_plan
from tailorml.personalize.shaping import TransferLearning
from tailorml.robust.perturbation import SensorError
from tailorml.robust.training import KINDS, RobustTraining
from tailorml.sparse.prune import PruningSchedule


def _perturbation(context: Context, eps: float | None) -> SensorError:
    base = context.perturbation
    if eps is None:
        return base
    return SensorError(float(eps), base.relative, base.channels)


def _check_kind(kind: str, allowed: tuple[str, ...] = ("ibp", "crown-ibp")) -> str:
    if kind not in allowed:
        raise ValueError(f"bound must be one of {', '.join(allowed)}, got {kind!r}")
    return kind


def _check_eps(eps: float | None) -> float | None:
    if eps is not None and not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    return eps


class CertifiedTraining(Strategy):
    name = "certified_training"
    label = "Certified"

    def __init__(self, bound: str = "crown-ibp", eps: float | None = None) -> None:
        self.bound = _check_kind(bound)
        self.eps = _check_eps(eps)

    def plan(self, context: Context) -> Plan:
        plan = global_plan(context)
        plan.robust = RobustTraining(self.bound, _perturbation(context, self.eps))
        return plan


class AdversarialFinetuning(TransferLearning):
    name = "adversarial_finetuning"
    label = "TL+PGD"

    def __init__(self, n: int = 300, eps: float | None = None, pgd_steps: int = 5) -> None:
        super().__init__(n=n, frozen_layers=0)
        self.eps = _check_eps(eps)
        if pgd_steps < 1:
            raise ValueError(f"pgd_steps must be >= 1, got {pgd_steps}")
        self.pgd_steps = pgd_steps

    def plan(self, context: Context) -> Plan:
        plan = super().plan(context)
        plan.robust = RobustTraining(
            "pgd", _perturbation(context, self.eps), ramp_fraction=0.2, pgd_steps=self.pgd_steps
        )
        return plan


class CertifiedFinetuning(TransferLearning):
    name = "certified_finetuning"
    label = "TL+Cert"

    def __init__(self, n: int = 300, bound: str = "crown-ibp", eps: float | None = None) -> None:
        super().__init__(n=n, frozen_layers=0)
        self.bound = _check_kind(bound)
        self.eps = _check_eps(eps)

    def plan(self, context: Context) -> Plan:
        plan = super().plan(context)
        # starts from the predefined model: a short ramp keeps it from forgetting first
        plan.robust = RobustTraining(
            self.bound, _perturbation(context, self.eps), ramp_fraction=0.3
        )
        return plan


class SparseFinetuning(TransferLearning):
    name = "sparse_finetuning"
    label = "TL+Sparse"

    def __init__(
        self,
        n: int = 600,
        sparsity: float = 0.9,
        structured: bool = False,
        certified: str = "none",
        eps: float | None = None,
    ) -> None:
        super().__init__(n=n, frozen_layers=0)
        PruningSchedule(sparsity)  # validates
        self.sparsity, self.structured = sparsity, bool(structured)
        self.certified = _check_kind(certified, ("none", *KINDS[1:]))
        self.eps = _check_eps(eps)

    def plan(self, context: Context) -> Plan:
        plan = super().plan(context)
        plan.pruning = PruningSchedule(self.sparsity, self.structured)
        if self.certified != "none":
            plan.robust = RobustTraining(
                self.certified, _perturbation(context, self.eps), ramp_fraction=0.3
            )
        return plan
