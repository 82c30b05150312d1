"""Where each reading of each window sits in the CKKS slots: the one contract between the
client (who packs) and the server (whose matrices assume it).

Readings are interleaved across windows: reading k of window b sits in slot k·B + b, for a
batch of B windows (a power of two). Every per-window linear map then becomes a matrix
whose non-zero diagonals do not depend on B (the convolution needs one per kernel tap), and
a sum over a window's features becomes a strided sum whose rotations are powers of two —
so a full ciphertext (16 or 32 windows) costs the server 2–3 times one window, not 16–32 times
(measured: BENCHMARKS.md).

Per window, channel c's readings fill a block of `block` slots (a power of two at least
length + kernel//2, so the convolution's zero padding falls on empty slots). A model with
input levels (`tailorml.models.levels`) reads more channels than the window has: the
layout carries the levels, and packing encodes the window first, on the client.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tailorml.models.levels import encode_levels
from tailorml.privacy.params import PrivacyError


def next_power_of_two(value: int) -> int:
    return 1 << max(0, (int(value) - 1).bit_length())


@dataclass(frozen=True)
class InputLayout:
    """The packing of windows (channels × length readings, in their own units) into slots.
    Public: the service hands it to clients with the model's alert policy."""

    channels: int  # packed channels: the window's, then one per level
    length: int
    block: int  # slots per channel per window
    slots: int  # ciphertext slots (N / 2)
    levels: tuple[float, ...] = ()  # the model's fixed input encoding (models.levels)

    @classmethod
    def for_model(
        cls,
        in_channels: int,
        length: int,
        kernel_size: int,
        slots: int,
        levels: tuple[float, ...] = (),
    ):
        block = next_power_of_two(length + kernel_size // 2)
        return cls(in_channels + len(levels), length, block, slots, tuple(levels))

    @property
    def window_channels(self) -> int:
        """Channels of a window as the client holds it (before the level encoding)."""
        return self.channels - len(self.levels)

    @property
    def window_slots(self) -> int:
        """Slots one window occupies in the input (a power of two)."""
        return next_power_of_two(self.channels * self.block)

    def max_batch(self, widest_slots: int) -> int:
        """Most windows per ciphertext when the widest intermediate vector needs
        `widest_slots` slots per window."""
        return max(1, self.slots // max(widest_slots, self.window_slots))

    def batch_for(self, n_windows: int, widest_slots: int) -> int:
        """The batch size (a power of two) that holds `n_windows` windows."""
        batch = next_power_of_two(n_windows)
        limit = self.max_batch(widest_slots)
        if batch > limit:
            raise PrivacyError(
                f"{n_windows} windows do not fit one ciphertext (at most {limit} for this "
                "model); encrypt them in chunks"
            )
        return batch

    def pack(self, windows: np.ndarray, batch: int) -> np.ndarray:
        """The slot vector (size window_slots · batch) of `windows` (n, window_channels,
        length), each window encoded with the model's levels first."""
        windows = encode_levels(self.check_windows(windows), self.levels)
        packed = np.zeros((self.window_slots, batch))
        for channel in range(self.channels):
            start = channel * self.block
            packed[start : start + self.length, : len(windows)] = windows[:, channel, :].T
        return packed.reshape(-1)

    def check_windows(self, windows: np.ndarray, allow_missing: bool = False) -> np.ndarray:
        """`windows` as a float array (n, channels, length), or a one-line error naming the
        expected shape (one window may be given as (channels, length) or (length,)).
        `allow_missing`: NaN marks a missing reading (the caller gives no decision there)."""
        array = np.asarray(windows, dtype=float)
        channels = self.window_channels
        if array.ndim == 1 and channels == 1:
            array = array[None, None, :]
        elif array.ndim == 2 and array.shape == (channels, self.length):
            array = array[None]
        if array.ndim != 3 or array.shape[1:] != (channels, self.length):
            raise PrivacyError(
                f"window has shape {np.shape(windows)}; this model reads {channels} "
                f"channel(s) × {self.length} readings (n, {channels}, {self.length})"
            )
        if len(array) == 0:
            raise PrivacyError("no windows to encrypt")
        if not (np.isfinite(array) | (allow_missing & np.isnan(array))).all():
            raise PrivacyError(
                "window holds missing (NaN) or infinite readings; the model reads complete "
                "windows only (as in training)"
            )
        return array

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> InputLayout:
        try:
            sizes = {key: int(data[key]) for key in ("channels", "length", "block", "slots")}
            levels = tuple(float(level) for level in data.get("levels", ()))
        except (KeyError, TypeError, ValueError) as error:
            raise PrivacyError(f"invalid input layout {data!r} ({error})") from None
        if not np.isfinite(levels).all() or len(levels) >= sizes["channels"]:
            raise PrivacyError(
                f"invalid input layout {data!r} (levels must be finite, fewer than channels)"
            )
        return cls(**sizes, levels=levels)
