"""Knowledge distillation: a small student learns from a trained teacher's soft outputs.

The HE-friendly network (one convolution, a quadratic activation) ranks the few windows
before a low less sharply than the standard ReLU CNN; the teacher's probabilities carry
that ranking (how *near* to an alert a window is), which hard labels do not. The batch loss
becomes

    (1 - w) · CE(student, labels; class weights) + w · T² · KL(teacher_T ‖ student_T)

where `_T` is the softmax at temperature T (Hinton et al. 2015; T² keeps the soft term's
gradient on the scale of the hard one). It enters THE loop as a `LoopPlugin` replacing the
batch loss; the teacher is frozen and evaluated without gradients.

The teacher must have been trained on the same training windows only (a `tailorml train`
run of the same cohort and split): its soft targets are read on the student's training
batches, so nothing of the validation or test parts reaches the student through it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from tailorml.models.train import LoopPlugin


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    weight: float,
    temperature: float,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """(1 - weight) · cross-entropy with the labels + weight · T² · KL(teacher ‖ student),
    both distributions softened by `temperature`, the KL summed over classes and averaged
    over the batch."""
    hard = functional.cross_entropy(student_logits, labels, weight=class_weights)
    t = temperature
    soft = functional.kl_div(
        functional.log_softmax(student_logits / t, dim=1),
        functional.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1.0 - weight) * hard + weight * t * t * soft


class Distillation(LoopPlugin):
    """Replaces the batch loss by `distillation_loss` against a frozen `teacher`."""

    def __init__(
        self,
        teacher: nn.Module,
        *,
        weight: float,
        temperature: float,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"distillation weight {weight} must lie in [0, 1]")
        if temperature <= 0:
            raise ValueError(f"distillation temperature {temperature} must be positive")
        self.teacher = teacher.eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.weight, self.temperature, self.class_weights = weight, temperature, class_weights

    def batch_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int
    ) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        return distillation_loss(
            model(x),
            teacher_logits,
            y,
            weight=self.weight,
            temperature=self.temperature,
            class_weights=self.class_weights,
        )
