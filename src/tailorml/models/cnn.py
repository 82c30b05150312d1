"""Small CNNs: the compact 1-D CNN of the glucose-alert task, and its 2-D sibling for the
synthetic-writers benchmark (same code, `dims=2`).

Input normalisation is the model's first layer (a fixed per-channel affine map), so the
model takes readings in their own units (mg/dL, U, g): deployment needs no separate
preprocessing, and a sensor error of ±ε mg/dL is a box on the model's real input.
The default architecture has 18,211 parameters, small enough for int8 weights on an
STM32F4-class microcontroller.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from tailorml.config import ModelConfig
from tailorml.errors import ConfigError, ModelFileError
from tailorml.models.he_cnn import HE_FRIENDLY, HEFriendlyCNN
from tailorml.models.spec import CNNSpec, Standardize
from tailorml.policy import AlertPolicy


class SmallCNN(nn.Module):
    """Conv-ReLU(-MaxPool) blocks, then two linear layers. Pooling after the first two
    blocks halves the sequence (or image side) each time; only layers with sound bound
    propagation."""

    def __init__(self, spec: CNNSpec, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        if spec.dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2, got {spec.dims}")
        self.spec = spec
        # how this model's outputs become decisions; set once trained, saved with the weights
        self.policy: AlertPolicy | None = None
        conv = nn.Conv1d if spec.dims == 1 else nn.Conv2d
        pool = nn.MaxPool1d if spec.dims == 1 else nn.MaxPool2d
        self.normalize = Standardize(mean, scale, spec.dims, spec.in_channels)
        layers: list[nn.Module] = []
        channels, length = spec.in_channels, spec.length
        for position, width in enumerate(spec.conv_channels):
            layers += [
                conv(channels, width, spec.kernel_size, padding=spec.kernel_size // 2),
                nn.ReLU(),
            ]
            if position < 2 and length >= 2:
                layers.append(pool(2))
                length //= 2
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * length**spec.dims, spec.hidden),
            nn.ReLU(),
            nn.Linear(spec.hidden, spec.n_classes),
        )

    def chain(self) -> tuple[nn.Module, ...]:
        """The parts the forward applies, in order (what `tailorml.robust.bounds` reads)."""
        return (self.normalize, self.features, self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for part in self.chain():
            x = part(x)
        return x


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def network(spec: CNNSpec, mean: torch.Tensor, scale: torch.Tensor) -> nn.Module:
    """The untrained network `spec` describes: a SmallCNN, or the HE-friendly model
    (same interface: spec, policy, normalize)."""
    if spec.architecture == "cnn":
        return SmallCNN(spec, mean, scale)
    if spec.architecture == HE_FRIENDLY:
        return HEFriendlyCNN(spec, mean, scale)
    raise ValueError(f"unknown architecture {spec.architecture!r}; use 'cnn' or 'he_friendly'")


def build_model(
    config: ModelConfig,
    in_channels: int,
    length: int,
    n_classes: int,
    mean: torch.Tensor,
    scale: torch.Tensor,
    dims: int = 1,
) -> SmallCNN:
    spec = CNNSpec(
        in_channels=in_channels,
        length=length,
        n_classes=n_classes,
        conv_channels=list(config.conv_channels),
        kernel_size=config.kernel_size,
        hidden=config.hidden,
        dims=dims,
        architecture=config.architecture,
        pool=config.pool,
        activation=config.activation,
        cgm_levels=list(config.cgm_levels),
    )
    try:
        model = network(spec, mean, scale)
    except ValueError as error:  # e.g. a pool that does not divide the window
        raise ConfigError(f"model.architecture = {config.architecture!r}: {error}") from None
    n_parameters = count_parameters(model)
    if n_parameters > config.max_parameters:
        raise ConfigError(
            f"model has {n_parameters} parameters, more than model.max_parameters = "
            f"{config.max_parameters}; shrink model.conv_channels or model.hidden"
        )
    return model


def _serialise(payload: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def weight_bytes(model: SmallCNN) -> bytes:
    """Spec and weights alone: what the network itself costs to store (size metrics)."""
    return _serialise({"spec": model.spec.to_dict(), "state_dict": model.state_dict()})


def model_bytes(model: SmallCNN) -> bytes:
    """Weights, buffers, the spec and the alert policy, serialised as one file's content.
    A model without a policy cannot be saved: a file must say how to decide."""
    if model.policy is None:
        raise ValueError("set model.policy before saving: a saved model carries its alert policy")
    return _serialise(
        {
            "spec": model.spec.to_dict(),
            "policy": model.policy.to_dict(),
            "state_dict": model.state_dict(),
        }
    )


def save_model(model: SmallCNN, path) -> None:
    """`model_bytes(model)` written atomically to `path`."""
    from tailorml.io import atomic_write_bytes

    atomic_write_bytes(path, model_bytes(model))


def require_model_file(path: Path, option: str, hint: str = "") -> Path:
    """`path` if it is a file, else a one-line error naming `option` and the full path (a
    run folder suggests its model.pt)."""
    path = Path(path)
    if path.is_dir():
        inside = path / "model.pt"
        suggestion = f"; pass {inside}" if inside.is_file() else ""
        raise ModelFileError(f"{option} {path} is a folder, not a model file{suggestion}")
    if not path.is_file():
        raise ModelFileError(f"{option} {path}: no such model file{hint}")
    return path


def load_model(path, data: bytes | None = None) -> SmallCNN:
    """The model saved at `path`, with its alert policy; any file that is not one is a
    ModelFileError naming it. With `data`, the model is read from those bytes of `path`
    (already read and hashed: what is loaded is what was hashed, even if the file changes)."""
    try:
        source = io.BytesIO(data) if data is not None else path
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: {path}") from None
    except OSError as error:  # unreadable (permissions, a folder), not necessarily no model
        raise ModelFileError(
            f"cannot read model file {path} ({error.strerror or type(error).__name__}); check "
            "that it is a file you may read"
        ) from None
    except Exception as error:  # pickle, zip and torch errors alike: not a model file
        raise ModelFileError(
            f"{path} is not a tailorml model file ({type(error).__name__}); pass the model.pt "
            "of a run or registry"
        ) from None
    if not isinstance(payload, dict) or not {"spec", "state_dict"} <= set(payload):
        raise ModelFileError(f"{path} is not a tailorml model file (no spec and weights)")
    if "policy" not in payload:
        raise ModelFileError(
            f"{path} has no alert policy (saved by an older tailorml); train it again so the "
            "file says how its outputs become alerts"
        )
    try:
        spec = CNNSpec(**payload["spec"])
        state = payload["state_dict"]
        model = network(spec, state["normalize.mean"].flatten(), state["normalize.scale"].flatten())
        model.load_state_dict(state)
    except (TypeError, KeyError, RuntimeError, ValueError) as error:
        raise ModelFileError(
            f"{path}: weights do not match the stored architecture ({error})"
        ) from None
    if not all(torch.isfinite(tensor).all() for tensor in state.values()):
        raise ModelFileError(f"{path} holds non-finite weights (NaN or inf); it cannot decide")
    model.policy = AlertPolicy.from_dict(payload["policy"], str(path))
    model.eval()
    return model


def layer_prefixes(model: nn.Module) -> list[str]:
    """Names of the parametrised layers in forward order, e.g. ['features.0', ..., 'head.3']:
    what 'freeze the first k layers' refers to."""
    prefixes: list[str] = []
    for name, _ in model.named_parameters():
        prefix = name.rsplit(".", 1)[0]
        if prefix not in prefixes:
            prefixes.append(prefix)
    return prefixes
