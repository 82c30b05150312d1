"""Chunks on worker threads: results in order, the caller's grad mode, threads restored."""

from __future__ import annotations

import torch

from tailorml.robust.parallel import in_chunks


def test_in_chunks_keeps_order_grad_mode_and_restores_the_thread_count():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []

        def work(item: int) -> int:
            seen.append((torch.is_grad_enabled(), torch.get_num_threads()))
            return item * item

        with torch.no_grad():
            assert in_chunks(work, range(7)) == [i * i for i in range(7)]
        assert all(mode == (False, 1) for mode in seen)  # no autograd, one-thread kernels
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
