"""The HE-friendly model as a sequence of CKKS operations on plaintext weights, and the same
sequence run in numpy (the reference the encrypted run is checked against, and the proof
that the folding is exact: it equals the torch forward pass).

    x (packed)  ─ conv matrix (normalisation folded) ─ + bias ─ x² ─┬─ strided sum (head 0) + b0
                                                                    ├─ ...
                                                                    └─ strided sum (head H) + bH
    [hidden layer: each head ─ x² ─ logits = mix · heads + bias]

One level per matrix product, x², strided sum and mix (`depth`): 3 without a hidden layer,
5 with one. The average pooling and the flattening are folded into the head weights.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tailorml.models.he_cnn import HE_FRIENDLY, multiplicative_depth
from tailorml.privacy.layout import InputLayout, next_power_of_two
from tailorml.privacy.params import CKKSParameters, PrivacyError, parameters_for_depth

NOT_HE_FRIENDLY = (
    "{name} is a {architecture!r} model (ReLU, max pooling); encrypted inference needs "
    "model.architecture = 'he_friendly' (x² activations, average pooling): train one with "
    "`tailorml train --config experiments/he_friendly.toml`"
)


@dataclass(frozen=True)
class HEPlan:
    """Per-window weights of the encrypted forward pass (batch-independent)."""

    layout: InputLayout
    parameters: CKKSParameters
    conv: np.ndarray  # (window_slots, conv_slots): input slots -> convolution slots
    conv_bias: np.ndarray  # (conv_slots,)
    heads: np.ndarray  # (n_heads, conv_slots): strided-sum weights (pooling folded in)
    head_bias: np.ndarray  # (n_heads,)
    mix: np.ndarray | None  # (n_classes, n_heads) applied to heads², or None
    mix_bias: np.ndarray | None  # (n_classes,)
    depth: int

    @property
    def n_classes(self) -> int:
        return len(self.mix) if self.mix is not None else len(self.heads)

    @property
    def conv_slots(self) -> int:
        return self.conv.shape[1]

    @property
    def max_batch(self) -> int:
        return self.layout.max_batch(self.conv_slots)

    def conv_matrix(self, batch: int) -> np.ndarray:
        """The convolution for `batch` interleaved windows: slot k·B + b to j·B + b."""
        return np.kron(self.conv, np.eye(batch))

    def conv_bias_vector(self, batch: int) -> np.ndarray:
        return np.repeat(self.conv_bias, batch)

    def public_spec(self) -> dict:
        """What a client needs to encrypt for this model and read its answer (no weights)."""
        return {
            "architecture": HE_FRIENDLY,
            "layout": self.layout.to_dict(),
            "parameters": self.parameters.to_dict(),
            "depth": self.depth,
            "n_classes": self.n_classes,
            "max_batch": self.max_batch,
        }


def model_name(model: nn.Module) -> str:
    return getattr(model, "name", None) or type(model).__name__


def compile_plan(model: nn.Module, name: str | None = None) -> HEPlan:
    """The plan of a trained HE-friendly model; any other model is refused by name, and a
    model deeper than the shipped CKKS chains too."""
    name = name or model_name(model)
    spec = getattr(model, "spec", None)
    architecture = getattr(spec, "architecture", "unknown")
    if architecture != HE_FRIENDLY:
        raise PrivacyError(NOT_HE_FRIENDLY.format(name=name, architecture=architecture))
    depth = multiplicative_depth(spec)
    parameters = parameters_for_depth(depth, name)
    layout = InputLayout.for_model(
        spec.in_channels, spec.length, spec.kernel_size, parameters.slots, tuple(spec.cgm_levels)
    )
    conv_layer, pool = model.features[0], spec.pool
    width, length = spec.conv_channels[0], spec.length
    mean = model.normalize.mean.detach().double().flatten().numpy()
    scale = model.normalize.scale.detach().double().flatten().numpy()
    weight = conv_layer.weight.detach().double().numpy()  # (width, packed channels, kernel)
    bias = conv_layer.bias.detach().double().numpy()
    pad = spec.kernel_size // 2
    block = layout.block
    # activation(z) = gain·(z + shift)² + constant: the shift joins the bias before the
    # x², gain and constant join the weights and bias after it
    gain, shift, constant = model.features[1].completed_square()
    conv_slots = next_power_of_two(width * block)
    conv = np.zeros((layout.window_slots, conv_slots))
    conv_bias = np.zeros(conv_slots)
    for out in range(width):
        for t in range(length):
            column = out * block + t
            conv_bias[column] = bias[out] + shift
            for source in range(layout.channels):
                for tap in range(spec.kernel_size):
                    reading = t + tap - pad
                    if 0 <= reading < length:  # outside: the zero padding of the normalised input
                        w = weight[out, source, tap]
                        conv[source * block + reading, column] += w / scale[source]
                        conv_bias[column] -= w * mean[source] / scale[source]
    linears = [layer for layer in model.head if isinstance(layer, nn.Linear)]
    first = linears[0]
    first_weight = first.weight.detach().double().numpy()
    pooled = length // pool
    heads = np.zeros((len(first_weight), conv_slots))
    for out in range(width):
        for t in range(length):
            heads[:, out * block + t] = first_weight[:, out * pooled + t // pool] / pool
    head_bias = first.bias.detach().double().numpy() + constant * heads.sum(axis=1)
    heads *= gain
    mix = mix_bias = None
    if len(linears) == 2:
        gain, shift, constant = model.head[2].completed_square()
        head_bias = head_bias + shift
        mix = linears[1].weight.detach().double().numpy()
        mix_bias = linears[1].bias.detach().double().numpy() + constant * mix.sum(axis=1)
        mix = mix * gain
    return HEPlan(
        layout=layout,
        parameters=parameters,
        conv=conv,
        conv_bias=conv_bias,
        heads=heads,
        head_bias=head_bias,
        mix=mix,
        mix_bias=mix_bias,
        depth=depth,
    )


def run_plain(plan: HEPlan, packed: np.ndarray, batch: int) -> np.ndarray:
    """The plan's operations in float64 numpy on a packed slot vector: logits (batch, classes).
    Exactly what the CKKS evaluation computes, without the encryption noise."""
    values = packed @ plan.conv_matrix(batch) + plan.conv_bias_vector(batch)
    values = values * values
    features = values.reshape(plan.conv_slots, batch)  # strided: feature j of window b at j·B + b
    heads = plan.heads @ features + plan.head_bias[:, None]  # (n_heads, batch)
    if plan.mix is not None:
        heads = plan.mix @ (heads * heads) + plan.mix_bias[:, None]
    return heads.T


def plain_logits(plan: HEPlan, windows: np.ndarray) -> np.ndarray:
    """`run_plain` on windows (n, channels, length), in ciphertext-sized batches."""
    windows = plan.layout.check_windows(windows)
    outputs = []
    for start in range(0, len(windows), plan.max_batch):
        chunk = windows[start : start + plan.max_batch]
        batch = plan.layout.batch_for(len(chunk), plan.conv_slots)
        outputs.append(run_plain(plan, plan.layout.pack(chunk, batch), batch)[: len(chunk)])
    return np.concatenate(outputs)


def torch_logits(model: nn.Module, windows: np.ndarray) -> np.ndarray:
    """The model's own float64 forward pass (the reference for `plain_logits`)."""
    copy = deepcopy(model).double().eval()  # the caller's model stays float32
    with torch.no_grad():
        return copy(torch.as_tensor(windows, dtype=torch.float64)).numpy()
