"""Personalization jobs under leases: any number of runners on one data directory, or on one
PostgreSQL database, run each job once; a killed runner's job is taken up again exactly once,
after its lease expires; a worker that lost its lease records nothing (registry.job_queue,
service.jobs)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tailorml.registry import job_queue
from tailorml.registry.database import DATABASE_ENV
from tailorml.registry.job_queue import MAX_EXPIRED, LeaseLost
from tailorml.registry.models import Registry
from tailorml.registry.people import PeopleStore
from tailorml.service.auth import add_person
from tailorml.service.crypto import write_key_file


def store_with_jobs(root: Path | str, n: int) -> tuple[PeopleStore, list[int]]:
    """A store with `n` patients' queued jobs: in `root`'s data directory, or in the
    PostgreSQL database `root` names (`store_location`)."""
    store = PeopleStore(root if isinstance(root, str) else root / "data")
    ids = []
    for k in range(n):
        person, _ = add_person(store, f"patient{k}", "patient", "test")
        ids.append(store.add_job(person.id, "test").id)
    return store, ids


def actions(store: PeopleStore) -> list[str]:
    rows = store.database.query("SELECT action FROM audit_log ORDER BY id")
    return [row["action"] for row in rows if row["action"].startswith("personalization")]


# -- the queue itself ----------------------------------------------------------------------


def test_a_claimed_job_is_nobody_elses_until_its_lease_expires(store_location):
    store, (job,) = store_with_jobs(str(store_location), 1)
    first = store.claim_job("a", lease_seconds=0.3)
    assert (first.id, first.status, first.lease_owner) == (job, "running", "a")
    assert store.claim_job("b", lease_seconds=0.3) is None  # a second runner: nothing to take
    store.renew_lease(job, "a", 0.3)
    with pytest.raises(LeaseLost):
        store.renew_lease(job, "b", 0.3)  # not b's
    time.sleep(0.4)  # a froze (or died) past its lease
    second = store.claim_job("b", lease_seconds=30)
    assert (second.id, second.lease_owner, second.expired_leases) == (job, "b", 1)
    with pytest.raises(LeaseLost):
        store.renew_lease(job, "a", 0.3)
    with pytest.raises(LeaseLost):
        store.finish_job(job, "done", "a", session_id=7)  # a's late result is refused ...
    assert store.job(job).session_id is None  # ... and writes nothing
    done = store.finish_job(job, "done", "b", session_id=8)
    assert (done.status, done.session_id, done.lease_owner) == ("done", 8, None)
    assert actions(store) == ["personalization_requeued", "personalization_done"]


def test_an_expired_lease_goes_back_to_the_queue_exactly_once_however_many_look(store_location):
    store, (job,) = store_with_jobs(str(store_location), 1)
    store.claim_job("dead", lease_seconds=0.1)
    time.sleep(0.2)
    claimed, start = [], threading.Barrier(8)

    def claimer(k: int) -> None:
        mine = PeopleStore(store_location)  # its own connection, as another process has
        start.wait()
        got = mine.claim_job(f"runner{k}", lease_seconds=30)
        if got is not None:
            claimed.append(got.lease_owner)

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == 1
    assert store.job(job).expired_leases == 1
    assert actions(store).count("personalization_requeued") == 1


def test_claimers_at_once_never_get_the_same_job(store_location):
    store, ids = store_with_jobs(str(store_location), 6)
    claimed, start = [], threading.Barrier(4)

    def claimer(k: int) -> None:
        mine = PeopleStore(store_location)  # its own connection, as another process has
        start.wait()
        while (got := mine.claim_job(f"runner{k}", lease_seconds=30)) is not None:
            claimed.append((got.id, got.lease_owner))

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(job for job, _ in claimed) == sorted(ids)  # each job once, none left
    assert {store.job(job).lease_owner for job, _ in claimed} == {o for _, o in claimed}


def test_on_postgresql_a_claim_skips_the_job_another_claim_holds(postgres_url):
    """SKIP LOCKED: while one claiming transaction holds the oldest job (not committed
    yet), a second claimer takes the next one at once instead of waiting or taking the
    same one; the first one's job is its own when it commits."""
    store, (first, second) = store_with_jobs(postgres_url, 2)
    other = PeopleStore(postgres_url)
    with store.database.transaction() as connection:
        held = job_queue.claim(connection, "a", 30)
        started = time.perf_counter()
        beside = other.claim_job("b", lease_seconds=30)
        waited = time.perf_counter() - started
    assert (held.id, beside.id) == (first, second)
    assert waited < 5  # not blocked behind the first claim
    assert (store.job(first).lease_owner, store.job(second).lease_owner) == ("a", "b")
    assert other.claim_job("c", lease_seconds=30) is None


