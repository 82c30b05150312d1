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
certification runs in float64 on a copy of the model. Method "bab" refines the margins a
window's certificate needs by branch and bound over the input box (`robust.bab`) after
CROWN and α-CROWN fell short: slower by orders of magnitude, for a few windows.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from tailorml.policy import AlertPolicy
from tailorml.robust.bab import minimum_bound
from tailorml.robust.bounds import Method, bounds, pairwise_spec
from tailorml.robust.perturbation import SensorError

CertifyMethod = Literal["ibp", "crown-ibp", "crown", "alpha-crown", "bab"]
CERTIFY_METHODS: tuple[str, ...] = ("ibp", "crown-ibp", "crown", "alpha-crown", "bab")
CASCADES = {"alpha-crown": ("crown", "alpha-crown"), "bab": ("crown", "alpha-crown", "bab")}
BAB_DOMAINS = 256  # boxes per margin: about 2 s a window on the alert model (BENCHMARKS.md)


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


def _needed_rows(label: int, n_classes: int, hypo: int | None) -> dict[int, bool]:
    """The pairwise-margin columns a decision's certificate reads, each with whether it is
    tested against 0 on its own (True) or inside a log-sum-exp with the others (False)."""
    index = pair_index(n_classes)
    others = [j for j in range(n_classes) if j != label]
    if hypo is None:
        return {index[(label, j)]: True for j in others}
    non_hypo = [j for j in range(n_classes) if j != hypo]
    if label == hypo:
        return {index[(hypo, j)]: False for j in non_hypo}
    rows = {index[(j, hypo)]: False for j in non_hypo}
    rows |= {index[(label, j)]: True for j in non_hypo if j != label}
    return rows


def _certified_bab(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    perturbation: SensorError,
    policy: AlertPolicy,
    domains: int,
) -> np.ndarray:
    """Certificates with the margins the decision needs refined by branch and bound over the
    input box (`robust.bab`, on CROWN, at most `domains` boxes per margin); the others keep
    their CROWN bounds. A margin tested against 0 stops as soon as it is proven or shown
    to fall below 0 somewhere (then the window cannot be certified: the rest is skipped)."""
    n_classes = model(x[:1]).shape[1]
    spec = pairwise_spec(len(x), n_classes, x.dtype)
    pair_lower, _ = bounds(model, x, perturbation, "crown", spec=spec, lower_only=True)
    low_in, high_in = perturbation.box(x)
    flags = np.zeros(len(x), dtype=bool)
    for i in range(len(x)):
        refined = pair_lower[i : i + 1].clone()
        hopeless = False
        for column, against_zero in _needed_rows(
            int(labels[i]), n_classes, policy.alert_index
        ).items():
            found = minimum_bound(
                model,
                low_in[i : i + 1],
                high_in[i : i + 1],
                spec[0, column],
                max_domains=domains,
                certify_above=0.0 if against_zero else None,
            )
            refined[0, column] = max(float(refined[0, column]), found.lower)
            if against_zero and found.attained <= 0:
                hopeless = True  # a point of the box where the decision changes
                break
        if not hopeless:
            flags[i] = bool(
                certified_decisions(
                    refined, labels[i : i + 1], policy.alert_index, policy.threshold
                )[0]
            )
    return flags


def certify(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    perturbation: SensorError,
    policy: AlertPolicy,
    method: CertifyMethod = "crown",
    batch_size: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    bab_domains: int = BAB_DOMAINS,
) -> Certificate:
    """Certify every sample's decision under `policy` (its alert rule, or argmax) in
    float64, `batch_size` samples per call (default 512: CROWN and α-CROWN chunk a batch
    themselves, so memory stays flat and the batch size does not matter for speed).
    "bab" runs CROWN, then α-CROWN, then branch and bound (`bab_domains` boxes per
    margin) on what is still uncertified."""
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
            # α-CROWN and branch and bound are never looser than CROWN and certification
            # only needs lower bounds to be high enough, so the cheaper bound first and the
            # costlier only where it fell short
            for step in CASCADES.get(method, (method,)):
                todo = np.flatnonzero(hit & ~flags)
                if not len(todo):
                    break
                if step == "bab":
                    flags[todo] = _certified_bab(
                        double, batch[todo], batch_labels[todo], perturbation, policy, bab_domains
                    )
                else:
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
