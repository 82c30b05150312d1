"""Personalization requested over the API, run in a worker process, never in a request.

A request queues a job (one per person at a time). A thread of the server hands queued
jobs, one at a time, to a fresh `python -m tailorml.service.jobs` process: training and
gating candidates take minutes of CPU that must not slow the uploads, and a crash there
(or out-of-memory) must not take the service down. The worker opens the person's readings
with their data key, puts them on the model's grid like any Nightscout import
(`tailorml.data.importers`), adds the general cohort the predefined model was trained on
(D_G), and runs the same soft-personalization session as `tailorml personalize`
(`soft.session.personalize_individual` on the data set it holds), writing candidates, gates
and the model card into the registry. The person's readings in the clear exist only in the
worker's memory: no file is written between the upload store and the session.

Any number of these threads (one in each `tailorml serve`, unless `--no-jobs`, and one in
each `tailorml worker`) can share a data directory: a job runs under a lease
(`registry.job_queue`) that its worker process renews while it works. A worker whose lease
is gone (it froze longer than the lease, and another process has taken the job) exits at
once, unless it is recording its result, which it starts only while the lease is still its
own. A job whose process was killed goes back to the queue when its lease expires; a server
that stops hands its job back at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tailorml.errors import TailormlError
from tailorml.registry.consent import WITHDRAWN_JOB, NotConsented
from tailorml.registry.database import DATABASE_ENV
from tailorml.registry.job_queue import LEASE_SECONDS, LeaseLost, new_owner
from tailorml.registry.people import PeopleStore
from tailorml.service.crypto import KEY_ENV, ServerKey
from tailorml.service.housekeeping import Housekeeper
from tailorml.service.keyring import Keyring
from tailorml.service.paths import without_paths

if TYPE_CHECKING:
    from tailorml.config import Config
    from tailorml.data.cohort import Cohort

ENTRY, TREATMENT = "entry", "treatment"
START_SECONDS = 60.0  # a worker process starts (imports) within this, even on a busy host
LEASE_LOST_EXIT = 75  # a worker that lost its lease exits with this (EX_TEMPFAIL)
WORKER_MODULE = "tailorml.service.jobs"
log = logging.getLogger(__name__)
COHORT_COLUMNS = ("patient_id", "group", "time", "cgm", "cho", "insulin")


class JobRunner:
    """A thread that claims queued jobs and runs each in a worker process, one at a time."""

    def __init__(
        self,
        data_dir: Path,
        server_key: ServerKey,
        config_path: Path | None,
        lease_seconds: float = LEASE_SECONDS,
        poll_seconds: float = 5.0,
        start_seconds: float = START_SECONDS,
        database: str | None = None,
        retention_days: int | None = None,
    ) -> None:
        """`retention_days`: the housekeeping that runs beside the jobs removes readings and
        decisions older than that (`service.housekeeping`); None keeps everything."""
        self.data_dir = data_dir
        self.database = database  # a PostgreSQL URL, handed to the job's process
        self.server_key = server_key
        self.config_path = config_path
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.start_seconds = start_seconds  # the first lease also covers the worker's start
        self.worker_module = WORKER_MODULE
        self.store = PeopleStore(database or data_dir)
        self.housekeeper = Housekeeper(self.store, retention_days)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="personalization", daemon=True)
        self._process: subprocess.Popen | None = None
        self.handed_back: int | None = None  # the job a stop handed back to the queue

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
        self._thread.join(timeout=10)

    def wait(self) -> None:
        """Run until `stop` (from another thread or a signal handler)."""
        while self._thread.is_alive():
            self._thread.join(timeout=1.0)

    @property
    def stopped(self) -> bool:
        """Whether `stop` ended the runner (else its thread died of an error)."""
        return self._stop.is_set()

    def notify(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.housekeeper.run_if_due()  # between jobs: no thread or connection of its own
            owner = new_owner()
            job = self.store.claim_job(owner, self.start_seconds + self.lease_seconds)
            if job is None:
                self._wake.wait(timeout=self.poll_seconds)
                self._wake.clear()
                continue
            self._run(job.id, owner)

    def _run(self, job_id: int, owner: str) -> None:
        # -P: the server's working directory is not on the worker's import path (a queue.py
        # or json.py there was imported by the worker in place of the standard library's)
        command = [sys.executable, "-P", "-m", self.worker_module, str(self.data_dir), str(job_id)]
        command += ["--lease-owner", owner, "--lease-seconds", repr(self.lease_seconds)]
        if self.config_path is not None:
            command += ["--config", str(self.config_path)]
        environment = os.environ | {KEY_ENV: _key_text(self.server_key)}
        if self.database is not None:  # in its environment: a command line is public
            environment[DATABASE_ENV] = self.database
        log_file = self.data_dir / "jobs" / f"{job_id}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a") as handle:
            self._process = subprocess.Popen(
                command, env=environment, stdout=handle, stderr=subprocess.STDOUT
            )
            code = self._process.wait()
        self._process = None
        if self._stop.is_set():  # stopped with the server: back to the queue now
            if self.store.release_job(job_id, owner):
                self.handed_back = job_id
                log.info("personalization job %d handed back to the queue", job_id)
            return
        if code == LEASE_LOST_EXIT:
            return  # another process holds the job now
        job = self.store.job(job_id)
        if job.status == "running" and job.lease_owner == owner:  # died before finishing it
            with contextlib.suppress(LeaseLost):  # expired meanwhile: another process has it
                self.store.finish_job(
                    job_id, "failed", owner, error=f"the worker process exited ({code})"
                )


class Lease:
    """The worker's side of its job's lease: a thread renews it every quarter of its length;
    when it is lost the process exits at once (`LEASE_LOST_EXIT`), unless it is recording
    the job's result (`hold`), which it only begins while the lease is its own."""

    def __init__(self, store: PeopleStore, job_id: int, owner: str, seconds: float) -> None:
        self.store, self.job_id, self.owner, self.seconds = store, job_id, owner, seconds
        self._recording = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)

    def start(self) -> Lease:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()

    def hold(self) -> None:
        """From now on the result is being recorded: no exit on a lost lease. Refused
        (`LeaseLost`, nothing recorded) if the lease is no longer this process's."""
        self._recording.acquire()
        self.store.renew_lease(self.job_id, self.owner, self.seconds)

    def _renew(self) -> None:
        while not self._done.wait(self.seconds / 4):
            try:
                self.store.renew_lease(self.job_id, self.owner, self.seconds)
            except LeaseLost as error:
                if self._recording.acquire(blocking=False):  # not recording: stop now
                    print(f"{error}; stopping", file=sys.stderr, flush=True)
                    os._exit(LEASE_LOST_EXIT)
                return
            except Exception as error:  # a busy or unreachable database: try again
                print(f"lease renewal failed ({error}); retrying", file=sys.stderr, flush=True)


