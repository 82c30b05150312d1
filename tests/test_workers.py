"""Workers of a killed parent do not outlive it."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARENT = """
import os, sys, time
from tailorml.workers import process_pool

def busy(folder):
    open(os.path.join(folder, str(os.getpid())), "w").close()
    time.sleep(120)

if __name__ == "__main__":
    pool = process_pool(2)
    futures = [pool.submit(busy, sys.argv[1]) for _ in range(2)]
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie is dead, only not yet reaped
        return handle.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGTERM])
def test_workers_die_with_their_parent(tmp_path, signal_number):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    folder = tmp_path / "pids"
    folder.mkdir()
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    parent = subprocess.Popen([sys.executable, str(script), str(folder)], env=env)
    try:
        deadline = time.monotonic() + 60
        while len(list(folder.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [int(path.name) for path in folder.iterdir()]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        parent.send_signal(signal_number)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids)
    finally:
        parent.kill()
        for path in folder.iterdir():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(path.name), signal.SIGKILL)


@pytest.mark.parametrize("platform", ["linux", "darwin"])  # prctl, or the watchdog thread
def test_a_worker_whose_parent_is_already_gone_exits(platform):
    code = (
        f"import sys, time; sys.platform = {platform!r}\n"
        "from tailorml.workers import die_with_parent\n"
        "die_with_parent(parent_pid=-1)  # os.getppid() is never -1\n"
        "time.sleep(10); print('survived')"
    )
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=30)
    assert (result.returncode, result.stdout) == (1, b"")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_leaving_a_pool_by_an_exception_stops_its_workers_at_once():
    """SIGTERM/Ctrl-C in the parent raise in the `with` block: the pool must not wait for
    two running and four queued 60-second tasks (4 minutes) before the parent can exit."""
    from concurrent.futures.process import BrokenProcessPool

    from tailorml.workers import process_pool

    start = time.monotonic()
    with pytest.raises(RuntimeError), process_pool(2) as pool:
        futures = [pool.submit(time.sleep, 60) for _ in range(6)]
        deadline = time.monotonic() + 60
        while not futures[1].running() and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = list(pool._processes)
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        raise RuntimeError("stop")
    assert time.monotonic() - start < 30
    assert not any(_alive(pid) for pid in pids)
    for future in futures:  # none ran to its end: cancelled, or stopped with its worker
        assert future.cancelled() or isinstance(future.exception(timeout=10), BrokenProcessPool)
