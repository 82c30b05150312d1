"""Personalization jobs as a queue with leases, so that any number of processes (API
servers, `tailorml worker`s, on one host or several over one database) run each job once.

A job is claimed with a **lease**: an owner (host, process and a random tag) and an expiry.
The process running it renews the lease while it works (`renew`); only the owner of a live
lease can finish the job (`finish`) or hand it back (`release`). A lease that expires (its
process was killed, its host lost power, it froze longer than the lease) is found by the
next claim, in the same write transaction that takes the next job, so it goes back to the
queue exactly once however many processes look; after `MAX_EXPIRED` expiries the job fails
rather than loop over a job that kills its worker. A server starting up no longer touches
jobs others are running: before leases, every start re-queued every running job, so a
second process ran the job the first was running.

On SQLite the transaction is `BEGIN IMMEDIATE` (one writer at a time). On PostgreSQL
claimers run side by side: each takes its rows with `SELECT ... FOR UPDATE SKIP LOCKED`,
so two claimers never get the same job (the second skips the row the first holds and
takes the next) and an expired lease is re-queued by the one claimer that locked it.
Times are the database
host's clock in seconds since the epoch (`time.time()` of whoever writes: the processes'
clocks must agree to within a small fraction of the lease, as NTP keeps them).
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import time
from dataclasses import dataclass

from tailorml.errors import NotFoundError, TailormlError
from tailorml.registry import consent
from tailorml.registry.database import add_columns, audit, for_update, now

LEASE_SECONDS = 60.0  # a worker renews every LEASE_SECONDS / 4
MAX_EXPIRED = 3  # a job whose lease expired this often fails instead of running again

JOB_COLUMNS = {  # added to a `jobs` table written before leases (`migrate`)
    "lease_owner": "TEXT",
    "lease_expires_s": "REAL",
    "expired_leases": "INTEGER NOT NULL DEFAULT 0",
}


class LeaseLost(TailormlError):
    """The job's lease is no longer this process's: another process may be running it."""


@dataclass(frozen=True)
class Job:
    id: int
    person_id: str
    requested_by: str
    status: str
    session_id: int | None
    error: str | None
    created: str
    started: str | None
    finished: str | None
    lease_owner: str | None = None
    lease_expires_s: float | None = None
    expired_leases: int = 0

    def public(self) -> dict:
        """What the API shows of a job: not its lease (which host and process run it)."""
        return {name: getattr(self, name) for name in PUBLIC_FIELDS}


PUBLIC_FIELDS = (
    "id",
    "person_id",
    "requested_by",
    "status",
    "session_id",
    "error",
    "created",
    "started",
    "finished",
)


def new_owner() -> str:
    """A lease owner's name: which host and process, plus a tag (a pid can be reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def migrate(connection: sqlite3.Connection) -> None:
    add_columns(connection, "jobs", JOB_COLUMNS)


def job_of(row: sqlite3.Row) -> Job:
    return Job(**{key: row[key] for key in row.keys()})  # noqa: SIM118 (sqlite3.Row)


def get(connection: sqlite3.Connection, job_id: int) -> Job:
    in_range = -(2**63) <= job_id < 2**63  # SQLite integers; larger ids do not exist
    row = (
        connection.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if in_range
        else None
    )
    if row is None:
        raise NotFoundError(f"no personalization job {job_id}")
    return job_of(row)


def expire_leases(connection: sqlite3.Connection, at_s: float) -> list[int]:
    """Inside a write transaction: every running job whose lease ended before `at_s` goes
    back to the queue, or fails after `MAX_EXPIRED` expiries. A running job without a lease
    was left by a server from before leases: its lease counts as expired."""
    rows = connection.execute(
        "SELECT id, person_id, lease_owner, expired_leases FROM jobs WHERE status = 'running'"
        " AND (lease_expires_s IS NULL OR lease_expires_s < ?)" + for_update(connection, True),
        (at_s,),
    ).fetchall()
    for row in rows:
        expired = int(row["expired_leases"]) + 1
        details = {"job": row["id"], "lease_owner": row["lease_owner"], "expired": expired}
        if expired >= MAX_EXPIRED:
            error = f"its worker stopped {expired} times without finishing (lease expired)"
            connection.execute(
                "UPDATE jobs SET status = 'failed', error = ?, finished = ?, lease_owner = NULL,"
                " lease_expires_s = NULL, expired_leases = ? WHERE id = ?",
                (error, now(), expired, row["id"]),
            )
            audit(connection, "service", "personalization_failed", row["person_id"], details)
        else:
            connection.execute(
                "UPDATE jobs SET status = 'queued', started = NULL, lease_owner = NULL,"
                " lease_expires_s = NULL, expired_leases = ? WHERE id = ?",
                (expired, row["id"]),
            )
            audit(connection, "service", "personalization_requeued", row["person_id"], details)
    return [int(row["id"]) for row in rows]


