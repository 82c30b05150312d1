"""Magnitude and structured (channel) pruning during training, and physically smaller models.

Masks are computed with `torch.nn.utils.prune` (global L1 magnitude, or per-layer L1 norm of
whole output channels) and then made permanent, so the network keeps plain parameters and
every other part of tailorml (bounds, freezing, saving) sees an ordinary model; a
`Pruner` (a loop plugin) re-applies the masks after each optimiser step of the one training
loop. Sparsity
grows in stages along the cubic schedule of Zhu & Gupta (2017), with fine-tuning between and
after the stages, so the network recovers from each cut.

Structured pruning also zeroes the biases of removed channels, so `compact` can rebuild a
narrower `SmallCNN` that computes exactly the same function with fewer parameters.
Unstructured sparsity becomes physical through `sparse_bytes` (int32 CSR storage).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import prune

from tailorml.models.cnn import CNNSpec, SmallCNN, count_parameters
from tailorml.models.train import LoopPlugin


@dataclass(frozen=True)
class PruningSchedule:
    """Target `sparsity` (share of prunable weights removed; for structured pruning, share
    of parameters the narrower network saves), reached in `stages` cuts spread over the
    first `prune_fraction` of training."""

    sparsity: float
    structured: bool = False
    stages: int = 4
    prune_fraction: float = 0.6

    def __post_init__(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity must lie in [0, 1), e.g. 0.9; got {self.sparsity}")
        if self.stages < 1:
            raise ValueError(f"stages must be >= 1, got {self.stages}")
        if not 0 < self.prune_fraction <= 1:
            raise ValueError(f"prune_fraction must lie in (0, 1], got {self.prune_fraction}")

    def cut_steps(self, total_steps: int) -> dict[int, float]:
        """Step number (after which to cut) -> sparsity reached there (cubic schedule)."""
        cuts: dict[int, float] = {}
        for stage in range(1, self.stages + 1):
            step = max(1, round(total_steps * self.prune_fraction * stage / self.stages))
            cuts[step] = self.sparsity * (1 - (1 - stage / self.stages) ** 3)
        return cuts


def prunable_layers(model: nn.Module) -> list[nn.Module]:
    """Convolutions and linear layers, in forward order."""
    return [m for m in model.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear)]


def weight_sparsity(model: nn.Module) -> float:
    """Share of zero weights in the prunable layers (biases excluded)."""
    layers = prunable_layers(model)
    total = sum(layer.weight.numel() for layer in layers)
    zeros = sum(int((layer.weight == 0).sum()) for layer in layers)
    return zeros / total if total else 0.0


def _magnitude_masks(model: nn.Module, sparsity: float) -> dict[nn.Module, torch.Tensor]:
    layers = prunable_layers(model)
    prune.global_unstructured(
        [(layer, "weight") for layer in layers],
        pruning_method=prune.L1Unstructured,
        amount=round(sparsity * sum(layer.weight.numel() for layer in layers)),
    )
    masks = {layer: layer.weight_mask.clone() for layer in layers}
    for layer in layers:
        prune.remove(layer, "weight")
    return masks


def hidden_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose output channels/units can go: all but the classifier."""
    return prunable_layers(model)[:-1]


def _channel_masks(model: SmallCNN, channel_fraction: float) -> dict[nn.Module, torch.Tensor]:
    masks: dict[nn.Module, torch.Tensor] = {}
    for layer in hidden_layers(model):
        n_out = layer.weight.shape[0]
        amount = min(round(channel_fraction * n_out), n_out - 1)  # keep at least one
        if amount > 0:
            prune.ln_structured(layer, "weight", amount=amount, n=1, dim=0)
            masks[layer] = layer.weight_mask.clone()
            prune.remove(layer, "weight")
    return masks


def narrower_spec(spec: CNNSpec, channel_fraction: float) -> CNNSpec:
    keep = lambda width: max(1, width - min(round(channel_fraction * width), width - 1))  # noqa: E731
    return CNNSpec(
        in_channels=spec.in_channels,
        length=spec.length,
        n_classes=spec.n_classes,
        conv_channels=[keep(width) for width in spec.conv_channels],
        kernel_size=spec.kernel_size,
        hidden=keep(spec.hidden),
        dims=spec.dims,
    )


def _n_parameters(spec: CNNSpec) -> int:
    return count_parameters(
        SmallCNN(spec, torch.zeros(spec.in_channels), torch.ones(spec.in_channels))
    )


