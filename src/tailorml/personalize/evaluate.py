"""How a personalized model is judged, as in "Personalization of Deep Learning": accuracy on
the individual's own test data (acc D_I) and on general data (acc D_G); for the glucose task
also balanced accuracy and the event-based hypo alert metrics on the individual's test period.

Every figure follows the model's own alert policy (`policy_of`), as `tailorml evaluate` and
the train job do (`evaluate.individuals`): one model gives the same figures through either
door, whatever threshold the config names.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from tailorml.config import Config
from tailorml.evaluate.metrics import classification_metrics
from tailorml.personalize.dataset import PersonalData
from tailorml.policy import AlertPolicy


def policy_of(model: nn.Module, data: PersonalData) -> AlertPolicy:
    """The policy `model` decides by: its own (a trained, saved or held model carries it);
    the data's only for a bare network that carries none. A model made for another grid,
    window or channels than `data` is refused, never silently applied."""
    policy = getattr(model, "policy", None)
    if policy is None:
        return data.policy
    policy.require_same_input(data.policy, "the model", f"the {data.name} data")
    return policy


def evaluate_personalized(
    model: nn.Module, data: PersonalData, individual: str, config: Config
) -> dict[str, float]:
    """The experiment's columns for `model` on `individual`, decided by the model's policy."""
    from tailorml.evaluate.individuals import individual_alert_metrics
    from tailorml.models.predict import predict_proba

    policy = policy_of(model, data)
    own = data.individual_test[individual]
    general = data.general_test(individual)
    names = data.class_names if policy.is_alert else None
    own_probabilities = predict_proba(model, data.x[own])
    own_metrics = classification_metrics(data.y[own], policy.decide(own_probabilities), names)
    general_metrics = classification_metrics(
        data.y[general], policy.decide(predict_proba(model, data.x[general])), names
    )
    result = {
        "acc_individual": own_metrics["accuracy"],
        "balanced_acc_individual": own_metrics["balanced_accuracy"],
        "acc_general": general_metrics["accuracy"],
        "balanced_acc_general": general_metrics["balanced_accuracy"],
    }
    if policy.is_alert:
        result["recall_hypo_individual"] = own_metrics["recall_hypo"]
        alerts = individual_alert_metrics(policy, data.glucose, individual, own, own_probabilities)
        for key in (
            "hypo_sensitivity",
            "false_alerts_per_day",
            "median_lead_minutes",
            "hypo_events",
        ):
            result[key] = alerts[key]
    if config.robust.evaluate:
        result |= robustness_of(model, data, own, config)
    if config.experiment.stress and policy.is_alert and data.glucose is not None:
        from tailorml.shift.suite import stress_columns

        result |= stress_columns(model, policy, data.glucose, individual)
    return result


def robustness_of(
    model: nn.Module, data: PersonalData, own: np.ndarray, config: Config
) -> dict[str, float]:
    """PGD and verified accuracy at robust.eps on (evenly spaced) own test windows, and the
    model's size: the columns of the robustness experiment, decided by the model's policy."""
    from tailorml.robust.evaluate import (
        evenly_spaced,
        perturbation_for,
        robust_accuracy,
        size_metrics,
    )

    policy = policy_of(model, data)
    chosen = evenly_spaced(own, config.robust.max_windows)
    accuracy = robust_accuracy(
        model,
        data.x[chosen],
        data.y[chosen],
        perturbation_for(config.robust, policy),
        policy,
        config.robust,
    )
    return {f"{key}_individual": value for key, value in accuracy.items()} | size_metrics(model)
