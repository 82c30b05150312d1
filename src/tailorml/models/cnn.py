"""The compact 1-D CNN of the glucose-alert task.

Input normalisation is the model's first layer (a fixed per-channel affine map), so the
model takes readings in their own units (mg/dL, U, g): deployment needs no separate
preprocessing, and a sensor error of ±ε mg/dL is a box on the model's real input.
The default architecture has about 16k parameters, small enough for int8 weights on an
STM32F4-class microcontroller.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from tailorml.config import ModelConfig
from tailorml.errors import ConfigError


class Standardize(nn.Module):
    """(x - mean) / scale per channel; buffers, not parameters: they are never trained."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.reshape(1, -1, 1).clone())
        self.register_buffer("scale", scale.reshape(1, -1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


@dataclass
class CNNSpec:
    """Everything needed to rebuild the network (stored with its weights)."""

    in_channels: int
    length: int
    n_classes: int
    conv_channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    kernel_size: int = 5
    hidden: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


class AlertCNN(nn.Module):
    """Conv1d-ReLU(-MaxPool) blocks, then two linear layers. Pooling after the first two
    blocks halves the sequence each time; only layers with sound bound propagation."""

    def __init__(self, spec: CNNSpec, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.spec = spec
        self.normalize = Standardize(mean, scale)
        layers: list[nn.Module] = []
        channels, length = spec.in_channels, spec.length
        for position, width in enumerate(spec.conv_channels):
            layers += [
                nn.Conv1d(channels, width, spec.kernel_size, padding=spec.kernel_size // 2),
                nn.ReLU(),
            ]
            if position < 2 and length >= 2:
                layers.append(nn.MaxPool1d(2))
                length //= 2
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * length, spec.hidden),
            nn.ReLU(),
            nn.Linear(spec.hidden, spec.n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def build_model(
    config: ModelConfig,
    in_channels: int,
    length: int,
    n_classes: int,
    mean: torch.Tensor,
    scale: torch.Tensor,
) -> AlertCNN:
    spec = CNNSpec(
        in_channels=in_channels,
        length=length,
        n_classes=n_classes,
        conv_channels=list(config.conv_channels),
        kernel_size=config.kernel_size,
        hidden=config.hidden,
    )
    model = AlertCNN(spec, mean, scale)
    n_parameters = count_parameters(model)
    if n_parameters > config.max_parameters:
        raise ConfigError(
            f"model has {n_parameters} parameters, more than model.max_parameters = "
            f"{config.max_parameters}; shrink model.conv_channels or model.hidden"
        )
    return model


def save_model(model: AlertCNN, path) -> None:
    """Weights, buffers and the spec in one file, written atomically."""
    from tailorml.io import atomic_write

    payload = {"spec": model.spec.to_dict(), "state_dict": model.state_dict()}
    atomic_write(path, lambda target: torch.save(payload, target))


def load_model(path) -> AlertCNN:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    spec = CNNSpec(**payload["spec"])
    state = payload["state_dict"]
    model = AlertCNN(spec, state["normalize.mean"].flatten(), state["normalize.scale"].flatten())
    model.load_state_dict(state)
    model.eval()
    return model