def test_a_job_that_keeps_losing_its_worker_fails_instead_of_looping(store_location):
    store, (job,) = store_with_jobs(str(store_location), 1)
    for k in range(MAX_EXPIRED):
        assert store.claim_job(f"r{k}", lease_seconds=0.05).id == job
        time.sleep(0.1)
    assert store.claim_job("last", lease_seconds=30) is None  # the 3rd expiry fails it
    failed = store.job(job)
    assert failed.status == "failed" and failed.expired_leases == MAX_EXPIRED
    assert "stopped 3 times" in failed.error


def test_a_stopping_server_hands_its_job_back_without_counting_an_expiry(store_location):
    store, (job,) = store_with_jobs(str(store_location), 1)
    store.claim_job("a", lease_seconds=30)
    assert store.release_job(job, "b") is False  # not b's to hand back
    assert store.release_job(job, "a") is True
    again = store.claim_job("c", lease_seconds=30)
    assert (again.id, again.expired_leases) == (job, 0)


def test_a_data_directory_from_before_leases_is_upgraded_and_its_running_job_requeued(tmp_path):
    data = tmp_path / "data"
    store, (job,) = store_with_jobs(tmp_path, 1)
    del store
    # yesterday's schema: a jobs table without the lease columns, a job left running
    with sqlite3.connect(data / "registry.sqlite") as connection:
        connection.execute("DROP INDEX IF EXISTS jobs_by_status")
        connection.execute(
            "CREATE TABLE old_jobs AS SELECT id, person_id, requested_by,"
            " status, session_id, error, created, started, finished FROM jobs"
        )
        connection.execute("DROP TABLE jobs")
        connection.execute("ALTER TABLE old_jobs RENAME TO jobs")
        connection.execute("UPDATE jobs SET status = 'running', started = 'yesterday'")
    store = PeopleStore(data)  # opening migrates
    columns = {row[1] for row in store.database.query("PRAGMA table_info(jobs)")}
    assert set(job_queue.JOB_COLUMNS) <= columns
    left = store.job(job)
    assert (left.status, left.lease_owner, left.expired_leases) == ("running", None, 0)
    taken = store.claim_job("new", lease_seconds=30)  # no lease: taken up at once, once
    assert (taken.id, taken.lease_owner, taken.expired_leases) == (job, "new", 1)


# -- runners in their own processes --------------------------------------------------------
# Each of these runs on both backends (`store_location`): runner processes over one data
# directory's SQLite file, or over one PostgreSQL database (its URL in their environment,
# $TAILORML_DATABASE, as `tailorml worker --database` hands it to its job's process).

FAKE_WORKER = '''
"""A worker that takes FAKE_JOB_SECONDS, then records its result as the real one does."""
import json, os, sys, time
from pathlib import Path
from tailorml.registry.job_queue import LeaseLost
from tailorml.registry.people import PeopleStore
from tailorml.service.jobs import LEASE_LOST_EXIT, Lease

data, job = Path(sys.argv[1]), int(sys.argv[2])
owner = sys.argv[sys.argv.index("--lease-owner") + 1]
seconds = float(sys.argv[sys.argv.index("--lease-seconds") + 1])
store = PeopleStore(os.environ.get("TAILORML_DATABASE") or data)
lease = Lease(store, job, owner, seconds).start()

def note(event):
    line = {"job": job, "pid": os.getpid(), "group": os.getpgrp(), "event": event,
            "t": time.time(), "argv": sys.argv}
    with open(data.parent / "runs.jsonl", "a") as handle:
        handle.write(json.dumps(line) + "\\n")

note("start")
time.sleep(float(os.environ["FAKE_JOB_SECONDS"]))
try:
    lease.hold()
except LeaseLost:
    note("lost")
    sys.exit(LEASE_LOST_EXIT)
store.finish_job(job, "done", owner, session_id=job)
note("done")
'''

RUNNER = '''
"""A server's job runner on its own, with the fake worker."""
import os, signal, sys
from pathlib import Path
from tailorml.service.crypto import ServerKey
from tailorml.service.jobs import JobRunner

data = Path(sys.argv[1])
key = ServerKey.load(sys.argv[2], data)
database = os.environ.get("TAILORML_DATABASE") or None
runner = JobRunner(
    data, key, None, float(sys.argv[3]), poll_seconds=0.1, start_seconds=3.0, database=database
)
runner.worker_module = "fake_worker"
signal.signal(signal.SIGTERM, lambda *_: runner.stop())
runner.start()
runner.wait()
'''

