"""Bounds read a model's layers from the model (`chain()`), not from a special case: a
SmallCNN's forward is its chain, and any model that declares one is bounded like it."""

import torch
from torch import nn

from tailorml.models.cnn import SmallCNN
from tailorml.models.spec import CNNSpec
from tailorml.robust.bounds import bounds, to_ops
from tailorml.robust.perturbation import SensorError


class Declared(nn.Module):
    """Not a SmallCNN, not a Sequential: a chain it declares."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(4, 5), nn.Sequential(nn.ReLU(), nn.Linear(5, 3))

    def chain(self):
        return (self.first, self.second)

    def forward(self, x):
        return self.second(self.first(x))


def test_a_small_cnn_is_bounded_through_the_chain_its_forward_applies():
    torch.manual_seed(0)
    spec = CNNSpec(in_channels=1, length=8, n_classes=3, conv_channels=[2], hidden=4)
    model = SmallCNN(spec, torch.tensor([120.0]), torch.tensor([30.0])).eval()
    x = torch.rand(2, 1, 8) * 200 + 40
    composed = x
    for op in to_ops(model, (1, 8)):
        composed = op.forward(composed)
    torch.testing.assert_close(composed, model(x))


def test_any_model_that_declares_its_chain_is_bounded_soundly():
    torch.manual_seed(1)
    model = Declared().eval()
    x = torch.rand(3, 4)
    lower, upper = bounds(model, x, SensorError(0.1), method="crown")
    for _ in range(50):
        inside = x + (torch.rand_like(x) * 2 - 1) * 0.1
        out = model(inside)
        assert (out >= lower - 1e-6).all() and (out <= upper + 1e-6).all()
