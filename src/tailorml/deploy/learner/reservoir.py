"""The device's bounded memory of labelled windows: a class-balanced reservoir and its PRNG.

Hypo windows are rare (a few per cent of a day), so a plain buffer of recent windows would
hold almost none of them and teach the head that lows do not happen. Each class (stratum)
gets its own reservoir of `capacity` slots filled by reservoir sampling: the first
`capacity` windows fill its slots in order; after that the window numbered n (0-based)
draws j = rand() mod min(n + 1, memory) and replaces slot j when j < capacity. With an
unbounded memory this is Vitter's algorithm R (every window seen so far kept with the same
probability); the device bounds it to `memory` = recency x capacity, so a new window always
gets in with probability >= 1 / recency and the buffer holds the person's *recent* windows
(old ones decay geometrically) instead of freezing after a few weeks. The random numbers
come from xorshift32 (Marsaglia 2003), whose three shifts the C reproduces exactly: the
device and this reference keep the same windows in the same slots.
"""

from __future__ import annotations

import numpy as np

UINT32 = 0xFFFFFFFF


class XorShift32:
    """Marsaglia's xorshift32 (13, 17, 5); the state must not be zero."""

    def __init__(self, seed: int) -> None:
        if not 0 < seed <= UINT32:
            raise ValueError(f"a xorshift32 seed must lie in [1, 2**32 - 1], got {seed}")
        self.state = seed

    def next(self) -> int:
        x = self.state
        x ^= (x << 13) & UINT32
        x ^= x >> 17
        x ^= (x << 5) & UINT32
        self.state = x
        return x

    def below(self, n: int) -> int:
        """A draw in [0, n): next() mod n (the device's modulo; its bias is < n / 2**32)."""
        return self.next() % n


class ClassReservoir:
    """`capacity` windows per class, each stored as the last layer's int8 input codes."""

    def __init__(
        self, n_classes: int, capacity: int, n_features: int, rng: XorShift32, recency: int = 0
    ) -> None:
        self.capacity = capacity
        self.memory = recency * capacity if recency else None  # None: algorithm R
        self.codes = np.zeros((n_classes, capacity, n_features), dtype=np.int8)
        self.seen = np.zeros(n_classes, dtype=np.int64)
        self.rng = rng

    def add(self, label: int, codes: np.ndarray) -> int:
        """Offer one window of class `label`; the slot it took, or -1 if not kept."""
        seen = int(self.seen[label])
        self.seen[label] = seen + 1
        if seen < self.capacity:
            slot = seen
        else:
            draws = seen + 1 if self.memory is None else min(seen + 1, self.memory)
            slot = self.rng.below(draws)
            if slot >= self.capacity:
                return -1
        self.codes[label, slot] = codes
        return slot

    def filled(self) -> np.ndarray:
        """Windows held per class."""
        return np.minimum(self.seen, self.capacity)

    def samples(self) -> tuple[np.ndarray, np.ndarray]:
        """Every held window, class by class then slot by slot: (codes (n, features), labels)."""
        filled = self.filled()
        codes = np.concatenate([self.codes[c, : filled[c]] for c in range(len(filled))])
        labels = np.repeat(np.arange(len(filled)), filled)
        return codes, labels
