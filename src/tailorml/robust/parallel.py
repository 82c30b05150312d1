"""Chunks of independent work on worker threads, with one-thread torch kernels.

Why: bound propagation runs many small tensor ops. With torch's intra-op threads every op
is split across cores and joined again; when another process holds one of the cores, each
join waits for a descheduled thread and CROWN ran ~10x slower on 2 threads than on one
(measured: BENCHMARKS.md). Whole chunks per thread keep both cores busy without joins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def single_threaded_kernels():
    """torch kernels on the calling thread only, restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def in_chunks(work: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`work` on every item, in order, on as many threads as torch was told to use."""
    items = list(items)
    grad = torch.is_grad_enabled()  # thread-local: the workers take the caller's mode

    def run(item: T) -> R:
        with torch.set_grad_enabled(grad):
            return work(item)

    with single_threaded_kernels() as threads:
        if threads <= 1 or len(items) <= 1:
            return [work(item) for item in items]
        with ThreadPoolExecutor(min(threads, len(items))) as pool:
            return list(pool.map(run, items))
