"""Worker processes that die with their parent.

A killed parent (SIGKILL, SIGTERM, a crash) must not leave its workers running: every pool
of tailorml is made by `process_pool`, whose workers call `die_with_parent` first. On Linux
the kernel kills the worker when the parent dies (prctl PR_SET_PDEATHSIG); elsewhere a
daemon thread checks once a second whether the parent is gone and exits the worker.
A parent that stops by an exception (Ctrl-C, SIGTERM, a failed task) ends its workers
itself when it leaves the pool (`WorkerPool`).
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


class WorkerPool(ProcessPoolExecutor):
    """A process pool that, left by an exception (Ctrl-C, SIGTERM, a failed task), stops its
    workers at once instead of waiting for them: the plain pool's `__exit__` waits for every
    running task and, unless cancelled, every queued one, so a parent told to stop would
    keep simulating or training for minutes. Their finished work is already on disk (tasks
    write atomically); a killed task leaves at most a hidden temporary file."""

    def __exit__(self, kind, value, traceback) -> bool:
        if kind is not None:
            self.terminate()
        return super().__exit__(kind, value, traceback)

    def terminate(self, timeout: float = 10.0) -> None:
        """Cancel queued tasks and end the worker processes (SIGTERM, then SIGKILL)."""
        processes = list((self._processes or {}).values())  # no public handle on them
        self.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1.0)


def process_pool(workers: int) -> WorkerPool:
    """`workers` spawned processes (no state inherited by fork) that die with this one, and
    are stopped when the code using the pool is left by an exception."""
    return WorkerPool(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
