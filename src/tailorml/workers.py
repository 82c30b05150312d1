"""Worker processes that die with their parent.

A killed parent (SIGKILL, SIGTERM, a crash) must not leave its workers running: every pool
of tailorml is made by `process_pool`, whose workers call `die_with_parent` first. On Linux
the kernel kills the worker when the parent dies (prctl PR_SET_PDEATHSIG); elsewhere a
daemon thread checks once a second whether the parent is gone and exits the worker.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Make this (worker) process end when the process `parent_pid` ends."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent_pid:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch, args=(parent_pid,), daemon=True).start()


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def process_pool(workers: int) -> ProcessPoolExecutor:
    """`workers` spawned processes (no state inherited by fork) that die with this one."""
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
