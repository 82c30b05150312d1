"""Pruning: schedules by hand, magnitude order, exact compaction, physical size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tailorml.models.cnn import CNNSpec, SmallCNN, count_parameters, weight_bytes
from tailorml.models.schedule import epochs
from tailorml.models.train import LabeledData, train
from tailorml.sparse.prune import (
    Pruner,
    PruningSchedule,
    channel_fraction_for,
    compact,
    narrower_spec,
    sparse_bytes,
    weight_sparsity,
)


def cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(CNNSpec(1, 40, 3), torch.tensor([140.0]), torch.tensor([50.0]))


def test_cubic_cut_schedule_by_hand():
    # 100 steps, cuts over the first 60 % in 3 stages: after steps 20, 40, 60;
    # sparsity 0.9 * (1 - (1 - k/3)^3) = 0.9 * 19/27, 0.9 * 26/27, 0.9
    cuts = PruningSchedule(0.9, stages=3, prune_fraction=0.6).cut_steps(100)
    assert list(cuts) == [20, 40, 60]
    assert list(cuts.values()) == pytest.approx([0.9 * 19 / 27, 0.9 * 26 / 27, 0.9])


def test_magnitude_pruning_removes_the_smallest_weights_globally():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.1, -5.0], [3.0, -0.2]]))
        net[1].weight.copy_(torch.tensor([[0.3, -4.0]]))
    pruner = Pruner(net, PruningSchedule(0.5, stages=1), total_steps=1)
    pruner.cut(0.5)  # 3 of 6 weights: |0.1|, |-0.2|, |0.3|
    assert net[0].weight.tolist() == [[0.0, -5.0], [3.0, 0.0]]
    assert net[1].weight.tolist() == [[0.0, -4.0]]
    assert weight_sparsity(net) == 0.5
    with torch.no_grad():  # an optimiser step revives a pruned weight; the mask undoes it
        net[0].weight[0, 0] = 1.0
    pruner.after_step(7)
    assert net[0].weight[0, 0].item() == 0.0


def test_pruned_training_reaches_the_target_and_compaction_keeps_outputs():
    model = cnn()
    x = 140 + 50 * torch.randn(256, 1, 40)
    y = (x[:, 0, -1] < 120).long()
    schedule = epochs("d", len(y), 32, 4, seed=0)
    pruner = Pruner(model, PruningSchedule(0.9, structured=True), total_steps=len(schedule))
    train(
        model,
        {"d": LabeledData(x, y)},
        schedule,
        learning_rate=1e-3,
        plugins=[pruner],
    )
    smaller = compact(model.eval())
    assert count_parameters(smaller) <= 0.1 * count_parameters(model)
    assert len(weight_bytes(smaller)) < 0.2 * len(weight_bytes(model))
    with torch.no_grad():
        assert torch.allclose(smaller(x), model(x), atol=1e-5)


def test_channel_fraction_meets_the_parameter_budget():
    spec = CNNSpec(1, 40, 3)
    full = count_parameters(SmallCNN(spec, torch.zeros(1), torch.ones(1)))
    fraction = channel_fraction_for(spec, 0.9)
    narrow = count_parameters(
        SmallCNN(narrower_spec(spec, fraction), torch.zeros(1), torch.ones(1))
    )
    wider = narrower_spec(spec, fraction - 0.01)
    wider_count = count_parameters(SmallCNN(wider, torch.zeros(1), torch.ones(1)))
    assert narrow <= 0.1 * full < wider_count


def test_sparse_storage_is_smaller_only_when_sparse():
    model = cnn()
    dense = len(sparse_bytes(model))
    Pruner(model, PruningSchedule(0.9), total_steps=1).cut(0.9)
    assert weight_sparsity(model) == pytest.approx(0.9, abs=0.001)
    assert len(sparse_bytes(model)) < 0.35 * len(weight_bytes(model)) < dense


def test_bad_sparsity_is_an_error():
    with pytest.raises(ValueError, match="sparsity must lie in"):
        PruningSchedule(1.0)
