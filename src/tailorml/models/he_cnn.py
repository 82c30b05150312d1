"""The HE-friendly alert model: a network a CKKS server can evaluate on a window it cannot
read (`tailorml.privacy`).

CKKS computes additions and multiplications only, and every multiplication spends one
level of a finite modulus chain; each level makes keys and ciphertexts bigger and every
rotation slower. So the network is shaped for the chain, not for the microcontroller:

- the input normalisation (a fixed affine map) is folded into the convolution's weights
  and bias when encrypted: it costs nothing;
- one convolution over time (a plaintext-matrix product: one level);
- the activation is x² (one ciphertext multiplication: one level) instead of ReLU, which
  CKKS could only approximate with a high-degree polynomial;
- average pooling (linear, folded into the next layer's weights) instead of max pooling
  (a comparison, which CKKS cannot do);
- an optional hidden linear layer with its own x², then the class logits.

Depth: 3 levels without the hidden layer, 5 with it (`multiplicative_depth`). The model
is plaintext on the server: only the person's readings are encrypted, so the model and
its card stay inspectable (docs/privacy.md).
"""

from __future__ import annotations

import torch
from torch import nn

from tailorml.models.cnn import CNNSpec, Standardize
from tailorml.policy import AlertPolicy

HE_FRIENDLY = "he_friendly"


class Square(nn.Module):
    """x ↦ x², the lowest-degree activation CKKS evaluates exactly (one multiplication)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class HEFriendlyCNN(nn.Module):
    """Standardize → Conv1d → x² → AvgPool → Flatten → [Linear → x²] → Linear.

    Same interface as `SmallCNN` (`spec`, `policy`, `normalize`, logits from readings in
    their own units), so training, evaluation, saving and the alert policy are shared."""

    def __init__(self, spec: CNNSpec, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        if spec.dims != 1:
            raise ValueError("the he_friendly architecture reads 1-D windows (dims = 1)")
        if len(spec.conv_channels) != 1:
            raise ValueError(
                f"the he_friendly architecture has one convolution, got conv_channels = "
                f"{spec.conv_channels}"
            )
        if spec.pool < 1 or spec.length % spec.pool:
            raise ValueError(f"pool {spec.pool} must divide the window length {spec.length}")
        self.spec = spec
        self.policy: AlertPolicy | None = None
        self.normalize = Standardize(mean, scale, 1)
        width = spec.conv_channels[0]
        self.features = nn.Sequential(
            nn.Conv1d(spec.in_channels, width, spec.kernel_size, padding=spec.kernel_size // 2),
            Square(),
            nn.AvgPool1d(spec.pool),
        )
        flat = width * (spec.length // spec.pool)
        head: list[nn.Module] = [nn.Flatten()]
        if spec.hidden:
            head += [nn.Linear(flat, spec.hidden), Square()]
        head.append(nn.Linear(spec.hidden or flat, spec.n_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


def multiplicative_depth(spec: CNNSpec) -> int:
    """Levels of the CKKS modulus chain the encrypted forward pass consumes: one per
    plaintext-matrix product (convolution, each linear layer) and one per x²."""
    linear_layers = 2 + (1 if spec.hidden else 0)
    squares = 1 + (1 if spec.hidden else 0)
    return linear_layers + squares
