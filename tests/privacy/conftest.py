"""Small HE-friendly models with fixed random weights, and CKKS keys made once per module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tailorml.models.cnn import CNNSpec, network
from tailorml.policy import AlertPolicy


def he_model(
    hidden: int = 0,
    activation: str = "square",
    channels: int = 1,
    width: int = 4,
    seed: int = 0,
    levels: tuple[float, ...] = (),
):
    """An HE-friendly network over 24 readings per channel, normalised like CGM (mg/dL);
    weights from `seed`, input levels `levels` (mg/dL) encoded on channel 0. With its
    alert policy, like every saved model."""
    spec = CNNSpec(
        in_channels=channels,
        length=24,
        n_classes=3,
        conv_channels=[width],
        kernel_size=5,
        hidden=hidden,
        architecture="he_friendly",
        pool=2,
        activation=activation,
        cgm_levels=list(levels),
    )
    torch.manual_seed(seed)
    packed = channels + len(levels)
    model = network(spec, torch.full((packed,), 150.0), torch.full((packed,), 50.0))
    model.policy = AlertPolicy(threshold=0.3)
    return model.eval()


def glucose_windows(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """`n` plausible CGM windows (mg/dL): a level plus a trend plus noise, within a
    sensor's reporting range (40-400 mg/dL, as Dexcom and Libre clip)."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(60, 300, size=(n, channels, 1))
    trend = rng.uniform(-3, 3, size=(n, channels, 1)) * np.arange(24)
    return np.clip(level + trend + rng.normal(0, 4, size=(n, channels, 24)), 40.0, 400.0)


@pytest.fixture(scope="module")
def small_model():
    return he_model()
