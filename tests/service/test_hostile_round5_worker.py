"""`tailorml worker` stopped by SIGTERM or Ctrl-C while a job runs: the job goes back to
the queue at once (no lease left to expire) and the command exits with 143 or 130, as a
shell reports a command those signals ended: it exited 0, which a supervisor reads as a
clean finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tailorml.registry.people import PeopleStore

FAKE_WORKER = """
import sys, time
from pathlib import Path
open(Path(sys.argv[1]).parent / "started", "w").close()
time.sleep(120)
"""

WORKER = '''
"""`tailorml worker` as the shell runs it, its job process a fake one that sleeps."""
import sys
from tailorml.service import jobs
jobs.WORKER_MODULE = "fake_worker"
from tailorml.cli import main
sys.argv = ["tailorml", "worker", *sys.argv[1:]]
main()
'''


def stop_running_worker(tmp_path: Path, made, job: int, sent: int) -> tuple[int, str, str]:
    """Start `tailorml worker`, wait until its job process runs `job`, send `sent`."""
    paths = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(paths)}
    command = [sys.executable, str(tmp_path / "worker.py"), "--data", str(made.data)]
    started = made.data.parent / "started"
    process = subprocess.Popen(
        [*command, "--key-file", str(made.key_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists():  # its job process runs
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert PeopleStore(made.data).job(job).status == "running"
        process.send_signal(sent)
        out, err = process.communicate(timeout=30)
    finally:
        started.unlink(missing_ok=True)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, out, err


def test_a_stopped_worker_hands_its_job_back_and_exits_with_the_signals_code(tmp_path, made):
    (tmp_path / "fake_worker.py").write_text(FAKE_WORKER)
    (tmp_path / "worker.py").write_text(WORKER)
    store = PeopleStore(made.data)
    job = store.add_job(made.people["alice"].id, "test").id
    for sent, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        returncode, out, err = stop_running_worker(tmp_path, made, job, sent)
        assert returncode == code, err
        back = store.job(job)
        assert (back.status, back.lease_owner, back.expired_leases) == ("queued", None, 0)
        assert f"job {job} handed back to the queue" in out and "Traceback" not in err