def _key_text(key: ServerKey) -> str:
    import base64

    return base64.b64encode(key.key).decode()


def person_frame(store: PeopleStore, keyring: Keyring, person_id: str, grid_minutes: int):
    """The person's readings and treatments as a cohort frame on the grid (importers' rules)."""
    from tailorml.data.importers import nightscout
    from tailorml.data.importers.common import build_cohort

    cipher = keyring.cipher(person_id)
    entries = [
        json.loads(cipher.open(row.sealed, ENTRY)) for row in store.entries(person_id, limit=10**9)
    ]
    treatments = [
        json.loads(cipher.open(row.sealed, TREATMENT))
        for row in store.treatments(person_id, limit=10**9)
    ]
    if not any(entry.get("type") == "sgv" for entry in entries):
        raise TailormlError("no CGM readings uploaded yet; personalization needs some")
    # parsed as text in memory (the line break makes it text, never a file name)
    uploads = json.dumps({"entries": entries, "treatments": treatments}) + "\n"
    parsed = nightscout.parse(uploads, timezone="UTC")
    result = build_cohort([parsed], grid_minutes, person_id=person_id, keep_ids=True)
    frame = result.frame.assign(group="unknown")
    for column in ("cho", "insulin"):
        if column not in frame.columns:
            frame[column] = 0.0
    return frame[list(COHORT_COLUMNS)]


