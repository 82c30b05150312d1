"""Robustness of one model on one individual's held-out windows: clean, PGD and verified
accuracy of the *deployed decision* (the model's alert policy), and what
the model costs (parameters, dense and sparse bytes)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from tailorml.config import RobustConfig
from tailorml.models.cnn import count_parameters, weight_bytes
from tailorml.policy import AlertPolicy
from tailorml.robust.attack import pgd_decisions
from tailorml.robust.certify import certify
from tailorml.robust.perturbation import SensorError, cgm_error
from tailorml.sparse.prune import sparse_bytes, weight_sparsity


def perturbation_for(
    robust: RobustConfig, policy: AlertPolicy, eps: float | None = None
) -> SensorError:
    """The sensor error of `robust` (the `[robust]` section; at `eps` if given) on the
    model's inputs: the CGM channel only when the policy reads CGM (mg/dL), else every
    input."""
    eps = robust.eps if eps is None else eps
    if "cgm" in policy.channels:
        return cgm_error(eps, robust.relative_percent, list(policy.channels))
    return SensorError(eps, robust.relative_percent / 100)


def evenly_spaced(indices: np.ndarray, limit: int) -> np.ndarray:
    """At most `limit` of `indices`, spread over the whole period (0 = all)."""
    if limit <= 0 or len(indices) <= limit:
        return indices
    return indices[np.linspace(0, len(indices) - 1, limit).round().astype(int)]


def robust_accuracy(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    perturbation: SensorError,
    policy: AlertPolicy,
    settings: RobustConfig,
    method: str | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Clean, PGD and verified accuracy of the decision at one perturbation."""
    certificate = certify(
        model,
        x,
        y,
        perturbation,
        policy,
        method=method or settings.method,
        on_batch=on_batch,
        bab_domains=settings.bab_domains,
    )
    survived = pgd_decisions(
        model,
        torch.as_tensor(x, dtype=torch.float32),
        torch.as_tensor(y, dtype=torch.long),
        perturbation,
        policy,
        steps=settings.pgd_steps,
    )
    return {
        "clean_acc": certificate.clean_accuracy,
        "pgd_acc": float(survived.double().mean()) if len(survived) else float("nan"),
        "verified_acc": certificate.verified_accuracy,
    }


def size_metrics(model: nn.Module) -> dict[str, float]:
    return {
        "parameters": count_parameters(model),
        "nonzero_parameters": int(sum(int((p != 0).sum()) for p in model.parameters())),
        "weight_sparsity": weight_sparsity(model),
        "dense_bytes": len(weight_bytes(model)),
        "sparse_bytes": len(sparse_bytes(model)),
    }
