"""Where the work of an experiment runs: local processes (default) or a Ray cluster.

A backend maps a task function over argument tuples and calls `on_done(result)` as each
finishes, in completion order. Tasks write their own results, so a backend needs no
shared state, and Ray (`pip install tailorml[ray]`) can spread them over many machines.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from typing import Any, Protocol

from tailorml.errors import ConfigError
from tailorml.workers import process_pool


class Backend(Protocol):
    def map(
        self, function: Callable[..., Any], tasks: Sequence[tuple], on_done: Callable[[Any], None]
    ) -> None: ...


class LocalBackend:
    """`workers` processes on this machine (spawned: no state leaks between tasks' parents;
    they die with this process, see tailorml.workers); with one worker the tasks run in this
    process, which is easiest to debug."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def map(self, function, tasks, on_done) -> None:
        if not tasks:
            return
        if self.workers <= 1:
            for arguments in tasks:
                on_done(function(*arguments))
            return
        with process_pool(self.workers) as pool:
            futures = [pool.submit(function, *arguments) for arguments in tasks]
            try:
                for future in as_completed(futures):
                    on_done(future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


class RayBackend:
    """Tasks as Ray remote functions: a local Ray instance with `workers` CPUs, or the
    cluster at `address`.

    Dying with the parent needs nothing from tailorml: Ray ties a local instance to the
    process that started it (PR_SET_PDEATHSIG on Linux, a job object on Windows, a reaper
    process elsewhere). Checked on Linux with SIGKILL of `tailorml experiment`: gcs_server,
    raylet and the task workers went at once; the dashboard and runtime-env agents noticed
    their raylet was gone and exited within a minute. On a cluster, the driver's death
    ends its job and Ray stops the job's tasks (not checked here: no cluster). SIGTERM and
    Ctrl-C stop the run through the CLI's handlers, then Ray shuts down at exit."""

    def __init__(self, workers: int, address: str = "") -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "experiment.backend = 'ray' needs Ray: pip install 'tailorml[ray]'"
            ) from None
        self.ray = ray
        if not ray.is_initialized():
            options = {"address": address} if address else {"num_cpus": workers}
            handler = signal.getsignal(signal.SIGTERM)
            ray.init(include_dashboard=False, log_to_driver=False, **options)
            # ray.init replaces the SIGTERM handler (with its crash reporter, which aborts
            # with a stack dump): give it back, so SIGTERM stops the run like Ctrl-C
            if threading.current_thread() is threading.main_thread() and handler is not None:
                signal.signal(signal.SIGTERM, handler)

    def map(self, function, tasks, on_done) -> None:
        if not tasks:
            return
        remote = self.ray.remote(num_cpus=1)(function)
        pending = [remote.remote(*arguments) for arguments in tasks]
        while pending:
            finished, pending = self.ray.wait(pending, num_returns=1)
            on_done(self.ray.get(finished[0]))


def make_backend(name: str, workers: int, address: str = "") -> Backend:
    if name == "ray":
        return RayBackend(workers, address)
    return LocalBackend(workers)
