"""Group DRO for the predefined model (`train.group_dro_eta`): the group of every training
window, the refusals, and that the recipe really changes what trains."""

import numpy as np
import pytest
import torch

from tailorml.config import ModelConfig
from tailorml.errors import ConfigError
from tailorml.models.cnn import build_model
from tailorml.models.group_dro import NO_GROUP, group_codes, n_groups
from tailorml.models.train import LabeledData
from tailorml.recipe import Recipe, fit_predefined


def test_group_codes_index_the_sorted_group_names():
    owners = ["a", "b", "c", "stranger"]
    codes = group_codes(owners, {"a": "kid", "b": "adult", "c": "kid"})
    assert codes.tolist() == [1, 0, 1, NO_GROUP]  # adult = 0, kid = 1
    assert n_groups(codes) == 2
    assert n_groups(np.array([NO_GROUP, NO_GROUP])) == 0


def toy(seed=0):
    """Group 0's label follows the first reading; group 1's the opposite sign of the last:
    one network cannot fit both equally well, so the group weights matter."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(96, 1, 8)).astype(np.float32)
    groups = np.repeat([0, 1], 48)
    y = np.where(groups == 0, x[:, 0, 0] > 0, x[:, 0, -1] < 0).astype(np.int64)
    config = ModelConfig(conv_channels=[4], kernel_size=3, hidden=8)
    return LabeledData.from_numpy(x, y), groups, config


def fit(eta: float, groups, robust="none"):
    data, _, config = toy()
    torch.manual_seed(0)
    model = build_model(config, 1, 8, 2, torch.zeros(1), torch.ones(1))
    recipe = Recipe(3, 16, 1e-2, 0.0, "none", robust, group_dro_eta=eta)
    return fit_predefined(model, data, recipe, n_classes=2, seed=0, groups=groups).model


def test_a_positive_eta_changes_the_trained_model_and_zero_does_not_need_groups():
    _, groups, _ = toy()
    plain = fit(0.0, None)  # no groups needed without group DRO
    again = fit(0.0, groups)  # groups given but unused: the same model
    dro = fit(1.0, groups)
    state = plain.state_dict()
    assert all(torch.equal(state[k], v) for k, v in again.state_dict().items())
    assert any(not torch.equal(state[k], v) for k, v in dro.state_dict().items())


def test_group_dro_with_one_group_or_with_robust_training_is_refused():
    _, groups, _ = toy()
    with pytest.raises(ConfigError, match=r"train\.group_dro_eta = 0\.5.*all of one group"):
        fit(0.5, np.zeros_like(groups))
    with pytest.raises(ConfigError, match=r"train\.group_dro_eta.*no group"):
        fit(0.5, np.full_like(groups, NO_GROUP))
    with pytest.raises(ConfigError, match=r"robust training \(train\.robust = 'ibp'\)"):
        fit(0.5, groups, robust="ibp")


def test_the_config_refuses_two_losses_that_replace_each_other():
    from tailorml.config import config_from_dict

    for other in ({"robust": "ibp"}, {"distill_from": "teacher.pt"}):
        with pytest.raises(ConfigError, match=r"group_dro_eta = 0\.1 with .*replaces the batch"):
            config_from_dict({"train": {"group_dro_eta": 0.1, **other}})
    config_from_dict({"train": {"group_dro_eta": 0.1}})  # alone: accepted
