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

A job left running by a stopped server is queued again at the next start.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tailorml.errors import TailormlError
from tailorml.registry.people import PeopleStore
from tailorml.service.crypto import KEY_ENV, ServerKey
from tailorml.service.keyring import Keyring
from tailorml.service.paths import without_paths

if TYPE_CHECKING:
    from tailorml.config import Config
    from tailorml.data.cohort import Cohort

ENTRY, TREATMENT = "entry", "treatment"
COHORT_COLUMNS = ("patient_id", "group", "time", "cgm", "cho", "insulin")


class JobRunner:
    """The server's thread that runs queued jobs in worker processes, one at a time."""

    def __init__(self, data_dir: Path, server_key: ServerKey, config_path: Path | None) -> None:
        self.data_dir = data_dir
        self.server_key = server_key
        self.config_path = config_path
        self.store = PeopleStore(data_dir)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="personalization", daemon=True)
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        self.store.requeue_interrupted()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
        self._thread.join(timeout=10)

    def notify(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.store.claim_job()
            if job is None:
                self._wake.wait(timeout=5.0)
                self._wake.clear()
                continue
            self._run(job.id)

    def _run(self, job_id: int) -> None:
        command = [sys.executable, "-m", "tailorml.service.jobs", str(self.data_dir), str(job_id)]
        if self.config_path is not None:
            command += ["--config", str(self.config_path)]
        environment = os.environ | {KEY_ENV: _key_text(self.server_key)}
        log = self.data_dir / "jobs" / f"{job_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as handle:
            self._process = subprocess.Popen(
                command, env=environment, stdout=handle, stderr=subprocess.STDOUT
            )
            code = self._process.wait()
        self._process = None
        if self._stop.is_set():
            return  # stopped with the server: requeued at the next start if unfinished
        if self.store.job(job_id).status == "running":  # the worker died before finishing it
            self.store.finish_job(job_id, "failed", error=f"the worker process exited ({code})")


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


def run_job(data_dir: Path, job_id: int, config_path: Path | None) -> None:
    """The worker: one job from queued data to a registered session (or a recorded failure)."""
    from tailorml.config import load_config
    from tailorml.data.cohort import load_cohort
    from tailorml.data.prepared import prepare_split
    from tailorml.personalize.dataset import from_prepared
    from tailorml.registry.models import Registry
    from tailorml.service.artifacts import seal_session
    from tailorml.soft.card import card_path
    from tailorml.soft.session import personalize_individual

    store = PeopleStore(data_dir)
    job = store.job(job_id)
    try:
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
            registry_dir=data_dir,
            data=from_prepared(prepared, config, config.experiment.general_stride),
        )
        # the session's tables and card show this person's readings: sealed / deleted before
        # the job counts as done (the review page draws the card from the sealed tables)
        registry = Registry(data_dir)
        seal_session(registry, outcome.session_id, keyring.cipher(job.person_id))
        card_path(registry, job.person_id).unlink(missing_ok=True)
        store.finish_job(job_id, "done", session_id=outcome.session_id)
    except Exception as error:  # recorded on the job: the API shows it to whoever asked
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        # the API shows it: no private folder of the worker or the server's data directory
        store.finish_job(job_id, "failed", error=without_paths(message)[:500])
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one queued personalization job.")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("job_id", type=int)
    parser.add_argument("--config", type=Path, default=None)
    arguments = parser.parse_args()
    run_job(arguments.data_dir, arguments.job_id, arguments.config)


if __name__ == "__main__":
    main()
