"""How robust a model's alert decision is to CGM sensor error on one individual's windows.

Clean, PGD and verified accuracy at ε with the chosen bound (and the cheap other bounds),
and a verified-accuracy-vs-ε sweep; the `tailorml certify` job (`jobs.certify`) runs them
per individual, caches and writes the tables.
"""

from __future__ import annotations

import numpy as np

from tailorml.config import Config
from tailorml.models.cnn import SmallCNN
from tailorml.robust.certify import certify
from tailorml.robust.evaluate import evenly_spaced, perturbation_for, robust_accuracy

BOUND_METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")


def individual_robustness(config: Config, model: SmallCNN, windows, test: np.ndarray, task) -> dict:
    """Robustness of the model's decision (its own alert policy) on one individual."""
    settings, policy = config.robust, model.policy
    chosen = evenly_spaced(test, settings.max_windows)
    x, y = windows.x[chosen], windows.y[chosen]
    perturbation = perturbation_for(config.robust, policy)
    row = {"windows": len(chosen)}
    row |= robust_accuracy(model, x, y, perturbation, policy, settings, on_batch=task.advance)
    for method in BOUND_METHODS:
        if method == settings.method:
            row[f"verified_{method}"] = row["verified_acc"]
        elif method not in ("crown", "alpha-crown"):  # costly: only when chosen
            certificate = certify(model, x, y, perturbation, policy, method)
            row[f"verified_{method}"] = certificate.verified_accuracy
    swept = evenly_spaced(test, settings.sweep_windows)
    row["sweep"] = sweep_verified(config, model, windows.x[swept], windows.y[swept], task)
    return row


def sweep_verified(
    config: Config, model: SmallCNN, x: np.ndarray, y: np.ndarray, task
) -> list[dict]:
    """Verified accuracy at each ε of the grid, in increasing order. A window that fails at
    some ε is counted as failing at every larger ε without another bound: conservative
    (sound), and it makes the sweep cost little once most windows have fallen. ε = 0 is
    decided with IBP, which is exact there."""
    settings, policy = config.robust, model.policy
    alive = np.arange(len(x))
    points = []
    for eps in sorted(settings.eps_grid):
        if len(alive):
            certificate = certify(
                model,
                x[alive],
                y[alive],
                perturbation_for(config.robust, policy, eps),
                policy,
                settings.sweep_method if eps > 0 else "ibp",
            )
            alive = alive[certificate.certified]
        task.advance(len(x))
        points.append(
            {
                "eps": eps,
                "verified_acc": len(alive) / len(x) if len(x) else float("nan"),
                "windows": len(x),
            }
        )
    return points
