"""The HE-friendly model's fixed input encoding: how far the CGM is below given levels.

A network of x² and average pooling computes a quadratic function of its inputs, which is
smooth where the alert decision is sharpest: near 80 mg/dL it must tell a slow drift that
goes on below 70 from one that levels off (BENCHMARKS.md, "Where the quadratic network
loses lows"). ReLU reads such a level directly, x² cannot. So the encoding adds, for each
public level k (mg/dL), the channel max(k − CGM, 0) beside the readings: a fixed hinge with
no learned weight, which the client computes from its own window before encrypting it.
Nothing of the model runs on the client and nothing learned leaves the server.

The CGM is input channel 0 (`tailorml.config` requires it when levels are set). The same
arithmetic in numpy (the client, training statistics) and torch (the model's forward pass):
a test holds them equal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

CGM_CHANNEL = 0


def encode_levels(windows: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """`windows` (n, channels, length) with one channel max(k − CGM, 0) appended per level."""
    windows = np.asarray(windows)
    if not len(levels):
        return windows
    cgm = windows[:, CGM_CHANNEL : CGM_CHANNEL + 1, :]
    below = np.maximum(np.asarray(levels, dtype=windows.dtype)[None, :, None] - cgm, 0.0)
    return np.concatenate([windows, below], axis=1)


class LevelEncoding(nn.Module):
    """`encode_levels` as the model's first layer (a buffer, never trained)."""

    def __init__(self, levels: Sequence[float]) -> None:
        super().__init__()
        # not saved with the weights: the spec holds the levels (older files have no buffer)
        levels = torch.tensor(list(levels), dtype=torch.float32)
        self.register_buffer("levels", levels, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not len(self.levels):
            return x
        cgm = x[:, CGM_CHANNEL : CGM_CHANNEL + 1, :]
        below = torch.clamp(self.levels.to(x.dtype)[None, :, None] - cgm, min=0.0)
        return torch.cat([x, below], dim=1)
