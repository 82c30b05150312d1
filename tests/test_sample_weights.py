"""Per-window loss weights (`models.sample_weights`) and the early-warning weights of the
predefined model (`train.early_weight`)."""

import math

import numpy as np
import pytest
import torch

from tailorml.config import ModelConfig, config_from_dict
from tailorml.errors import ConfigError
from tailorml.models.cnn import build_model
from tailorml.models.sample_weights import SampleWeights, weighted_cross_entropy
from tailorml.models.schedule import Step
from tailorml.models.train import LabeledData
from tailorml.recipe import Recipe, fit_predefined


def test_weighted_cross_entropy_by_hand():
    # two windows, two classes; logits (0, 0) give CE = ln 2 each way, (ln 3, 0) to class 0
    # gives -ln(3/4) for label 0
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([1, 0])
    classes = torch.tensor([1.0, 4.0])  # class 1 counts 4 times
    weights = torch.tensor([1.0, 3.0])
    ce0, ce1 = math.log(2.0), -math.log(0.75)
    expected = (1 * 4 * ce0 + 3 * 1 * ce1) / (1 * 4 + 3 * 1)
    assert weighted_cross_entropy(logits, labels, weights, classes).item() == pytest.approx(
        expected
    )


def test_unit_weights_are_the_plain_class_weighted_loss():
    rng = np.random.default_rng(0)
    logits = torch.as_tensor(rng.normal(size=(7, 3)), dtype=torch.float32)
    labels = torch.as_tensor(rng.integers(0, 3, size=7))
    classes = torch.tensor([0.5, 2.0, 1.0])
    ones = torch.ones(7)
    plain = torch.nn.functional.cross_entropy(logits, labels, weight=classes)
    assert weighted_cross_entropy(logits, labels, ones, classes).item() == pytest.approx(
        plain.item()
    )
    plain = torch.nn.functional.cross_entropy(logits, labels)
    assert weighted_cross_entropy(logits, labels, ones).item() == pytest.approx(plain.item())


def test_the_plugin_reads_each_steps_windows_by_position():
    schedule = [Step("general", np.array([2, 0])), Step("general", np.array([1]))]
    plugin = SampleWeights(np.array([1.0, 2.0, 5.0]), schedule)
    model = torch.nn.Flatten()  # logits = the two inputs
    x = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])
    y = torch.tensor([1, 0])
    ce0, ce1 = math.log(2.0), -math.log(0.75)
    step1 = plugin.batch_loss(model, x, y, step=1)  # windows 2 and 0: weights 5 and 1
    assert step1.item() == pytest.approx((5 * ce0 + 1 * ce1) / 6)
    with pytest.raises(ValueError, match="finite, positive"):
        SampleWeights(np.array([1.0, 0.0]), schedule)


def toy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 1, 8)).astype(np.float32)
    y = (x[:, 0, 0] > 0).astype(np.int64)
    return LabeledData.from_numpy(x, y)


def fit(weights):
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(conv_channels=[4], kernel_size=3, hidden=8),
        1,
        8,
        2,
        torch.zeros(1),
        torch.ones(1),
    )
    recipe = Recipe(2, 16, 1e-2, 0.0, "none", "none")
    return fit_predefined(
        model, toy(), recipe, n_classes=2, seed=0, sample_weights=weights
    ).model.state_dict()


def test_unit_weights_train_the_same_model_and_others_do_not():
    plain, ones = fit(None), fit(np.ones(64))
    assert all(torch.allclose(plain[k], v, atol=1e-6) for k, v in ones.items())
    weights = np.where(np.arange(64) % 4 == 0, 5.0, 1.0)
    other = fit(weights)
    assert any(not torch.allclose(plain[k], v, atol=1e-4) for k, v in other.items())
    with pytest.raises(ValueError, match="3 sample weights for 64"):
        fit(np.ones(3))


def test_early_weight_is_refused_beside_another_replacement_loss():
    for other, name in (
        ({"robust": "ibp"}, "robust"),
        ({"group_dro_eta": 0.1}, "group_dro_eta"),
        ({"distill_from": "teacher.pt"}, "distill_from"),
    ):
        with pytest.raises(ConfigError, match=rf"early_weight = 2 with {name}: .*replaces"):
            config_from_dict({"train": {"early_weight": 2, **other}})
    config_from_dict({"train": {"early_weight": 2}})  # alone: accepted


def test_early_warning_weights_pick_the_lows_at_a_useful_lead():
    from types import SimpleNamespace

    from tailorml.pipeline import early_warning_weights

    leads = np.array([np.nan, 5.0, 10.0, 15.0, 30.0, np.nan])
    prepared = SimpleNamespace(windows=SimpleNamespace(hypo_lead_minutes=leads))
    weights = early_warning_weights(3, 15, prepared, np.array([0, 1, 2, 3, 4]))
    assert weights.tolist() == [1, 1, 1, 4, 4]  # 15 min ahead is already useful


def test_experiments_and_personalize_refuse_the_early_weight_rather_than_ignore_it():
    from tailorml.recipe import require_train_only_options

    config = config_from_dict({"train": {"early_weight": 2}})
    with pytest.raises(ConfigError, match=r"early_weight = 2: `tailorml experiment`.*= 0"):
        require_train_only_options(config.train, "`tailorml experiment`")
    require_train_only_options(config_from_dict({}).train, "`tailorml experiment`")