WORKER_COMMAND = '''
"""`tailorml worker ARGS` as its console script runs it (`tailorml.cli.main`), with the fake
worker and short leases: the command has no option for them (a real job trains for minutes,
under a 60 s lease that its runner polls for every 5 s)."""
import sys
from tailorml.service import jobs

short = {"lease_seconds": float(sys.argv.pop(1)), "poll_seconds": 0.1, "start_seconds": 3.0}
made = jobs.JobRunner.__init__
jobs.JobRunner.__init__ = lambda self, *args, **kwargs: made(self, *args, **(kwargs | short))
jobs.WORKER_MODULE = "fake_worker"
from tailorml.cli import main
main()
'''


class Runners:
    """Runner processes over one store (a data directory, or a PostgreSQL database beside
    the data directory's files), each in its own process group (so that killing one kills
    its worker with it, as a host going down would)."""

    def __init__(
        self, root: Path, lease_seconds: float, job_seconds: float, location: Path | str
    ) -> None:
        (root / "fake_worker.py").write_text(FAKE_WORKER)
        (root / "runner.py").write_text(RUNNER)
        (root / "worker_command.py").write_text(WORKER_COMMAND)
        # the runners' working directory holds a module named like one of the standard
        # library's: a worker must never import it (it used to: cwd was on its path)
        (root / "cwd").mkdir()
        (root / "cwd" / "queue.py").write_text(f"open({str(root / 'shadowed')!r}, 'w')\n")
        self.root, self.lease = root, lease_seconds
        self.database = location if isinstance(location, str) else None  # a PostgreSQL URL
        self.data, self.key = root / "data", write_key_file(root / "server.key")
        paths = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
        self.env = os.environ | {
            "PYTHONPATH": os.pathsep.join(paths),
            "FAKE_JOB_SECONDS": str(job_seconds),
        }
        self.env.pop(DATABASE_ENV, None)
        if self.database is not None:  # never on a command line: it may hold a password
            self.env[DATABASE_ENV] = self.database
        self.processes: list[subprocess.Popen] = []

    def store_with_jobs(self, n: int) -> tuple[PeopleStore, list[int]]:
        return store_with_jobs(self.database or self.root, n)

    def start(self, command: bool = False) -> subprocess.Popen:
        """A runner of its own (`RUNNER`), or with `command` a `tailorml worker`."""
        if command:
            script = [str(self.root / "worker_command.py"), str(self.lease), "worker"]
            script += ["--data", str(self.data), "--key-file", str(self.key)]
        else:
            script = [str(self.root / "runner.py"), str(self.data), str(self.key)]
            script += [str(self.lease)]
        process = subprocess.Popen(
            [sys.executable, *script], env=self.env, cwd=self.root / "cwd", start_new_session=True
        )
        self.processes.append(process)
        return process

    def runs(self) -> list[dict]:
        path = self.data.parent / "runs.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def wait_for(self, condition, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; runs so far: {self.runs()}")
            time.sleep(0.05)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def runners(tmp_path, store_location):
    """Makes a `Runners` over `store_location`; its processes are killed before the
    PostgreSQL database is dropped (this fixture is set up after `store_location`)."""
    made: list[Runners] = []

    def make(lease_seconds: float, job_seconds: float) -> Runners:
        made.append(Runners(tmp_path, lease_seconds, job_seconds, store_location))
        return made[-1]

    yield make
    for group in made:
        group.stop_all()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def starts_and_dones(runs: list[dict]) -> tuple[dict[int, int], dict[int, int]]:
    starts: dict[int, int] = {}
    dones: dict[int, int] = {}
    for run in runs:
        table = starts if run["event"] == "start" else dones if run["event"] == "done" else None
        if table is not None:
            table[run["job"]] = table.get(run["job"], 0) + 1
    return starts, dones


# the runner tests on PostgreSQL run with `make test-postgres` (about 21 s of processes and
# leases that repeat the SQLite ones; the real `tailorml worker` test below stays in
# `make test`, so each `make test` still kills a worker on PostgreSQL)
BOTH_BACKENDS = pytest.mark.parametrize(
    "store_location",
    ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres_suites)],
    indirect=True,
)


@BOTH_BACKENDS
def test_three_runners_run_each_of_four_jobs_once(tmp_path, runners):
    group = runners(lease_seconds=5.0, job_seconds=0.5)
    store, ids = group.store_with_jobs(4)
    for _ in range(3):
        group.start()
    group.wait_for(lambda: all(store.job(job).status == "done" for job in ids))
    starts, dones = starts_and_dones(group.runs())
    assert starts == dones == dict.fromkeys(ids, 1)
    assert len({run["pid"] for run in group.runs()}) == 4  # each job in its own worker
    assert not (tmp_path / "shadowed").exists()  # no worker imported the cwd's queue.py
    if group.database is not None:  # it reached the workers in their environment, not argv
        assert not any(group.database in " ".join(run["argv"]) for run in group.runs())


