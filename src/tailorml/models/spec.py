"""What every network of tailorml is built from: its spec (stored with its weights) and the
fixed input normalisation. Kept apart from the networks so that each architecture module
(`cnn`, `he_cnn`) depends on it, and `cnn.network` can build either without a circle."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


class Standardize(nn.Module):
    """(x - mean) / scale per channel; buffers, not parameters: they are never trained."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, dims: int = 1) -> None:
        super().__init__()
        shape = (1, -1) + (1,) * dims
        self.register_buffer("mean", mean.reshape(shape).clone())
        self.register_buffer("scale", scale.reshape(shape).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


@dataclass
class CNNSpec:
    """Everything needed to rebuild the network (stored with its weights)."""

    in_channels: int
    length: int  # readings of a sequence, or the side of a square image
    n_classes: int
    conv_channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    kernel_size: int = 5
    hidden: int = 32
    dims: int = 1  # 1: Conv1d over time; 2: Conv2d over images
    architecture: str = "cnn"  # "cnn" (SmallCNN) or "he_friendly" (models.he_cnn)
    pool: int = 2  # he_friendly: average-pooling size after the x² (cnn: max-pool 2)
    activation: str = "square"  # he_friendly: "square" or "relu_poly" (models.he_cnn)

    def to_dict(self) -> dict:
        return asdict(self)
