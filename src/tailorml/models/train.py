"""THE training loop, and the small plugin protocol through which extensions enter it.

Every model of tailorml is trained by `train`: a schedule (which batches of which data
source, in which order, with which weight) run with Adam over the unfrozen parameters.
The default batch loss is cross-entropy with optional class weights; everything else that
changes a step enters as a `LoopPlugin`:

- `batch_loss` replaces the batch loss (robust training: PGD / certified objective; the
  autoencoder: reconstruction error); at most one plugin may do so;
- `penalty` adds a term to every step (L2-SP towards the starting weights);
- `after_step` runs after each optimiser step (pruning masks, progress bars).

Every hook is told the step number (1, 2, ..., len(schedule)), so no plugin counts calls.
With `validate`, the best checkpoint (scored every `validate_every` steps and at the end)
is restored at the end.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tailorml.errors import TailormlError
from tailorml.models.schedule import Step
from tailorml.progress import Task

DIVERGED = (
    "training diverged at step {step} of {steps}: the loss is {loss}; lower the learning rate "
    "(train.learning_rate) or check the inputs for extreme values — nothing was saved"
)
DIVERGED_WEIGHTS = (
    "training produced non-finite weights; lower the learning rate (train.learning_rate) — "
    "nothing was saved"
)


class TrainingDiverged(TailormlError):
    """Training met a non-finite loss or weights: a model that outputs NaN is no model."""


class LoopPlugin:
    """A hook into `train`; override only what you need (the defaults do nothing)."""

    def batch_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int
    ) -> torch.Tensor | None:
        """The loss of batch (x, y) at `step`, replacing the default; None keeps it."""
        return None

    def penalty(self, model: nn.Module, step: int) -> torch.Tensor | None:
        """A term added to the loss of `step` (not scaled by the step's weight)."""
        return None

    def after_step(self, step: int, loss: float) -> None:
        """Called after the optimiser step `step`; `loss` is the running training loss
        (step 1: its own loss; then 0.98 * previous + 0.02 * the step's loss)."""


class EpochProgress(LoopPlugin):
    """Advances a progress task every step and shows epoch and loss at each epoch's end."""

    def __init__(self, task: Task, steps_per_epoch: int, name: str = "training") -> None:
        self.task, self.steps_per_epoch, self.name = task, steps_per_epoch, name

    def after_step(self, step: int, loss: float) -> None:
        self.task.advance()
        if step % self.steps_per_epoch == 0:
            epoch = step // self.steps_per_epoch
            self.task.describe(f"{self.name} (epoch {epoch}, loss {loss:.3f})")


def use_threads(threads: int) -> None:
    """The one place tailorml sets torch's intra-op threads (jobs call it at their start)."""
    torch.set_num_threads(threads)


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
    plugins: Sequence[LoopPlugin] = (),
    validate: Callable[[nn.Module], float] | None = None,
    validate_every: int = 0,
    seed: int = 0,
) -> TrainResult:
    """Run `schedule` on `model` with Adam (seeded with `seed`); leaves it in eval mode.

    A step's loss is `batch_loss` (a plugin's, else cross-entropy with `class_weights`)
    times the step's weight, plus every plugin's `penalty`. With `validate` (higher is
    better) the best checkpoint is kept; `TrainResult.history` has one row per checkpoint."""
    torch.manual_seed(seed)
    missing = sorted({step.source for step in schedule} - set(sources))
    if missing:
        raise ValueError(f"schedule uses unknown data source(s) {missing}; have {sorted(sources)}")
    freeze(model, frozen)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=learning_rate, weight_decay=weight_decay)
    cross_entropy = nn.CrossEntropyLoss(weight=class_weights)

    def batch_loss(x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        losses = [
            loss for plugin in plugins if (loss := plugin.batch_loss(model, x, y, step)) is not None
        ]
        if len(losses) > 1:
            raise ValueError(f"{len(losses)} plugins replaced the batch loss; at most one may")
        return losses[0] if losses else cross_entropy(model(x), y)

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
        loss = batch_loss(data.x[batch], data.y[batch], number) * step.weight
        for plugin in plugins:
            term = plugin.penalty(model, number)
            if term is not None:
                loss = loss + term
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingDiverged(DIVERGED.format(step=number, steps=len(schedule), loss=value))
        loss.backward()
        optimizer.step()
        running = 0.98 * running + 0.02 * value if number > 1 else value
        for plugin in plugins:
            plugin.after_step(number, running)
        if validate and validate_every and number % validate_every == 0 and number < len(schedule):
            checkpoint(number)
    if validate:
        checkpoint(len(schedule))
        model.load_state_dict(best_state)
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise TrainingDiverged(DIVERGED_WEIGHTS)
    model.eval()
    return result
