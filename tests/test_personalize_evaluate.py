"""The two evaluation doors agree: whoever holds a model decides by the model's own alert
policy, not by the config's threshold (issue 32: 0.0 vs 6.55 false alerts/day for one
model on the same windows)."""

import copy
from dataclasses import replace

import numpy as np
import pytest

from conftest import PATIENTS
from tailorml.config import config_from_dict
from tailorml.data.glucose import HYPO
from tailorml.errors import ModelFileError
from tailorml.evaluate.individuals import evaluate_individuals
from tailorml.models.predict import predict_proba
from tailorml.personalize.base import Budget, Context
from tailorml.personalize.dataset import from_glucose
from tailorml.personalize.evaluate import evaluate_personalized, policy_of
from tailorml.personalize.fair import ByNeed

# what both doors report, by (personalize door name, per-individual door name)
SAME = {
    "acc_individual": "accuracy",
    "balanced_acc_individual": "balanced_accuracy",
    "recall_hypo_individual": "recall_hypo",
    "hypo_sensitivity": "hypo_sensitivity",
    "false_alerts_per_day": "false_alerts_per_day",
    "median_lead_minutes": "median_lead_minutes",
    "hypo_events": "hypo_events",
}


@pytest.fixture(scope="module")
def doors(trained):
    """The shared alert model (threshold 0.7; the config says 0.5) seen through both doors:
    the personalization view of the same cohort, and every individual's test probabilities."""
    config = config_from_dict(
        {"cohort": {"path": "synthetic", "individuals": PATIENTS, "max_days": 3.0}}
    )
    data = from_glucose(config, 1)
    prepared = trained.prepared
    assert data.policy.threshold == 0.5 and trained.model.policy.threshold == 0.7
    assert len(data.y) == len(prepared.windows)  # the same windows, in the same order
    probabilities = predict_proba(trained.model, prepared.windows.x)
    per_individual, _, _ = evaluate_individuals(trained.model.policy, prepared, probabilities)
    return config, data, per_individual.set_index("patient_id"), probabilities


def test_both_doors_give_the_same_figures_for_one_model(trained, doors):
    config, data, per_individual, _ = doors
    for individual in PATIENTS:
        personal = evaluate_personalized(trained.model, data, individual, config)
        row = per_individual.loc[individual]
        for mine, theirs in SAME.items():
            assert personal[mine] == pytest.approx(row[theirs], nan_ok=True), (individual, mine)


def test_the_figures_are_those_of_the_models_threshold_by_hand(trained, doors):
    config, data, per_individual, probabilities = doors
    individual = "adult-008"
    own = data.individual_test[individual]
    p, y = probabilities[own], data.y[own]
    # by hand at 0.7: hypo when P(hypo) >= 0.7, else the likelier of in range and hyper
    decided = np.where(p[:, HYPO] >= 0.7, HYPO, np.where(p[:, 0] >= p[:, 2], 0, 2))
    at_config = np.where(p[:, HYPO] >= 0.5, HYPO, np.where(p[:, 0] >= p[:, 2], 0, 2))
    assert not np.array_equal(decided, at_config)  # the two thresholds decide differently
    personal = evaluate_personalized(trained.model, data, individual, config)
    assert personal["acc_individual"] == pytest.approx(float((decided == y).mean()))
    # false alerts per day: the false alerts counted over the test windows' days (5-min grid)
    row = per_individual.loc[individual]
    days = len(own) * 5 / (24 * 60)
    assert row["monitored_days"] == pytest.approx(days)
    assert personal["false_alerts_per_day"] == pytest.approx(row["false_alerts"] / days)


def test_the_config_threshold_would_have_given_other_figures(trained, doors):
    """What the personalization door reported before: the same model at the config's 0.5."""
    config, data, _, _ = doors
    at_config = copy.deepcopy(trained.model)
    at_config.policy = data.policy
    individual = "adult-008"
    own = evaluate_personalized(trained.model, data, individual, config)
    configured = evaluate_personalized(at_config, data, individual, config)
    assert own["acc_individual"] != configured["acc_individual"]


def test_a_bare_network_decides_by_the_datas_policy_and_a_mismatched_model_is_refused(
    trained, doors
):
    _, data, _, _ = doors
    bare = copy.deepcopy(trained.model)
    bare.policy = None
    assert policy_of(bare, data) is data.policy
    assert policy_of(trained.model, data) is trained.model.policy
    other_grid = copy.deepcopy(trained.model)
    other_grid.policy = replace(trained.model.policy, sample_minutes=15)
    with pytest.raises(ModelFileError, match="CGM interval"):
        policy_of(other_grid, data)


def test_by_need_judges_the_global_model_by_its_own_threshold(trained, doors):
    _, data, _, probabilities = doors
    individual = "adult-008"
    context = Context(
        data=data,
        individual=individual,
        seed=0,
        budget=Budget(recipe=None),  # served() trains nothing
        new_model=lambda: None,
        global_model=lambda: trained.model,
        latents=lambda: None,
    )
    own = data.individual_train[individual]
    p, y = probabilities[own], data.y[own]
    decided = np.where(p[:, HYPO] >= 0.7, HYPO, np.where(p[:, 0] >= p[:, 2], 0, 2))
    present = np.unique(y)
    by_hand = np.mean([(decided[y == c] == c).mean() for c in present])
    assert ByNeed().served(context) == pytest.approx(by_hand)
