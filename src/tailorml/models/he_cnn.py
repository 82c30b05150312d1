"""The HE-friendly alert model: a network a CKKS server can evaluate on a window it cannot
read (`tailorml.privacy`).

CKKS computes additions and multiplications only, and every multiplication spends one
level of a finite modulus chain; each level makes keys and ciphertexts bigger and every
rotation slower. So the network is shaped for the chain, not for the microcontroller:

- optionally, a fixed input encoding adds channels max(k − CGM, 0) at public glucose
  levels k (`tailorml.models.levels`): the client computes them before encrypting, so the
  quadratic network can read a level as ReLU would, at no depth;
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

from tailorml.models.levels import LevelEncoding
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
    """[LevelEncoding →] Standardize → Conv1d → x² → AvgPool → Flatten → [Linear → x²] → Linear.

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
        self.encode = LevelEncoding(spec.cgm_levels)
        self.normalize = Standardize(mean, scale, 1, spec.encoded_channels)
        width = spec.conv_channels[0]
        coefficients = ACTIVATIONS[spec.activation]
        self.features = nn.Sequential(
            nn.Conv1d(
                spec.encoded_channels, width, spec.kernel_size, padding=spec.kernel_size // 2
            ),
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
        return self.head(self.features(self.normalize(self.encode(x))))


def multiplicative_depth(spec: CNNSpec) -> int:
    """Levels of the CKKS modulus chain the encrypted forward pass consumes: one per
    plaintext-matrix product (convolution, each linear layer) and one per x²."""
    linear_layers = 2 + (1 if spec.hidden else 0)
    squares = 1 + (1 if spec.hidden else 0)
    return linear_layers + squares


def shape_of(spec: CNNSpec) -> tuple:
    """What ensemble members must share: everything but the convolution's width."""
    return (
        spec.in_channels,
        spec.length,
        spec.n_classes,
        spec.kernel_size,
        spec.pool,
        spec.activation,
        tuple(spec.cgm_levels),
    )


def fold_ensemble(members: list[HEFriendlyCNN]) -> HEFriendlyCNN:
    """One HE-friendly network whose logits are the mean of the members' logits.

    Without a hidden layer, x² and average pooling act per channel and the last layer is
    linear, so k members of C channels are exactly one network of k·C channels: their
    convolutions stacked, their class weights side by side (divided by k). An ensemble
    therefore costs no CKKS depth — only a wider convolution. Members must share the
    input normalisation, the window and the activation (same cohort and recipe, other
    seeds)."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    first = members[0]
    for member in members:
        spec = member.spec
        if spec.hidden:
            raise ValueError(
                "only models without a hidden layer fold into one (hidden = 0): after a "
                "hidden layer's x² the members' features mix"
            )
        if shape_of(spec) != shape_of(first.spec):
            raise ValueError(
                "ensemble members must share the window, kernel, pooling, activation and "
                "input levels"
            )
        if not (
            torch.equal(member.normalize.mean, first.normalize.mean)
            and torch.equal(member.normalize.scale, first.normalize.scale)
        ):
            raise ValueError(
                "ensemble members must share the input normalisation (trained on the same cohort)"
            )
    k = len(members)
    width = sum(member.spec.conv_channels[0] for member in members)
    spec = CNNSpec(**{**first.spec.to_dict(), "conv_channels": [width]})
    folded = HEFriendlyCNN(spec, first.normalize.mean.flatten(), first.normalize.scale.flatten())
    conv, last = folded.features[0], folded.head[-1]
    with torch.no_grad():
        conv.weight.copy_(torch.cat([m.features[0].weight for m in members]))
        conv.bias.copy_(torch.cat([m.features[0].bias for m in members]))
        last.weight.copy_(torch.cat([m.head[-1].weight for m in members], dim=1) / k)
        last.bias.copy_(torch.stack([m.head[-1].bias for m in members]).mean(0))
    folded.policy = first.policy
    return folded.eval()
