import numpy as np
import pytest
import torch
from torch import nn

from tailorml.config import ModelConfig
from tailorml.errors import ConfigError, ModelFileError
from tailorml.models.cnn import build_model, count_parameters, load_model, save_model
from tailorml.models.schedule import Step, epochs
from tailorml.models.train import LabeledData, LoopPlugin, balanced_class_weights, train
from tailorml.personalize.base import L2SP
from tailorml.policy import AlertPolicy
from tailorml.robust.perturbation import SensorError
from tailorml.robust.training import RobustTraining


def default_model():
    return build_model(ModelConfig(), 1, 40, 3, torch.tensor([140.0]), torch.tensor([50.0]))


def test_default_model_size_by_hand():
    # conv 1->16 k5: 96, 16->32 k5: 2592, 32->32 k5: 5152; 40 -> 20 -> 10 steps;
    # linear 320->32: 10272, 32->3: 99
    assert count_parameters(default_model()) == 96 + 2592 + 5152 + 10272 + 99 == 18211


def test_normalisation_is_the_first_layer_and_not_trained():
    model = default_model()
    x = torch.full((1, 1, 40), 190.0)
    assert torch.allclose(model.normalize(x), torch.ones(1, 1, 40))
    assert all(not name.startswith("normalize") for name, _ in model.named_parameters())


def test_too_many_parameters_is_refused():
    with pytest.raises(ConfigError, match=r"more than model\.max_parameters = 1000"):
        build_model(ModelConfig(max_parameters=1000), 1, 40, 3, torch.zeros(1), torch.ones(1))


def test_save_and_load_give_identical_outputs(tmp_path):
    model = default_model()
    model.policy = AlertPolicy(threshold=0.35, hypo_mgdl=65.0, event_min_minutes=20)
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    x = torch.randn(4, 1, 40) * 50 + 140
    assert torch.equal(model.eval()(x), loaded(x))
    assert loaded.policy == model.policy  # the file knows its own operating point


def test_epoch_schedule_visits_every_sample_once_per_epoch():
    schedule = epochs("general", n_samples=10, batch_size=4, n_epochs=2, seed=0)
    assert [len(step.indices) for step in schedule] == [4, 4, 2, 4, 4, 2]
    for epoch in (schedule[:3], schedule[3:]):
        assert sorted(np.concatenate([s.indices for s in epoch]).tolist()) == list(range(10))


def test_balanced_class_weights_by_hand():
    weights = balanced_class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0, 0.0])


def toy_problem(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return LabeledData.from_numpy(x, y)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))


def test_training_learns_a_separable_problem():
    data = toy_problem()
    model = mlp()
    train(model, {"general": data}, epochs("general", 400, 32, 20, seed=0), learning_rate=0.02)
    accuracy = (model(data.x).argmax(1) == data.y).float().mean().item()
    assert accuracy > 0.95


def test_frozen_layers_stay_bit_identical():
    data = toy_problem()
    model = mlp()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train(
        model,
        {"general": data},
        epochs("general", 400, 32, 2, seed=0),
        learning_rate=0.05,
        frozen=["0."],
    )
    after = dict(model.named_parameters())
    assert torch.equal(after["0.weight"], before["0.weight"])
    assert torch.equal(after["0.bias"], before["0.bias"])
    assert not torch.equal(after["2.weight"], before["2.weight"])


def test_best_checkpoint_is_restored():
    data = toy_problem()
    model = mlp()
    scores = iter([0.1, 0.9, 0.2])
    snapshots = []

    def validate(candidate):
        snapshots.append({k: v.clone() for k, v in candidate.state_dict().items()})
        return next(scores)

    schedule = [Step("general", np.arange(i * 40, i * 40 + 40)) for i in range(6)]
    result = train(
        model, {"general": data}, schedule, learning_rate=0.05, validate=validate, validate_every=2
    )
    assert result.best_step == 4 and result.best_score == 0.9
    for name, value in model.state_dict().items():
        assert torch.equal(value, snapshots[1][name])


def test_unknown_source_and_frozen_prefix_are_errors():
    data = toy_problem()
    with pytest.raises(ValueError, match="unknown data source"):
        train(mlp(), {"general": data}, [Step("individual", np.arange(4))], learning_rate=0.1)
    with pytest.raises(ValueError, match="no parameters match frozen prefix"):
        train(
            mlp(),
            {"general": data},
            [Step("general", np.arange(4))],
            learning_rate=0.1,
            frozen=["conv"],
        )


