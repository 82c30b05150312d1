"""The HE-friendly alert model: a network a CKKS server can evaluate on a window it cannot
read (`tailorml.privacy`).

CKKS computes additions and multiplications only, and every multiplication spends one
level of a finite modulus chain; each level makes keys and ciphertexts bigger and every
rotation slower. So the network is shaped for the chain, not for the microcontroller:

- the input normalisation (a fixed affine map) is folded into the convolution's weights
  and bias when encrypted: it costs nothing;
- one convolution over time (a plaintext-matrix product: one level);
- the activation is x², or the quadratic least-squares fit of ReLU (one ciphertext
  multiplication: one level), instead of ReLU, which CKKS could only approximate with a
  high-degree polynomial;
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

from tailorml.models.spec import CNNSpec, Standardize
from tailorml.policy import AlertPolicy

HE_FRIENDLY = "he_friendly"


# Degree-2 activations, as (c0, c1, c2) of c0 + c1·x + c2·x². Every one costs one CKKS
# multiplication: c2·(x + c1/(2·c2))² + const, the shift folded into the layer before and
# c2 and the constant into the layer after.
ACTIVATIONS = {
    "square": (0.0, 0.0, 1.0),
    # the least-squares fit of ReLU on [-4, 4] (max error 0.375): starts training like ReLU
    "relu_poly": (0.3752, 0.5, 0.1171),
}


class Square(nn.Module):
    """A quadratic activation c0 + c1·x + c2·x² (default x²): the lowest degree CKKS
    evaluates exactly, with one multiplication."""

    def __init__(self, coefficients: tuple[float, float, float] = ACTIVATIONS["square"]) -> None:
        super().__init__()
        self.coefficients = tuple(float(c) for c in coefficients)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c0, c1, c2 = self.coefficients
        if (c0, c1) == (0.0, 0.0):
            return c2 * x * x
        return c0 + c1 * x + c2 * x * x

    def completed_square(self) -> tuple[float, float, float]:
        """(c2, shift, constant) with activation(x) = c2·(x + shift)² + constant."""
        c0, c1, c2 = self.coefficients
        shift = c1 / (2 * c2)
        return c2, shift, c0 - c2 * shift * shift


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
        if spec.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation {spec.activation!r} is not one of {', '.join(ACTIVATIONS)}"
            )
        if spec.pool < 1 or spec.length % spec.pool:
            raise ValueError(f"pool {spec.pool} must divide the window length {spec.length}")
        self.spec = spec
        self.policy: AlertPolicy | None = None
        self.normalize = Standardize(mean, scale, 1)
        width = spec.conv_channels[0]
        coefficients = ACTIVATIONS[spec.activation]
        self.features = nn.Sequential(
            nn.Conv1d(spec.in_channels, width, spec.kernel_size, padding=spec.kernel_size // 2),
            Square(coefficients),
            nn.AvgPool1d(spec.pool),
        )
        flat = width * (spec.length // spec.pool)
        head: list[nn.Module] = [nn.Flatten()]
        if spec.hidden:
            head += [nn.Linear(flat, spec.hidden), Square(coefficients)]
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
