"""THE training loop. Strategies differ only in the schedule and the frozen layers they pass.

One loop means one place for the optimiser, class weighting, checkpoint selection and
determinism; a new personalization method is a new schedule, not a new loop.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tailorml.models.schedule import Step

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LabeledData:
    x: torch.Tensor
    y: torch.Tensor

    @classmethod
    def from_numpy(cls, x: np.ndarray, y: np.ndarray) -> LabeledData:
        return cls(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class TrainResult:
    steps: int
    history: list[dict] = field(default_factory=list)  # one row per checkpoint
    best_step: int | None = None
    best_score: float | None = None


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """n / (k * count_c): every class contributes equally; absent classes get weight 0."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.as_tensor(weights, dtype=torch.float32)


def _in_layer(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix if prefix.endswith(".") else prefix + ".")


def freeze(model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Stop gradients for the parameters of the layers named by `prefixes` ('head.3')."""
    frozen = []
    for name, parameter in model.named_parameters():
        if any(_in_layer(name, prefix) for prefix in prefixes):
            parameter.requires_grad_(False)
            frozen.append(name)
    names = [name for name, _ in model.named_parameters()]
    unknown = [p for p in prefixes if not any(_in_layer(n, p) for n in names)]
    if unknown:
        raise ValueError(
            f"no parameters match frozen prefix(es) {unknown}; parameters: {', '.join(names)}"
        )
    return frozen


def train(
    model: nn.Module,
    sources: Mapping[str, LabeledData],
    schedule: Sequence[Step],
    *,
    learning_rate: float,
    weight_decay: float = 0.0,
    class_weights: torch.Tensor | None = None,
    frozen: Sequence[str] = (),
    objective: Objective | None = None,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    validate: Callable[[nn.Module], float] | None = None,
    validate_every: int = 0,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Run `schedule` on `model` with Adam.

    `objective(model, x, y)` is the batch loss (default: cross-entropy with `class_weights`;
    an autoencoder passes reconstruction error); `penalty(model)` is added to every step
    (e.g. L2-SP towards pretrained weights). With `validate` (higher is better), the best
    checkpoint, evaluated every `validate_every` steps and at the end, is kept."""
    torch.manual_seed(seed)
    missing = sorted({step.source for step in schedule} - set(sources))
    if missing:
        raise ValueError(f"schedule uses unknown data source(s) {missing}; have {sorted(sources)}")
    freeze(model, frozen)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=learning_rate, weight_decay=weight_decay)
    if objective is None:
        cross_entropy = nn.CrossEntropyLoss(weight=class_weights)

        def objective(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return cross_entropy(net(x), y)

    result = TrainResult(steps=len(schedule))
    best_state = None
    running = 0.0

    def checkpoint(step_number: int) -> None:
        nonlocal best_state
        model.eval()
        score = float(validate(model))
        model.train()
        result.history.append({"step": step_number, "train_loss": running, "val_score": score})
        if result.best_score is None or score > result.best_score:
            result.best_score, result.best_step = score, step_number
            best_state = copy.deepcopy(model.state_dict())

    model.train()
    for number, step in enumerate(schedule, start=1):
        data = sources[step.source]
        batch = torch.as_tensor(step.indices, dtype=torch.long)
        optimizer.zero_grad(set_to_none=True)
        loss = objective(model, data.x[batch], data.y[batch]) * step.weight
        if penalty is not None:
            loss = loss + penalty(model)
        loss.backward()
        optimizer.step()
        value = loss.item()
        running = 0.98 * running + 0.02 * value if number > 1 else value
        if on_step:
            on_step(number, running)
        if validate and validate_every and number % validate_every == 0 and number < len(schedule):
            checkpoint(number)
    if validate:
        checkpoint(len(schedule))
        model.load_state_dict(best_state)
    model.eval()
    return result
