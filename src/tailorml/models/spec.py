"""What every network of tailorml is built from: its spec (stored with its weights) and the
fixed input normalisation. Kept apart from the networks so that each architecture module
(`cnn`, `he_cnn`) depends on it, and `cnn.network` can build either without a circle."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


class Standardize(nn.Module):
    """(x - mean) / scale per channel; buffers, not parameters: they are never trained."""

    def __init__(
        self, mean: torch.Tensor, scale: torch.Tensor, dims: int = 1, channels: int | None = None
    ) -> None:
        super().__init__()
        if channels is not None and not mean.numel() == scale.numel() == channels:
            # broadcasting would silently normalise every channel like the first
            raise ValueError(
                f"normalisation has {mean.numel()} means and {scale.numel()} scales for "
                f"{channels} input channel(s)"
            )
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
    # he_friendly: glucose levels (mg/dL) of the fixed input encoding (models.levels)
    cgm_levels: list[float] = field(default_factory=list)

    @property
    def encoded_channels(self) -> int:
        """Channels after the fixed input encoding: what the first convolution reads."""
        return self.in_channels + len(self.cgm_levels)

    def to_dict(self) -> dict:
        return asdict(self)