class Recorder(LoopPlugin):
    """Records what the loop tells it; optionally adds a constant or replaces the loss."""

    def __init__(self, extra: float | None = None, replace: float | None = None) -> None:
        self.extra, self.replace = extra, replace
        self.seen: list[tuple[int, float]] = []
        self.penalty_steps: list[int] = []
        self.loss_steps: list[int] = []

    def batch_loss(self, model, x, y, step):
        self.loss_steps.append(step)
        if self.replace is None:
            return None
        return model(x).sum() * 0 + self.replace  # still depends on the parameters

    def penalty(self, model, step):
        self.penalty_steps.append(step)
        return None if self.extra is None else torch.tensor(self.extra)

    def after_step(self, step, loss):
        self.seen.append((step, loss))


def zero_linear() -> nn.Module:
    net = nn.Linear(1, 2)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
    return net


def tiny_data(n: int = 4) -> LabeledData:
    return LabeledData(torch.ones(n, 1), torch.tensor([0, 1] * (n // 2)))


def test_plugin_penalty_is_added_to_the_loss_and_hooks_see_every_step_in_order():
    recorder = Recorder(extra=3.0)
    schedule = [Step("d", np.array([0, 1])), Step("d", np.array([2, 3])), Step("d", np.array([0]))]
    train(zero_linear(), {"d": tiny_data()}, schedule, learning_rate=0.0, plugins=[recorder])
    assert [step for step, _ in recorder.seen] == [1, 2, 3]
    assert recorder.penalty_steps == recorder.loss_steps == [1, 2, 3]
    # zero logits: cross-entropy ln 2 for two classes, plus the plugin's 3
    assert recorder.seen[0][1] == pytest.approx(np.log(2) + 3.0)


def test_plugin_batch_loss_replaces_cross_entropy_and_is_scaled_by_the_step_weight():
    recorder = Recorder(replace=5.0)
    schedule = [Step("d", np.array([0, 1]), weight=0.5)]
    train(zero_linear(), {"d": tiny_data()}, schedule, learning_rate=0.0, plugins=[recorder])
    assert recorder.seen == [(1, pytest.approx(2.5))]


def test_two_plugins_replacing_the_batch_loss_are_refused():
    schedule = [Step("d", np.array([0, 1]))]
    with pytest.raises(ValueError, match="at most one"):
        train(
            zero_linear(),
            {"d": tiny_data()},
            schedule,
            learning_rate=1e-3,
            plugins=[Recorder(replace=1.0), Recorder(replace=2.0)],
        )


def test_l2sp_plugin_is_half_alpha_times_the_squared_distance_from_the_start():
    net = zero_linear()
    l2sp = L2SP(net, alpha=0.5)
    assert l2sp.penalty(net, 1).item() == 0.0
    with torch.no_grad():
        net.weight.fill_(2.0)  # two weights moved by 2: squared distance 8
    assert l2sp.penalty(net, 2).item() == pytest.approx(0.5 * 0.5 * 8)


def test_robust_plugin_is_clean_during_warm_up_and_uses_the_loop_step():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    x, y = torch.randn(16, 2), torch.randint(0, 2, (16,))
    plugin = RobustTraining("ibp", SensorError(0.5), warmup_fraction=0.5).plugin(10, None)
    clean = nn.functional.cross_entropy(net(x), y)
    assert plugin.batch_loss(net, x, y, 5).item() == pytest.approx(clean.item())
    # the same step gives the same loss however often it is asked (no call counting)
    late = plugin.batch_loss(net, x, y, 10).item()
    assert plugin.batch_loss(net, x, y, 10).item() == pytest.approx(late)
    assert late > clean.item()


def test_training_that_diverges_stops_with_a_clear_error():
    """A NaN in the data makes the first loss NaN: the loop stops there, naming the step and
    the learning rate, instead of training a model whose every output is NaN."""
    from tailorml.models.train import TrainingDiverged

    model = default_model()
    x = torch.full((4, 1, 40), 120.0)
    x[0, 0, 5] = float("nan")
    data = LabeledData(x, torch.zeros(4, dtype=torch.long))
    schedule = epochs("general", n_samples=4, batch_size=4, n_epochs=2, seed=0)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 1 of 2: the loss is nan"):
        train(model, {"general": data}, schedule, learning_rate=1e-3)


def test_a_model_file_with_nan_weights_is_refused(tmp_path):
    model = default_model()
    model.policy = AlertPolicy()
    with torch.no_grad():
        model.head[3].bias[0] = float("nan")
    save_model(model, tmp_path / "nan.pt")
    with pytest.raises(ModelFileError, match=r"nan\.pt holds non-finite weights"):
        load_model(tmp_path / "nan.pt")
