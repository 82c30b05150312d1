"""Sample schedules: which samples the training loop sees, in which order, with which weight.

Everything tailorml trains is a schedule fed to the one loop in `tailorml.models.train`:
the predefined model and the autoencoder (`epochs`), and every personalization strategy of
`tailorml.personalize` (`epochs`, `iterations` on D_I, `sample_weighing` over D_G and D_I).
A schedule is a plain list of steps, so it can be inspected and tested without training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Step:
    """One optimisation step: a batch of `indices` from data source `source`."""

    source: str
    indices: np.ndarray
    weight: float = 1.0  # multiplies the batch loss


def epoch_batches(
    n_samples: int, batch_size: int, rng: np.random.Generator, drop_last: bool = False
) -> list[np.ndarray]:
    """One pass over `n_samples` in a random order, cut into batches."""
    order = rng.permutation(n_samples)
    stop = n_samples - n_samples % batch_size if drop_last else n_samples
    return [order[start : start + batch_size] for start in range(0, stop, batch_size)]


def epochs(source: str, n_samples: int, batch_size: int, n_epochs: int, seed: int) -> list[Step]:
    """`n_epochs` shuffled passes over one source (plain training)."""
    if n_samples <= 0:
        raise ValueError(f"source {source!r} has no samples to train on")
    rng = np.random.default_rng(seed)
    return [
        Step(source, batch)
        for _ in range(n_epochs)
        for batch in epoch_batches(n_samples, batch_size, rng)
    ]


class _Cycler:
    """Endless shuffled passes over `n_samples`, handed out one batch at a time."""

    def __init__(self, n_samples: int, batch_size: int, rng: np.random.Generator) -> None:
        self.n_samples, self.batch_size, self.rng = n_samples, batch_size, rng
        self.pending: list[np.ndarray] = []

    def next(self) -> np.ndarray:
        if not self.pending:
            self.pending = epoch_batches(self.n_samples, self.batch_size, self.rng)[::-1]
        return self.pending.pop()


def iterations(source: str, n_samples: int, batch_size: int, n_steps: int, seed: int) -> list[Step]:
    """`n_steps` batches from one source, reshuffled after every full pass ("train N on a
    batch from D_I, n times" in the paper's algorithms)."""
    if n_steps and n_samples <= 0:
        raise ValueError(f"source {source!r} has no samples to train on")
    cycler = _Cycler(n_samples, batch_size, np.random.default_rng(seed))
    return [Step(source, cycler.next()) for _ in range(n_steps)]


def takes_individual_batch(j: int, n_i: float) -> bool:
    """Algorithm 1 of "Personalization of Deep Learning", line 5, for iteration j >= 1:
    n_I >= 1 -> every n_I-th batch is from D_I; n_I < 1 -> all but every (1/n_I)-th."""
    if n_i >= 1:
        return j % round(n_i) == 0
    return j % round(1 / n_i) != 0


def check_periodicity(n_i: float) -> None:
    if n_i <= 0:
        raise ValueError(f"n_i must be positive, got {n_i}")
    period = n_i if n_i >= 1 else 1 / n_i
    if abs(period - round(period)) > 1e-9:
        raise ValueError(
            f"n_i = {n_i} is not usable: it must be a whole number (every n_i-th batch from "
            "D_I) or 1/k for a whole k (all but every k-th batch), e.g. 12, 2, 0.5"
        )


def sample_weighing(
    n_general: int,
    n_individual: int,
    batch_size: int,
    n_epochs: int,
    n_i: float,
    seed: int,
    general: str = "general",
    individual: str = "individual",
) -> list[Step]:
    """SW(n_S, n_I): n_S epochs of ceil(|D_G| / batch) iterations each; iteration j takes
    its batch from D_I when `takes_individual_batch(j, n_i)`, else the next D_G batch of a
    fresh shuffled pass (so with n_I = 2 an epoch sees only half of D_G, as in the paper)."""
    check_periodicity(n_i)
    if n_general <= 0 or n_individual <= 0:
        raise ValueError("sample weighing needs samples in both D_G and D_I")
    rng = np.random.default_rng(seed)
    individual_batches = _Cycler(n_individual, batch_size, rng)
    steps = []
    per_epoch = -(-n_general // batch_size)
    for _ in range(n_epochs):
        general_batches = iter(epoch_batches(n_general, batch_size, rng))
        for j in range(1, per_epoch + 1):
            if takes_individual_batch(j, n_i):
                steps.append(Step(individual, individual_batches.next()))
            else:
                steps.append(Step(general, next(general_batches)))
    return steps
