"""Certification: is a sample's *decision* provably unchanged by every sensor error in the box?

Two decision rules are certified:
- argmax (the writers task): certified when lower(z_y - z_j) > 0 for every j != y;
- the alert rule of the glucose task (`AlertPolicy.decide`): hypo when
  P(hypo) >= t, else the likelier of the other classes. With m_j = z_h - z_j,
  P(hypo) = 1 / (1 + sum_j exp(-m_j)), so "P(hypo) >= t everywhere" holds when
  logsumexp(-lower(m_j)) <= log((1 - t) / t), and "P(hypo) < t everywhere" when
  logsumexp(lower(z_j - z_h)) > log((1 - t) / t); then the true non-hypo class must beat the
  other non-hypo class everywhere. Both tests only use lower bounds of pairwise margins.

Verified accuracy = share of samples classified correctly *and* certified. Final
certification runs in float64 on a copy of the model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tailorml.policy import AlertPolicy
from tailorml.robust.bounds import Method, bounds, pairwise_spec
from tailorml.robust.perturbation import SensorError


@dataclass
class Certificate:
    correct: np.ndarray  # clean decision == label
    certified: np.ndarray  # decision provably constant over the box and equal to the label

    @property
    def clean_accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else float("nan")

    @property
    def verified_accuracy(self) -> float:
        return float(self.certified.mean()) if len(self.certified) else float("nan")


def pair_index(n_classes: int) -> dict[tuple[int, int], int]:
    pairs = [(i, j) for i in range(n_classes) for j in range(n_classes) if i != j]
    return {pair: position for position, pair in enumerate(pairs)}


def certified_decisions(
    pair_lower: torch.Tensor, labels: torch.Tensor, hypo: int | None, threshold: float
) -> torch.Tensor:
    """Whether the decision is provably `labels` everywhere in the box, from lower bounds of
    every pairwise margin z_i - z_j (columns in `pair_index` order)."""
    n_classes = round((1 + math.sqrt(1 + 4 * pair_lower.shape[1])) / 2)
    index = pair_index(n_classes)

    def margin(i: int, j: int) -> torch.Tensor:
        return pair_lower[:, index[(i, j)]]

    if hypo is None:  # argmax: every margin of the label against another class is positive
        columns = torch.tensor(
            [[index[(y, j)] for j in range(n_classes) if j != y] for y in range(n_classes)]
        )
        return pair_lower.gather(1, columns[labels]).amin(dim=1) > 0
    if not 0 < threshold < 1:
        raise ValueError(f"alert threshold must lie in (0, 1), got {threshold}")
    log_odds = math.log((1 - threshold) / threshold)
    others = [j for j in range(n_classes) if j != hypo]
    hypo_always = torch.logsumexp(torch.stack([-margin(hypo, j) for j in others], 1), 1)
    hypo_always = hypo_always <= log_odds
    hypo_never = torch.logsumexp(torch.stack([margin(j, hypo) for j in others], 1), 1) > log_odds
    result = torch.zeros(len(labels), dtype=torch.bool)
    is_hypo = labels == hypo
    result[is_hypo] = hypo_always[is_hypo]
    for y in others:
        beats_rest = torch.ones(len(labels), dtype=torch.bool)
        for other in others:
            if other != y:
                beats_rest &= margin(y, other) > 0
        chosen = labels == y
        result[chosen] = (hypo_never & beats_rest)[chosen]
    return result


def _certified(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    perturbation: SensorError,
    policy: AlertPolicy,
    method: Method,
) -> np.ndarray:
    """Whether each sample's decision is provably `labels` over the box (`method` bounds)."""
    spec = pairwise_spec(len(x), model(x[:1]).shape[1], x.dtype)
    pair_lower, _ = bounds(model, x, perturbation, method, spec=spec, lower_only=True)
    return certified_decisions(pair_lower, labels, policy.alert_index, policy.threshold).numpy()


def certify(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    perturbation: SensorError,
    policy: AlertPolicy,
    method: Method = "crown",
    batch_size: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Certificate:
    """Certify every sample's decision under `policy` (its alert rule, or argmax) in
    float64, `batch_size` samples per call (default 512: CROWN and α-CROWN chunk a batch
    themselves, so memory stays flat and the batch size does not matter for speed)."""
    batch_size = batch_size or 512
    double = copy.deepcopy(model).double().eval()
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    correct, certified = [], []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch, batch_labels = x[start : start + batch_size], labels[start : start + batch_size]
            probabilities = torch.softmax(double(batch), dim=1).numpy()
            hit = policy.decide(probabilities) == batch_labels.numpy()
            flags = np.zeros(len(batch), dtype=bool)  # a wrong decision is never certified
            # α-CROWN is never looser than CROWN and certification only needs lower bounds
            # to be high enough, so CROWN first and α-CROWN only where CROWN fell short
            for step in ("crown", "alpha-crown") if method == "alpha-crown" else (method,):
                todo = np.flatnonzero(hit & ~flags)
                if len(todo):
                    flags[todo] = _certified(
                        double, batch[todo], batch_labels[todo], perturbation, policy, step
                    )
            correct.append(hit)
            certified.append(flags)
            if on_batch:
                on_batch(len(batch))
    empty = np.zeros(0, dtype=bool)
    return Certificate(
        np.concatenate(correct) if correct else empty,
        np.concatenate(certified) if certified else empty,
    )