@BOTH_BACKENDS
def test_a_killed_runner_and_worker_job_is_run_again_once_after_its_lease(runners):
    group = runners(lease_seconds=1.0, job_seconds=1.5)
    store, (job,) = group.store_with_jobs(1)
    first = group.start()
    group.wait_for(lambda: starts_and_dones(group.runs())[0].get(job) == 1)
    os.killpg(first.pid, signal.SIGKILL)  # the host goes down mid-job: runner and worker
    killed_at = time.time()
    group.start()
    group.start()  # two survivors: one of them takes it up
    group.wait_for(lambda: store.job(job).status == "done")
    starts, dones = starts_and_dones(group.runs())
    assert (starts[job], dones[job]) == (2, 1)
    second_start = [run["t"] for run in group.runs() if run["event"] == "start"][1]
    assert second_start >= killed_at + 0.5  # not before the dead lease could have expired
    assert store.job(job).expired_leases == 1


@BOTH_BACKENDS
def test_a_worker_that_froze_past_its_lease_records_nothing(runners):
    group = runners(lease_seconds=1.0, job_seconds=2.0)
    store, (job,) = group.store_with_jobs(1)
    group.start()
    group.wait_for(lambda: starts_and_dones(group.runs())[0].get(job) == 1)
    frozen = group.runs()[0]["pid"]
    os.kill(frozen, signal.SIGSTOP)  # a long pause (swap, a VM migrated, a debugger)
    group.start()  # takes the job once the frozen worker's lease expires
    group.wait_for(lambda: starts_and_dones(group.runs())[0].get(job) == 2)
    os.kill(frozen, signal.SIGCONT)
    group.wait_for(lambda: store.job(job).status == "done")
    group.wait_for(lambda: not alive(frozen))  # it woke up and ended (its runner reaped it)
    done_by = [run["pid"] for run in group.runs() if run["event"] == "done"]
    assert frozen not in done_by and len(done_by) == 1
    assert store.job(job).session_id == job
    assert store.job(job).expired_leases == 1


@pytest.mark.parametrize("store_location", ["postgresql"], indirect=True)
def test_worker_commands_on_one_postgresql_database_run_each_job_once_through_a_kill(runners):
    """`tailorml worker --data DIR` processes (the URL in $TAILORML_DATABASE), one killed
    mid-job with its worker and another started: each job is done once, the killed one's
    after its lease, and the survivors still stop cleanly on SIGTERM."""
    group = runners(lease_seconds=1.0, job_seconds=1.5)
    # the command starts only on a registry with a predefined model; no job here trains,
    # so its bytes need not be a model's (the registry keeps them, exports none)
    model = group.root / "model.pt"
    model.write_bytes(b"the predefined model")
    Registry(group.data, group.database).register_predefined(model, "0" * 64, {}, None, "t")
    store, ids = group.store_with_jobs(3)
    first, second = group.start(command=True), group.start(command=True)
    group.wait_for(lambda: len(starts_and_dones(group.runs())[0]) == 2)
    (killed_job,) = [run["job"] for run in group.runs() if run["group"] == first.pid]
    os.killpg(first.pid, signal.SIGKILL)  # its host goes down mid-job: runner and worker
    killed_at = time.time()
    third = group.start(command=True)  # restarted
    group.wait_for(lambda: all(store.job(job).status == "done" for job in ids))
    starts, dones = starts_and_dones(group.runs())
    assert dones == dict.fromkeys(ids, 1)
    assert starts == {job: 2 if job == killed_job else 1 for job in ids}
    again = [r["t"] for r in group.runs() if r["job"] == killed_job and r["event"] == "start"]
    assert again[1] >= killed_at + 0.5  # not before the dead lease could have expired
    assert [store.job(job).expired_leases for job in ids] == [int(j == killed_job) for j in ids]
    assert not any(group.database in " ".join(run["argv"]) for run in group.runs())
    for process in (second, third):
        assert process.poll() is None  # still running: none died of an error
        process.send_signal(signal.SIGTERM)
    assert [second.wait(timeout=20), third.wait(timeout=20)] == [143, 143]


def test_the_worker_command_refuses_a_folder_without_service_data(tmp_path, tailorml_in_process):
    result = tailorml_in_process("worker", "--data", str(tmp_path / "nothing"))
    assert result.returncode != 0
    assert "holds no service data; check --data" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_api_shows_a_job_as_its_contract_says_and_never_its_lease(store_location):
    from tailorml.service.openapi import SCHEMAS

    store, (job,) = store_with_jobs(str(store_location), 1)
    store.claim_job("host:123:abcd", lease_seconds=30)
    shown = store.job(job).public()
    assert set(shown) == set(SCHEMAS["Job"]["properties"])  # the documented fields only
    assert "host:123:abcd" not in json.dumps(shown)
