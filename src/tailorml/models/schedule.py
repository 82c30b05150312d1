"""Sample schedules: which samples the training loop sees, in which order, with which weight.

Every training recipe of tailorml (the global model now, the personalization strategies
later) is a schedule fed to the one loop in `tailorml.models.train`. A schedule is a plain
list of steps, so it can be inspected and tested without training anything.
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