def with_person(config: Config, general: Cohort, mine: pd.DataFrame, person_id: str) -> Cohort:
    """The general cohort (D_G) and one person's frame as one cohort, in memory, with the
    configured individuals (and the person) and `max_days`."""
    from tailorml.data.cohort import cohort_from_frame

    base = general.readings.assign(
        **{c: 0.0 for c in ("cho", "insulin") if c not in general.readings}
    )
    merged = pd.concat([base[list(COHORT_COLUMNS)], mine], ignore_index=True)
    chosen = list(config.cohort.individuals)
    name = Path(general.source).name
    metadata = {
        "synthetic": bool(general.synthetic),
        "real_individuals": [person_id],
        "description": f"general data of {name} and one person's readings uploaded to the "
        "tailorml service",
        "sample_minutes": general.sample_minutes,
    }
    return cohort_from_frame(
        merged,
        f"{name} + the uploads of {person_id}",
        metadata,
        individuals=[*chosen, person_id] if chosen else None,
        max_days=config.cohort.max_days,
    )


def run_job(
    data_dir: Path,
    job_id: int,
    config_path: Path | None,
    lease: Lease,
    database: str | None = None,
) -> None:
    """The worker: one job from queued data to a registered session (or a recorded failure),
    under `lease`: its result is recorded only while the lease is this process's. `database`:
    the service's PostgreSQL URL (its tables), `data_dir` its files."""
    from tailorml.config import load_config
    from tailorml.data.cohort import load_cohort
    from tailorml.data.prepared import prepare_split
    from tailorml.personalize.dataset import from_prepared
    from tailorml.registry.models import Registry
    from tailorml.service.artifacts import seal_session
    from tailorml.soft.card import card_path
    from tailorml.soft.session import personalize_individual

    store = PeopleStore(database or data_dir)
    job = store.job(job_id)
    try:
        registry = Registry(data_dir, database)
        keyring = Keyring(store, ServerKey.load(None, data_dir))
        config = load_config(config_path)
        general = load_cohort(config.cohort.path or None)
        mine = person_frame(store, keyring, job.person_id, general.sample_minutes)
        cohort = with_person(config, general, mine, job.person_id)
        prepared = prepare_split(cohort, config.task, config.split)
        outcome = personalize_individual(
            config,
            job.person_id,
            actor=f"service job {job_id} ({job.requested_by})",
            registry_dir=registry,
            data=from_prepared(prepared, config, config.experiment.general_stride),
            before_record=lease.hold,
        )
        # the session's tables and card show this person's readings: sealed / deleted before
        # the job counts as done (the review page draws the card from the sealed tables)
        seal_session(registry, outcome.session_id, keyring.cipher(job.person_id))
        card_path(registry, job.person_id).unlink(missing_ok=True)
        store.finish_job(job_id, "done", lease.owner, session_id=outcome.session_id)
    except LeaseLost:
        raise  # another process holds the job: nothing of this run is its result
    except NotConsented:
        # the patient withdrew consent while the session was being recorded: the registry
        # refused it and deleted its files, and the withdrawal failed the job and took its
        # lease; should the lease still be ours, the job fails with the withdrawal's reason
        with contextlib.suppress(LeaseLost):
            store.finish_job(job_id, "failed", lease.owner, error=WITHDRAWN_JOB)
        raise LeaseLost(f"personalization job {job_id}: {WITHDRAWN_JOB}") from None
    except Exception as error:  # recorded on the job: the API shows it to whoever asked
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        # the API shows it: no private folder of the worker or the server's data directory
        store.finish_job(job_id, "failed", lease.owner, error=without_paths(message)[:500])
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one queued personalization job.")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("job_id", type=int)
    parser.add_argument("--lease-owner", required=True)
    parser.add_argument("--lease-seconds", type=float, default=LEASE_SECONDS)
    parser.add_argument("--config", type=Path, default=None)
    arguments = parser.parse_args()
    database = os.environ.get(DATABASE_ENV) or None
    store = PeopleStore(database or arguments.data_dir)
    lease = Lease(store, arguments.job_id, arguments.lease_owner, arguments.lease_seconds)
    lease.start()
    try:
        run_job(arguments.data_dir, arguments.job_id, arguments.config, lease, database)
    except LeaseLost as error:
        print(f"{error}; its result is not recorded", file=sys.stderr)
        sys.exit(LEASE_LOST_EXIT)
    finally:
        lease.stop()


if __name__ == "__main__":
    main()
