import math

import numpy as np
import pytest
import torch
from torch import nn

from tailorml.config import Config
from tailorml.errors import ConfigError
from tailorml.models.distill import Distillation, distillation_loss
from tailorml.models.schedule import Step, epochs
from tailorml.models.train import LabeledData, train
from tailorml.pipeline import GlobalTraining, Teacher, teachers_of
from tailorml.policy import AlertPolicy
from tailorml.recipe import Recipe, require_train_only_options
from tailorml.robust.perturbation import SensorError


def constant(logits: list[float]) -> nn.Module:
    """A 'network' of one input feature whose logits are `logits` whatever the input."""
    net = nn.Linear(1, len(logits))
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor(logits))
    return net


def test_distillation_loss_by_hand_at_temperature_one():
    student = torch.zeros(1, 2)  # (0.5, 0.5)
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # (0.75, 0.25)
    labels = torch.tensor([0])
    # CE = ln 2; KL(teacher || student) = 0.75 ln 1.5 + 0.25 ln 0.5
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    loss = distillation_loss(student, teacher, labels, weight=0.5, temperature=1.0)
    assert loss.item() == pytest.approx(0.5 * math.log(2) + 0.5 * kl, rel=1e-6)
    assert kl == pytest.approx(0.130812, abs=1e-6)


def test_distillation_loss_by_hand_at_temperature_two_scales_the_soft_term_by_t_squared():
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # at T = 2: logits (ln √3, 0)
    p = math.sqrt(3) / (math.sqrt(3) + 1)  # 0.633975
    kl = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))  # 0.03634
    loss = distillation_loss(student, teacher, torch.tensor([1]), weight=1.0, temperature=2.0)
    assert loss.item() == pytest.approx(4 * kl, rel=1e-6)
    assert 4 * kl == pytest.approx(0.14536, abs=1e-4)


def test_weight_zero_is_plain_weighted_cross_entropy_and_agreement_costs_nothing():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    labels = torch.tensor([1, 0])
    weights = torch.tensor([0.25, 3.0])
    plain = nn.functional.cross_entropy(logits, labels, weight=weights)
    zero = distillation_loss(logits, logits + 7.0, labels, weight=0.0, temperature=3.0)
    assert distillation_loss(
        logits, torch.zeros_like(logits), labels, weight=0.0, temperature=3.0, class_weights=weights
    ).item() == pytest.approx(plain.item())
    assert zero.item() == pytest.approx(nn.functional.cross_entropy(logits, labels).item())
    # the teacher agrees with the student (a shift of every logit changes no probability)
    same = distillation_loss(logits, logits + 7.0, labels, weight=1.0, temperature=3.0)
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_the_plugin_freezes_the_teacher_and_pulls_the_student_to_its_probabilities():
    teacher = constant([math.log(3.0), 0.0])  # always (0.75, 0.25)
    plugin = Distillation(teacher, weight=1.0, temperature=1.0)
    assert not any(p.requires_grad for p in teacher.parameters())
    student = constant([0.0, 0.0])
    data = LabeledData(torch.ones(8, 1), torch.tensor([1] * 8))  # the labels say class 1
    train(
        student, {"d": data}, epochs("d", 8, 8, 300, seed=0), learning_rate=0.05, plugins=[plugin]
    )
    probabilities = torch.softmax(student(torch.ones(1, 1)), dim=1)[0]
    # weight 1: the labels are ignored, the student learns the teacher's (0.75, 0.25)
    assert probabilities.tolist() == pytest.approx([0.75, 0.25], abs=0.01)
    assert torch.equal(teacher.bias, torch.tensor([math.log(3.0), 0.0]))


def test_the_plugin_replaces_the_batch_loss_in_the_loop():
    teacher = constant([math.log(3.0), 0.0])
    student = constant([0.0, 0.0])
    seen = []

    class Seen(Distillation):
        def after_step(self, step, loss):
            seen.append(loss)

    plugin = Seen(teacher, weight=0.5, temperature=1.0)
    data = LabeledData(torch.ones(2, 1), torch.tensor([0, 0]))
    train(student, {"d": data}, [Step("d", np.array([0, 1]))], learning_rate=0.0, plugins=[plugin])
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert seen == [pytest.approx(0.5 * math.log(2) + 0.5 * kl, rel=1e-6)]


@pytest.mark.parametrize("weight, temperature", [(-0.1, 1.0), (1.5, 1.0), (0.5, 0.0)])
def test_bad_weight_or_temperature_is_refused(weight, temperature):
    with pytest.raises(ValueError):
        Distillation(constant([0.0, 0.0]), weight=weight, temperature=temperature)


def test_only_tailorml_train_distils():
    config = Config.model_validate({"train": {"distill_from": "teacher/model.pt"}})
    with pytest.raises(ConfigError, match="does not distil"):
        require_train_only_options(config.train, "`tailorml experiment`")
    require_train_only_options(Config().train, "`tailorml experiment`")  # none: nothing to refuse


def test_distillation_with_robust_training_or_a_missing_teacher_is_refused(tmp_path):
    assert teachers_of(Config(), Recipe.from_config(Config().train)) == []
    robust = Config.model_validate(
        {"train": {"distill_from": str(tmp_path / "m.pt"), "robust": "pgd"}}
    )
    with pytest.raises(ConfigError, match="cannot be combined"):
        teachers_of(robust, Recipe.from_config(robust.train))
    missing = Config.model_validate({"train": {"distill_from": str(tmp_path / "m.pt")}})
    with pytest.raises(ConfigError, match="no such model file"):
        teachers_of(missing, Recipe.from_config(missing.train))


def test_a_global_training_built_by_hand_refuses_what_the_config_refuses():
    policy = AlertPolicy()
    robust = Recipe.from_config(Config.model_validate({"train": {"robust": "pgd"}}).train)
    with pytest.raises(ConfigError, match="needs the sensor error"):
        GlobalTraining(robust, policy)  # a robust recipe without its perturbation
    teacher = Teacher(constant([0.0, 0.0, 0.0]))
    with pytest.raises(ConfigError, match="cannot be combined"):
        GlobalTraining(robust, policy, perturbation=SensorError(5.0), teachers=[teacher])
    plain = Recipe.from_config(Config().train)
    assert GlobalTraining(plain, policy, teachers=[teacher]).teachers == [teacher]
