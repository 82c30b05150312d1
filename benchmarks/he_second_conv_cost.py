"""What would a second convolution cost encrypted? (BENCHMARKS.md, "Deeper networks, a
quartic activation, risk-transformed inputs".)

    .venv/bin/python benchmarks/he_second_conv_cost.py [--channels 8] [--repeats 3]

TenSEAL's vector-matrix product (`CKKSVector.mm`) pays one rotation per non-zero
generalised diagonal of the matrix. The shipped layout puts each channel's readings in a
block of 32 slots, so the first convolution (kernel 5) has 5 diagonals. This script builds
the matrix a second convolution (C → C, kernel 5, the pooling before it folded in, outputs
kept in place) would have in that layout, counts its diagonals and times the product on the
N = 16384 chain a depth-5 network needs, two levels down (where it would run: after the
first convolution and its x²), beside the first convolution on the same chain. Random
weights: the cost depends on where the non-zeros are, not on their values.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import tenseal as ts

from tailorml.privacy.params import FIVE_LEVELS

KERNEL, LENGTH, BLOCK = 5, 24, 32


def second_conv_matrix(channels: int, pool: int, rng: np.random.Generator) -> np.ndarray:
    """Slots (channel-major blocks) of the first convolution's x² → slots of the second
    convolution's outputs; pooled time u of channel o sits at slot o·BLOCK + u·pool."""
    pad, pooled = KERNEL // 2, LENGTH // pool
    weights = rng.normal(size=(channels, channels, KERNEL))
    size = channels * BLOCK
    matrix = np.zeros((size, size))
    for out in range(channels):
        for u in range(pooled):
            for source in range(channels):
                for tap in range(KERNEL):
                    reading = u + tap - pad
                    if 0 <= reading < pooled:
                        for offset in range(pool):
                            row = source * BLOCK + reading * pool + offset
                            matrix[row, out * BLOCK + u * pool] += weights[out, source, tap] / pool
    return matrix


def first_conv_matrix(channels: int) -> np.ndarray:
    pad = KERNEL // 2
    matrix = np.zeros((BLOCK, channels * BLOCK))
    for out in range(channels):
        for t in range(LENGTH):
            for tap in range(KERNEL):
                if 0 <= t + tap - pad < LENGTH:
                    matrix[t + tap - pad, out * BLOCK + t] = 1.0
    return matrix


def diagonals(matrix: np.ndarray) -> int:
    """Non-zero generalised diagonals: distinct (column − row) mod rows."""
    rows, columns = np.nonzero(matrix)
    return len(set(((columns - rows) % len(matrix)).tolist()))


def median_ms(
    vector: ts.CKKSVector, matrix: np.ndarray, repeats: int
) -> tuple[float, ts.CKKSVector]:
    plain = ts.plain_tensor(matrix)
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = vector.mm(plain)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times)), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    parameters = FIVE_LEVELS
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        parameters.poly_modulus_degree,
        coeff_mod_bit_sizes=list(parameters.coeff_mod_bit_sizes),
    )
    context.global_scale = 2**parameters.scale_bits
    context.generate_galois_keys()
    context.generate_relin_keys()
    rng = np.random.default_rng(0)
    print(f"load average {os.getloadavg()[0]:.1f}; {parameters.describe()}")
    first = first_conv_matrix(args.channels)
    fresh = ts.ckks_vector(context, rng.normal(size=BLOCK).tolist())
    ms, _ = median_ms(fresh, first, args.repeats)
    print(f"first convolution (top level): {diagonals(first)} diagonals, {ms:.0f} ms")
    x = rng.normal(size=args.channels * BLOCK)
    two_down = ts.ckks_vector(context, x.tolist()) * 1.0  # one level (a scalar product)
    two_down.square_()  # and a second, as after the first convolution and its x²
    for pool in (2, 1):
        matrix = second_conv_matrix(args.channels, pool, rng)
        ms, result = median_ms(two_down, matrix, args.repeats)
        error = np.abs(np.asarray(result.decrypt()) - (x * x) @ matrix).max()
        print(
            f"second convolution {args.channels} → {args.channels}, pooling {pool} before it: "
            f"{diagonals(matrix)} diagonals, {ms:.0f} ms (max error {error:.1e})"
        )


if __name__ == "__main__":
    main()
