"""Per-layer rules of bound propagation: interval (IBP) and backward linear (CROWN) rules.

Written here because the reference library (auto_LiRPA) does not install with the torch we
pin; our models use few layer kinds, so a focused, fully tested module is small. A model is
turned into a flat list of ops by `tailorml.robust.bounds.to_ops`; any layer without a sound
rule is refused there, by name.

Backward coefficients `A` have shape (batch, specs, *layer_output_shape): row s of sample b
says which linear function of this layer's output is being bounded. `back` maps them to the
layer's input and returns the constant picked up on the way (batch, specs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Bounds = tuple[torch.Tensor, torch.Tensor]


class UnsupportedLayerError(ValueError):
    """A layer (or mode) with no sound bound rule here."""


def _sum_trailing(t: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension after (batch, specs)."""
    return t.flatten(2).sum(dim=2)


class Op:
    """One layer. Affine ops ignore `bounds_in`; ReLU and max pooling need it."""

    nonlinear = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def ibp(self, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
        raise NotImplementedError

    def back(
        self, a_lower: torch.Tensor | None, a_upper: torch.Tensor | None, bounds_in: Bounds | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class AffineOp(Op):
    """y = W x + b for some W: the same rule bounds from below and above."""

    def transpose(self, a: torch.Tensor) -> torch.Tensor:  # a W
        raise NotImplementedError

    def bias_term(self, a: torch.Tensor) -> torch.Tensor:  # a b
        raise NotImplementedError

    def ibp_center_radius(self, center: torch.Tensor, radius: torch.Tensor) -> Bounds:
        raise NotImplementedError

    def ibp(self, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
        center, radius = self.ibp_center_radius((upper + lower) / 2, (upper - lower) / 2)
        return center - radius, center + radius

    def back(self, a_lower, a_upper, bounds_in):
        zero = _zero_bias(a_lower if a_lower is not None else a_upper)
        coefficients = [None if a is None else self.transpose(a) for a in (a_lower, a_upper)]
        biases = [zero if a is None else self.bias_term(a) for a in (a_lower, a_upper)]
        return coefficients[0], coefficients[1], biases[0], biases[1]


def _zero_bias(a: torch.Tensor) -> torch.Tensor:
    return a.new_zeros(a.shape[:2])


class ChannelAffineOp(AffineOp):
    """x * scale + shift per channel: input normalisation, and BatchNorm folded in eval mode."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, spatial_dims: int) -> None:
        shape = (1, -1) + (1,) * spatial_dims
        self.scale, self.shift = scale.reshape(shape), shift.reshape(shape)

    def forward(self, x):
        return x * self.scale + self.shift

    def ibp_center_radius(self, center, radius):
        return center * self.scale + self.shift, radius * self.scale.abs()

    def transpose(self, a):
        return a * self.scale.unsqueeze(1)

    def bias_term(self, a):
        return _sum_trailing(a * self.shift.unsqueeze(1))


class LinearOp(AffineOp):
    def __init__(self, layer: nn.Linear) -> None:
        self.weight, self.bias = layer.weight, layer.bias

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def ibp_center_radius(self, center, radius):
        return F.linear(center, self.weight, self.bias), F.linear(radius, self.weight.abs())

    def transpose(self, a):
        return a @ self.weight

    def bias_term(self, a):
        return a @ self.bias if self.bias is not None else _zero_bias(a)


class ConvOp(AffineOp):
    """Conv1d or Conv2d; the transpose is a transposed convolution with the same geometry."""

    def __init__(self, layer: nn.Conv1d | nn.Conv2d, input_shape: tuple[int, ...]) -> None:
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise UnsupportedLayerError(
                f"{type(layer).__name__} with padding {layer.padding!r} / padding_mode "
                f"{layer.padding_mode!r} is not supported; use integer zero padding"
            )
        self.layer, self.input_shape = layer, input_shape
        self.dims = 1 if isinstance(layer, nn.Conv1d) else 2
        self.conv = F.conv1d if self.dims == 1 else F.conv2d
        self.conv_t = F.conv_transpose1d if self.dims == 1 else F.conv_transpose2d

    def forward(self, x):
        return self.layer(x)

    def ibp_center_radius(self, center, radius):
        layer = self.layer
        geometry = dict(
            stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups
        )
        return (
            self.conv(center, layer.weight, layer.bias, **geometry),
            self.conv(radius, layer.weight.abs(), None, **geometry),
        )

    def transpose(self, a):
        layer = self.layer
        batch, specs = a.shape[:2]
        flat = a.reshape(batch * specs, *a.shape[2:])
        out_spatial = a.shape[3:]
        in_spatial = self.input_shape[1:]
        output_padding = tuple(
            size_in - ((size_out - 1) * stride - 2 * pad + dilation * (kernel - 1) + 1)
            for size_in, size_out, stride, pad, dilation, kernel in zip(
                in_spatial,
                out_spatial,
                layer.stride,
                layer.padding,
                layer.dilation,
                layer.kernel_size,
                strict=True,
            )
        )
        result = self.conv_t(
            flat,
            layer.weight,
            None,
            stride=layer.stride,
            padding=layer.padding,
            output_padding=output_padding,
            groups=layer.groups,
            dilation=layer.dilation,
        )
        return result.reshape(batch, specs, *self.input_shape)

    def bias_term(self, a):
        if self.layer.bias is None:
            return _zero_bias(a)
        return a.flatten(3).sum(dim=3) @ self.layer.bias


class ReshapeOp(AffineOp):
    """Flatten (and the identity: Dropout in eval mode): no arithmetic, only a new shape."""

    def __init__(self, input_shape: tuple[int, ...], flatten: bool) -> None:
        self.input_shape, self.flatten = input_shape, flatten

    def forward(self, x):
        return x.flatten(1) if self.flatten else x

    def ibp_center_radius(self, center, radius):
        return self.forward(center), self.forward(radius)

    def transpose(self, a):
        return a.reshape(*a.shape[:2], *self.input_shape)

    def bias_term(self, a):
        return _zero_bias(a)


def relu_relaxation(lower: torch.Tensor, upper: torch.Tensor):
    """Linear bounds a_l x <= relu(x) <= a_u x + b_u on [lower, upper] (CROWN, Zhang et al.
    2018): the chord above; below, slope 1 or 0, whichever leaves the smaller area."""
    active, inactive = lower >= 0, upper <= 0
    unstable = ~(active | inactive)
    width = (upper - lower).clamp_min(1e-12)
    upper_slope = torch.where(unstable, upper / width, active.to(lower.dtype))
    upper_intercept = torch.where(unstable, -upper_slope * lower, torch.zeros_like(lower))
    lower_slope = torch.where(unstable, (upper > -lower).to(lower.dtype), active.to(lower.dtype))
    return lower_slope, upper_slope, upper_intercept


class ReLUOp(Op):
    nonlinear = True

    def forward(self, x):
        return torch.relu(x)

    def ibp(self, lower, upper):
        return lower.clamp_min(0), upper.clamp_min(0)

    def back(self, a_lower, a_upper, bounds_in):
        lower_slope, upper_slope, upper_intercept = (
            t.unsqueeze(1) for t in relu_relaxation(*bounds_in)
        )
        bias_lower = bias_upper = None
        new_lower = new_upper = None
        if a_lower is not None:
            positive, negative = a_lower.clamp_min(0), a_lower.clamp_max(0)
            new_lower = positive * lower_slope + negative * upper_slope
            bias_lower = _sum_trailing(negative * upper_intercept)
        if a_upper is not None:
            positive, negative = a_upper.clamp_min(0), a_upper.clamp_max(0)
            new_upper = positive * upper_slope + negative * lower_slope
            bias_upper = _sum_trailing(positive * upper_intercept)
        reference = a_lower if a_lower is not None else a_upper
        zero = _zero_bias(reference)
        return (
            new_lower,
            new_upper,
            zero if bias_lower is None else bias_lower,
            zero if bias_upper is None else bias_upper,
        )


class MaxPoolOp(Op):
    """Non-overlapping max pooling (kernel == stride, no padding, no dilation).

    Relaxation: max(x) >= x_j for the window entry j with the largest lower bound; above,
    max(x) <= x_j when j dominates (l_j >= u_i for every other i, so max = x_j exactly), else
    the constant max_i u_i. Both are sound for every point of the box."""

    nonlinear = True

    def __init__(self, layer: nn.MaxPool1d | nn.MaxPool2d, input_shape: tuple[int, ...]) -> None:
        self.dims = 1 if isinstance(layer, nn.MaxPool1d) else 2
        pair = lambda v: (v,) * self.dims if isinstance(v, int) else tuple(v)  # noqa: E731
        kernel, stride = pair(layer.kernel_size), pair(layer.stride or layer.kernel_size)
        padding, dilation = pair(layer.padding), pair(layer.dilation)
        if kernel != stride or any(padding) or any(d != 1 for d in dilation) or layer.ceil_mode:
            raise UnsupportedLayerError(
                f"{type(layer).__name__}(kernel_size={layer.kernel_size}, stride={layer.stride}, "
                f"padding={layer.padding}, dilation={layer.dilation}, ceil_mode={layer.ceil_mode})"
                " has no sound bound rule here; only non-overlapping pooling (kernel_size == "
                "stride, no padding, dilation 1, ceil_mode False) is supported"
            )
        self.layer, self.kernel, self.input_shape = layer, kernel, input_shape
        self.out_spatial = tuple(size // k for size, k in zip(input_shape[1:], kernel, strict=True))

    def forward(self, x):
        return self.layer(x)

    def ibp(self, lower, upper):
        return self.layer(lower), self.layer(upper)

    def _windows(self, t: torch.Tensor) -> torch.Tensor:
        """(batch, C, *spatial) -> (batch, C, *out_spatial, window entries)."""
        if self.dims == 1:
            (k,), (n,) = self.kernel, self.out_spatial
            return t[..., : n * k].reshape(*t.shape[:2], n, k)
        (kh, kw), (nh, nw) = self.kernel, self.out_spatial
        t = t[..., : nh * kh, : nw * kw].reshape(*t.shape[:2], nh, kh, nw, kw)
        return t.permute(0, 1, 2, 4, 3, 5).reshape(*t.shape[:2], nh, nw, kh * kw)

    def _unwindows(self, t: torch.Tensor) -> torch.Tensor:
        """Inverse of `_windows` for coefficients (batch, specs, C, *out_spatial, entries);
        inputs cut off by floor-mode pooling get coefficient 0."""
        batch, specs, channels = t.shape[:3]
        if self.dims == 1:
            (k,), (n,) = self.kernel, self.out_spatial
            flat = t.reshape(batch, specs, channels, n * k)
        else:
            (kh, kw), (nh, nw) = self.kernel, self.out_spatial
            flat = t.reshape(batch, specs, channels, nh, nw, kh, kw).permute(0, 1, 2, 3, 5, 4, 6)
            flat = flat.reshape(batch, specs, channels, nh * kh, nw * kw)
        full = t.new_zeros(batch, specs, *self.input_shape)
        index = (slice(None),) * 3 + tuple(slice(0, size) for size in flat.shape[3:])
        full[index] = flat
        return full

    def back(self, a_lower, a_upper, bounds_in):
        lower, upper = (self._windows(t) for t in bounds_in)
        best = lower.argmax(dim=-1, keepdim=True)
        chosen = torch.zeros_like(lower).scatter_(-1, best, 1.0).unsqueeze(1)
        best_lower = lower.gather(-1, best).squeeze(-1)
        others_upper = upper.masked_fill(chosen.squeeze(1).bool(), float("-inf")).amax(dim=-1)
        dominant = (best_lower >= others_upper).unsqueeze(1)
        ceiling = upper.amax(dim=-1).unsqueeze(1)
        reference = a_lower if a_lower is not None else a_upper
        zero = _zero_bias(reference)
        results = []
        for a, bound_from_below in ((a_lower, True), (a_upper, False)):
            if a is None:
                results.append((None, zero))
                continue
            # coefficients that need the lower relaxation (x_j) vs the upper one
            towards_lower = a.clamp_min(0) if bound_from_below else a.clamp_max(0)
            towards_upper = a - towards_lower
            exact_part = towards_upper * dominant
            constant_part = towards_upper * (~dominant)
            coefficient = (towards_lower + exact_part).unsqueeze(-1) * chosen
            results.append((self._unwindows(coefficient), _sum_trailing(constant_part * ceiling)))
        return results[0][0], results[1][0], results[0][1], results[1][1]
