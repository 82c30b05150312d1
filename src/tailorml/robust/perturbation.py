"""The perturbation model: how far a sensor may be off, in the units users read.

Every CGM reading of an input window may be off by up to ±ε mg/dL, optionally plus ±p % of
the reading (an L∞ box around the window). The model normalises its input in its first
layer, so this box is handed to bound propagation in mg/dL and mapped through the
normalisation exactly, like any affine layer.

Default ε = 10 mg/dL: the FDA's iCGM special controls (21 CFR 862.1355) ask that 85 % of
readings below 70 mg/dL lie within ±15 mg/dL of the reference and that readings above
180 mg/dL lie within ±15 %; modern sensors have a mean absolute relative difference of about
8–10 %, i.e. around 10 mg/dL near the hypo threshold where alerts matter most. ±10 mg/dL is
a typical, not a worst-case, error: also check larger ε (the report sweeps a range).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

DEFAULT_EPS_MGDL = 10.0


@dataclass(frozen=True)
class SensorError:
    """±(eps + relative * |reading|) on the input channels `channels` (None: all of them)."""

    eps: float
    relative: float = 0.0  # a fraction: 0.05 = ±5 %
    channels: Sequence[int] | None = None

    def __post_init__(self) -> None:
        if not (self.eps >= 0):  # also refuses NaN
            raise ValueError(f"eps must be >= 0 (a sensor error in input units), got {self.eps}")
        if not (0 <= self.relative < 1):
            raise ValueError(
                f"relative error must be a fraction in [0, 1), e.g. 0.05 for 5 %; got "
                f"{self.relative}"
            )

    def radius(self, x: torch.Tensor) -> torch.Tensor:
        radius = self.eps + self.relative * x.abs()
        if self.channels is not None:
            mask = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
            mask[list(self.channels)] = 1.0
            radius = radius * mask.reshape(1, -1, *([1] * (x.dim() - 2)))
        return radius

    def box(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lowest and highest input each reading may take."""
        radius = self.radius(x)
        return x - radius, x + radius

    def scaled(self, factor: float) -> SensorError:
        """The same error model at `factor` times its size (ε ramps in certified training)."""
        return SensorError(self.eps * factor, self.relative * factor, self.channels)

    def describe(self) -> str:
        text = f"±{self.eps:g}"
        if self.relative:
            text += f" ± {100 * self.relative:g} %"
        return text


def cgm_error(
    eps: float, relative_percent: float = 0.0, channel_names: Sequence[str] = ("cgm",)
) -> SensorError:
    """The sensor-error box of the glucose task: only the CGM channel is perturbed (insulin
    and carbohydrate inputs come from the pump and the user, not from the sensor)."""
    return SensorError(eps, relative_percent / 100, [list(channel_names).index("cgm")])