def claim(connection: sqlite3.Connection, owner: str, lease_seconds: float) -> Job | None:
    """Inside a write transaction: expired leases back to the queue, then the oldest queued
    job of a person who consents to personalization, now running under `owner`'s lease
    (None: nothing queued); a queued job of a person who does not fails instead."""
    at_s = time.time()
    expire_leases(connection, at_s)
    while True:
        row = connection.execute(
            "SELECT id, person_id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1"
            + for_update(connection, skip_locked=True)
        ).fetchone()
        if row is None:
            return None
        if consent.granted(connection, row["person_id"], consent.PERSONALIZATION):
            break
        # queued before a withdrawal that did not reach it (another path, an older
        # version): it fails here, in the claiming transaction, and never runs
        consent.stop_jobs(connection, row["person_id"], "service")
    connection.execute(
        "UPDATE jobs SET status = 'running', started = ?, lease_owner = ?, lease_expires_s = ?"
        " WHERE id = ?",
        (now(), owner, at_s + lease_seconds, row["id"]),
    )
    return get(connection, int(row["id"]))


def renew(connection: sqlite3.Connection, job_id: int, owner: str, lease_seconds: float) -> None:
    """Extend `owner`'s lease of a running job; `LeaseLost` if it is not theirs any more
    (expired and taken back, finished, or never theirs)."""
    at_s = time.time()
    cursor = connection.execute(
        "UPDATE jobs SET lease_expires_s = ? WHERE id = ? AND status = 'running'"
        " AND lease_owner = ? AND lease_expires_s >= ?",
        (at_s + lease_seconds, job_id, owner, at_s),
    )
    if cursor.rowcount != 1:
        raise LeaseLost(f"personalization job {job_id} is no longer leased to {owner}")


def finish(
    connection: sqlite3.Connection,
    job_id: int,
    status: str,
    owner: str,
    session_id: int | None = None,
    error: str | None = None,
) -> None:
    """Mark a running job done or failed, only under `owner`'s live lease: else
    `LeaseLost`, and nothing is written (another process may be running it)."""
    if status not in ("done", "failed"):
        raise ValueError(f"a job finishes done or failed, not {status!r}")
    cursor = connection.execute(
        "UPDATE jobs SET status = ?, session_id = ?, error = ?, finished = ?, lease_owner = NULL,"
        " lease_expires_s = NULL WHERE id = ? AND status = 'running' AND lease_owner = ?"
        " AND lease_expires_s >= ?",
        (status, session_id, error, now(), job_id, owner, time.time()),
    )
    if cursor.rowcount != 1:
        raise LeaseLost(f"personalization job {job_id} is no longer leased to {owner}")
    job = get(connection, job_id)
    audit(
        connection,
        "service",
        f"personalization_{status}",
        job.person_id,
        {"job": job_id, "session_id": session_id, "error": error},
    )


def release(connection: sqlite3.Connection, job_id: int, owner: str) -> bool:
    """Hand a running job back to the queue at once (its server is stopping); False if the
    lease was not `owner`'s any more. Not counted as an expiry."""
    cursor = connection.execute(
        "UPDATE jobs SET status = 'queued', started = NULL, lease_owner = NULL,"
        " lease_expires_s = NULL WHERE id = ? AND status = 'running' AND lease_owner = ?",
        (job_id, owner),
    )
    if cursor.rowcount == 1:
        person = get(connection, job_id).person_id
        audit(connection, "service", "personalization_released", person, {"job": job_id})
    return cursor.rowcount == 1
