"""PGD (Madry et al. 2018) inside the sensor-error box: the empirical side of robustness.

An attack only shows that an error *exists*; it gives an upper bound on robust accuracy,
where certification gives a lower one. Used for PGD accuracy, adversarial fine-tuning and
the soundness tests of the bounds (an attacked point must stay inside them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tailorml.policy import AlertPolicy
from tailorml.robust.perturbation import SensorError

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    perturbation: SensorError,
    steps: int = 10,
    step_fraction: float = 0.25,
    random_start: bool = True,
    loss: Loss | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Inputs within the box around `x` that maximise `loss(logits, labels)` (default:
    cross-entropy), by `steps` signed-gradient steps of `step_fraction` times the box radius."""
    loss = loss or (lambda logits, y: F.cross_entropy(logits, y))
    lower, upper = perturbation.box(x)
    radius = (upper - lower) / 2
    if steps <= 0 or float(radius.max()) == 0:
        return x.detach().clone()
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
    adversarial = (x + noise * radius) if random_start else x.clone()
    adversarial = adversarial.detach()
    for _ in range(steps):
        adversarial.requires_grad_(True)
        value = loss(model(adversarial), labels)
        (gradient,) = torch.autograd.grad(value, adversarial)
        with torch.no_grad():
            adversarial = adversarial + step_fraction * radius * gradient.sign()
            adversarial = torch.maximum(torch.minimum(adversarial, upper), lower)
        adversarial = adversarial.detach()
    model.train(was_training)
    return adversarial


def pgd_decisions(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    perturbation: SensorError,
    policy: AlertPolicy,
    steps: int = 10,
    seed: int = 0,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Whether the decision under `policy` stays correct under PGD (cross-entropy attack),
    per sample."""

    def decide(probabilities: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(policy.decide(probabilities.numpy()))

    survived = []
    for start in range(0, len(x), batch_size):
        batch, batch_labels = x[start : start + batch_size], labels[start : start + batch_size]
        attacked = pgd(model, batch, batch_labels, perturbation, steps=steps, seed=seed + start)
        with torch.no_grad():
            clean_ok = decide(torch.softmax(model(batch), 1)) == batch_labels
            attacked_ok = decide(torch.softmax(model(attacked), 1)) == batch_labels
        survived.append(clean_ok & attacked_ok)
    return torch.cat(survived) if survived else torch.zeros(0, dtype=torch.bool)
