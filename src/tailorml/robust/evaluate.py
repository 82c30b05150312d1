"""Robustness of one model on one individual's held-out windows: clean, PGD and verified
accuracy of the *deployed decision* (the alert rule for glucose, argmax otherwise), and what
the model costs (parameters, dense and sparse bytes)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from tailorml.config import Config, RobustConfig
from tailorml.models.cnn import count_parameters, model_bytes
from tailorml.robust.attack import pgd_decisions
from tailorml.robust.certify import DecisionRule, certify
from tailorml.robust.perturbation import SensorError, cgm_error
from tailorml.sparse.prune import sparse_bytes, weight_sparsity


def perturbation_for(config: Config, dataset: str, eps: float | None = None) -> SensorError:
    """The configured sensor error (at `eps` if given): CGM channel only for glucose."""
    eps = config.robust.eps if eps is None else eps
    if dataset == "glucose":
        return cgm_error(eps, config.robust.relative_percent, config.task.channels)
    return SensorError(eps, config.robust.relative_percent / 100)


def evenly_spaced(indices: np.ndarray, limit: int) -> np.ndarray:
    """At most `limit` of `indices`, spread over the whole period (0 = all)."""
    if limit <= 0 or len(indices) <= limit:
        return indices
    return indices[np.linspace(0, len(indices) - 1, limit).round().astype(int)]


def rule_for(config: Config, dataset: str, threshold: float | None = None) -> DecisionRule:
    if dataset == "glucose":
        from tailorml.data.glucose import HYPO

        chosen = config.alerts.probability_threshold if threshold is None else threshold
        return DecisionRule(HYPO, chosen)
    return DecisionRule(None)


def robust_accuracy(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    perturbation: SensorError,
    rule: DecisionRule,
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
        method=method or settings.method,
        hypo=rule.hypo,
        threshold=rule.threshold,
        on_batch=on_batch,
    )
    survived = pgd_decisions(
        model,
        torch.as_tensor(x, dtype=torch.float32),
        torch.as_tensor(y, dtype=torch.long),
        perturbation,
        rule.torch,
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
        "dense_bytes": len(model_bytes(model)),
        "sparse_bytes": len(sparse_bytes(model)),
    }