def channel_fraction_for(spec: CNNSpec, sparsity: float) -> float:
    """Smallest share of channels to remove so that the compacted network has at most
    (1 - sparsity) of the parameters."""
    full = _n_parameters(spec)
    for step in range(100):
        fraction = step / 100
        if _n_parameters(narrower_spec(spec, fraction)) <= (1 - sparsity) * full:
            return fraction
    return 0.99


@dataclass
class Pruner(LoopPlugin):
    """Cuts at the scheduled steps and keeps pruned weights at zero after every step."""

    model: nn.Module
    schedule: PruningSchedule
    total_steps: int
    masks: dict[nn.Module, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cuts = self.schedule.cut_steps(self.total_steps)
        if self.schedule.structured and not isinstance(self.model, SmallCNN):
            raise ValueError("structured pruning needs a SmallCNN (to compact it afterwards)")

    def cut(self, sparsity: float) -> None:
        with torch.no_grad():
            if self.schedule.structured:
                fraction = channel_fraction_for(self.model.spec, sparsity)
                self.masks = _channel_masks(self.model, fraction)
            else:
                self.masks = _magnitude_masks(self.model, sparsity)
        self.apply()

    def apply(self) -> None:
        with torch.no_grad():
            for layer, mask in self.masks.items():
                layer.weight.mul_(mask)
                if self.schedule.structured and layer.bias is not None:
                    alive = mask.flatten(1).any(dim=1)
                    layer.bias.mul_(alive)

    def after_step(self, step: int, loss: float = 0.0) -> None:
        if step in self.cuts:
            self.cut(self.cuts[step])
        else:
            self.apply()


def _alive_outputs(layer: nn.Module) -> torch.Tensor:
    """Output channels/units with any non-zero weight or bias."""
    alive = layer.weight.detach().flatten(1).ne(0).any(dim=1)
    if layer.bias is not None:
        alive |= layer.bias.detach().ne(0)
    return alive.nonzero().squeeze(1)


def compact(model: SmallCNN) -> SmallCNN:
    """A narrower SmallCNN without the dead channels/units of `model` (same outputs: a dead
    unit has zero weights and bias, so it outputs relu(0) = 0 and feeds nothing)."""
    convs = [m for m in model.features if isinstance(m, nn.Conv1d | nn.Conv2d)]
    first, last = model.head[1], model.head[3]
    kept = [_alive_outputs(conv) for conv in convs]
    kept = [k if len(k) else torch.tensor([0]) for k in kept]
    kept_hidden = _alive_outputs(first)
    kept_hidden = kept_hidden if len(kept_hidden) else torch.tensor([0])
    spec = CNNSpec(
        **{
            **model.spec.to_dict(),
            "conv_channels": [len(k) for k in kept],
            "hidden": len(kept_hidden),
        }
    )
    smaller = SmallCNN(spec, model.normalize.mean.flatten(), model.normalize.scale.flatten())
    small_convs = [m for m in smaller.features if isinstance(m, nn.Conv1d | nn.Conv2d)]
    previous = torch.arange(model.spec.in_channels)
    with torch.no_grad():
        for conv, small, keep in zip(convs, small_convs, kept, strict=True):
            small.weight.copy_(conv.weight[keep][:, previous])
            small.bias.copy_(conv.bias[keep])
            previous = keep
        positions = first.in_features // convs[-1].out_channels
        columns = (previous.unsqueeze(1) * positions + torch.arange(positions)).flatten()
        smaller.head[1].weight.copy_(first.weight[kept_hidden][:, columns])
        smaller.head[1].bias.copy_(first.bias[kept_hidden])
        smaller.head[3].weight.copy_(last.weight[:, kept_hidden])
        smaller.head[3].bias.copy_(last.bias)
    smaller.policy = model.policy  # same outputs, so the same decisions
    return smaller.eval()


def sparse_bytes(model: nn.Module) -> bytes:
    """The state dict with every prunable weight stored as int32-indexed CSR (rows: output
    channels): what a sparse model costs on disk or in flash."""
    state = {}
    for name, tensor in model.state_dict().items():
        module_name, _, kind = name.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        if kind == "weight" and module in prunable_layers(model):
            with warnings.catch_warnings():  # "sparse CSR support is in beta": storage only
                warnings.simplefilter("ignore", UserWarning)
                matrix = tensor.reshape(tensor.shape[0], -1).to_sparse_csr()
            state[name] = {
                "shape": list(tensor.shape),
                "crow": matrix.crow_indices().to(torch.int32),
                "col": matrix.col_indices().to(torch.int32),
                "values": matrix.values(),
            }
        else:
            state[name] = tensor
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()
