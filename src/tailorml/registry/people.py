"""The service's people and their data: accounts, tokens, clinician assignments, wrapped data
keys, sealed readings and treatments, live alert decisions and personalization jobs.

This is the storage interface of the cloud service (`tailorml.service`): it holds bytes it
cannot read. Readings, treatments and alert decisions arrive sealed by the person's data
key (`tailorml.service.crypto`); only their time (for range queries and ordering) and a
keyed fingerprint (to recognise a repeated upload) are stored in the clear. Tokens are
stored as hashes. Another backend (e.g. PostgreSQL) would implement the same methods.

Every write is one transaction with its audit line (`registry.database.audit`), so an
acknowledged upload is on disk with its record, and a killed process leaves no half-write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailorml.errors import NotFoundError, TailormlError
from tailorml.registry.database import Database, audit, now

ROLES = ("patient", "clinician")
JOB_STATES = ("queued", "running", "done", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS people (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('patient', 'clinician')),
    token_sha256 TEXT NOT NULL UNIQUE,
    secret_sha1 TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    revoked TEXT,
    erased TEXT,
    wrapped_key BLOB,
    key_id TEXT
);
CREATE TABLE IF NOT EXISTS assignments (
    clinician_id TEXT NOT NULL REFERENCES people(id),
    patient_id TEXT NOT NULL REFERENCES people(id),
    created TEXT NOT NULL,
    PRIMARY KEY (clinician_id, patient_id)
);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people(id),
    date_ms INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (person_id, fingerprint)
);
CREATE INDEX IF NOT EXISTS entries_by_time ON entries(person_id, date_ms);
CREATE TABLE IF NOT EXISTS treatments (
    id INTEGER PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people(id),
    date_ms INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (person_id, fingerprint)
);
CREATE INDEX IF NOT EXISTS treatments_by_time ON treatments(person_id, date_ms);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people(id),
    date_ms INTEGER NOT NULL,
    created TEXT NOT NULL,
    model_id INTEGER NOT NULL,
    model_sha256 TEXT NOT NULL,
    model_kind TEXT NOT NULL,
    sealed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts(person_id, date_ms, id);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people(id),
    requested_by TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    session_id INTEGER,
    error TEXT,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT
);
"""


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    role: str
    created: str
    revoked: str | None
    erased: str | None

    @property
    def active(self) -> bool:
        return self.revoked is None and self.erased is None


@dataclass(frozen=True)
class SealedRow:
    """A stored record as the store sees it: time, id, and bytes it cannot read."""

    id: int
    date_ms: int
    sealed: bytes


@dataclass(frozen=True)
class StoredAlert:
    id: int
    date_ms: int
    created: str
    model_id: int
    model_sha256: str
    model_kind: str
    sealed: bytes


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


def _person(row: sqlite3.Row) -> Person:
    return Person(
        row["id"], row["name"], row["role"], row["created"], row["revoked"], row["erased"]
    )


def _job(row: sqlite3.Row) -> Job:
    return Job(**{key: row[key] for key in row.keys()})  # noqa: SIM118 (sqlite3.Row)


DURABILITY = {"full": "FULL", "normal": "NORMAL"}


class PeopleStore:
    """The people tables of the registry file in `root` (registry.sqlite).

    `durability` "normal" (the service's default) makes an acknowledged upload survive a
    killed server but not a power loss of the machine; "full" also a power loss, at about one
    disk flush per write (see `registry.database.Database`)."""

    def __init__(self, root: str | Path, durability: str = "full") -> None:
        if durability not in DURABILITY:
            raise TailormlError(f"--durability must be full or normal, not {durability!r}")
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise TailormlError(f"{self.root} is a file; pass a directory (--data)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.database = Database(
            self.root / "registry.sqlite", SCHEMA, "--data", DURABILITY[durability]
        )

    # -- accounts ------------------------------------------------------------------------

    def add_person(
        self, person_id: str, name: str, role: str, token_sha256: str, secret_sha1: str, actor: str
    ) -> Person:
        if role not in ROLES:
            raise TailormlError(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
        try:
            with self.database.transaction() as connection:
                connection.execute(
                    "INSERT INTO people (id, name, role, token_sha256, secret_sha1, created)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (person_id, name, role, token_sha256, secret_sha1, now()),
                )
                audit(connection, actor, "add_person", person_id, {"name": name, "role": role})
        except sqlite3.IntegrityError:
            raise TailormlError(
                f"a person named {name!r} exists already; choose another name (`tailorml users "
                "list` shows them)"
            ) from None
        return self.person(person_id)

    def person(self, person_id: str) -> Person:
        rows = self.database.query("SELECT * FROM people WHERE id = ?", (person_id,))
        if not rows:
            raise TailormlError(f"no person with id {person_id!r}")
        return _person(rows[0])

    def find(self, person_id: str) -> Person | None:
        rows = self.database.query("SELECT * FROM people WHERE id = ?", (person_id,))
        return _person(rows[0]) if rows else None

    def by_name(self, name: str) -> Person:
        rows = self.database.query("SELECT * FROM people WHERE name = ?", (name,))
        if not rows:
            raise TailormlError(f"no person named {name!r}; `tailorml users list` shows them")
        return _person(rows[0])

    def by_token(self, token_sha256: str) -> Person | None:
        rows = self.database.query("SELECT * FROM people WHERE token_sha256 = ?", (token_sha256,))
        return _person(rows[0]) if rows else None

    def by_secret(self, secret_sha1: str) -> Person | None:
        rows = self.database.query("SELECT * FROM people WHERE secret_sha1 = ?", (secret_sha1,))
        return _person(rows[0]) if rows else None

    def people(self) -> list[Person]:
        return [_person(row) for row in self.database.query("SELECT * FROM people ORDER BY name")]

    def revoke(self, person_id: str, actor: str) -> Person:
        with self.database.transaction() as connection:
            connection.execute(
                "UPDATE people SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (now(), person_id),
            )
            audit(connection, actor, "revoke_token", person_id, {})
        return self.person(person_id)

    def rotate(self, person_id: str, token_sha256: str, secret_sha1: str, actor: str) -> Person:
        """A new token for a person (the old one is refused from now on; a revoked account
        becomes active again with it). Their data, models and assignments stay."""
        if self.person(person_id).erased is not None:
            raise TailormlError("an erased account cannot get a new token")
        with self.database.transaction() as connection:
            connection.execute(
                "UPDATE people SET token_sha256 = ?, secret_sha1 = ?, revoked = NULL WHERE id = ?",
                (token_sha256, secret_sha1, person_id),
            )
            audit(connection, actor, "rotate_token", person_id, {})
        return self.person(person_id)

    def unassign(self, clinician_id: str, patient_id: str, actor: str) -> bool:
        """End a clinician's access to a patient; whether there was an assignment."""
        with self.database.transaction() as connection:
            removed = connection.execute(
                "DELETE FROM assignments WHERE clinician_id = ? AND patient_id = ?",
                (clinician_id, patient_id),
            ).rowcount
            if removed:
                audit(connection, actor, "unassign", patient_id, {"clinician": clinician_id})
        return bool(removed)

    def assign(self, clinician_id: str, patient_id: str, actor: str) -> None:
        clinician, patient = self.person(clinician_id), self.person(patient_id)
        if clinician.role != "clinician":
            raise TailormlError(f"{clinician.name!r} is a {clinician.role}, not a clinician")
        if patient.role != "patient":
            raise TailormlError(f"{patient.name!r} is a {patient.role}, not a patient")
        with self.database.transaction() as connection:
            connection.execute(
                "INSERT OR IGNORE INTO assignments (clinician_id, patient_id, created)"
                " VALUES (?, ?, ?)",
                (clinician_id, patient_id, now()),
            )
            audit(connection, actor, "assign", patient_id, {"clinician": clinician_id})

    def patients_of(self, clinician_id: str) -> list[str]:
        rows = self.database.query(
            "SELECT patient_id FROM assignments WHERE clinician_id = ? ORDER BY patient_id",
            (clinician_id,),
        )
        return [row["patient_id"] for row in rows]

    def clinicians_of(self, patient_id: str) -> list[str]:
        rows = self.database.query(
            "SELECT clinician_id FROM assignments WHERE patient_id = ? ORDER BY clinician_id",
            (patient_id,),
        )
        return [row["clinician_id"] for row in rows]

    # -- data keys ---------------------------------------------------------------------------

    def wrapped_key(self, person_id: str) -> tuple[bytes, str] | None:
        rows = self.database.query(
            "SELECT wrapped_key, key_id FROM people WHERE id = ?", (person_id,)
        )
        if not rows or rows[0]["wrapped_key"] is None:
            return None
        return bytes(rows[0]["wrapped_key"]), rows[0]["key_id"]

    def wrapping_key_ids(self) -> list[str]:
        """The ids of the server keys that wrapped the stored data keys (normally one)."""
        rows = self.database.query(
            "SELECT DISTINCT key_id FROM people WHERE wrapped_key IS NOT NULL ORDER BY key_id", ()
        )
        return [row["key_id"] for row in rows]

    def set_wrapped_key(self, person_id: str, wrapped: bytes, key_id: str) -> tuple[bytes, str]:
        """Store a person's first data key; if another writer got there first, theirs wins
        (returned), so a person never has two keys."""
        with self.database.transaction() as connection:
            connection.execute(
                "UPDATE people SET wrapped_key = ?, key_id = ? WHERE id = ? AND wrapped_key IS "
                "NULL AND erased IS NULL",
                (wrapped, key_id, person_id),
            )
        found = self.wrapped_key(person_id)
        if found is None:
            raise TailormlError(f"{person_id} has been erased; their data cannot be written")
        return found

    # -- readings and treatments ---------------------------------------------------------

    def _add(
        self,
        table: str,
        person_id: str,
        rows: Sequence[tuple[int, str, bytes]],
        actor: str,
        action: str,
    ) -> list[tuple[int, bool]]:
        """Insert (date_ms, fingerprint, sealed) rows once each; returns (id, new) per row."""
        created = now()
        result = []
        with self.database.transaction() as connection:
            _refuse_erased(connection, person_id)
            for date_ms, fingerprint, sealed in rows:
                cursor = connection.execute(
                    f"INSERT OR IGNORE INTO {table} (person_id, date_ms, fingerprint, sealed,"
                    " created) VALUES (?, ?, ?, ?, ?)",
                    (person_id, date_ms, fingerprint, sealed, created),
                )
                if cursor.rowcount:
                    result.append((int(cursor.lastrowid), True))
                else:
                    row = connection.execute(
                        f"SELECT id FROM {table} WHERE person_id = ? AND fingerprint = ?",
                        (person_id, fingerprint),
                    ).fetchone()
                    result.append((int(row["id"]), False))
            new = sum(flag for _, flag in result)
            audit(
                connection,
                actor,
                action,
                person_id,
                {"received": len(rows), "stored": new, "repeated": len(rows) - new},
            )
        return result

    def add_entries(self, person_id: str, rows, actor: str) -> list[tuple[int, bool]]:
        return self._add("entries", person_id, rows, actor, "upload_entries")

    def add_treatments(self, person_id: str, rows, actor: str) -> list[tuple[int, bool]]:
        return self._add("treatments", person_id, rows, actor, "upload_treatments")

    def _rows(
        self,
        table: str,
        person_id: str,
        since_ms: int | None,
        until_ms: int | None,
        limit: int,
        offset: int = 0,
    ) -> list[SealedRow]:
        low = since_ms if since_ms is not None else -(2**62)
        high = until_ms if until_ms is not None else 2**62
        rows = self.database.query(
            f"SELECT id, date_ms, sealed FROM {table} WHERE person_id = ? AND date_ms >= ? AND"
            " date_ms <= ? ORDER BY date_ms DESC, id DESC LIMIT ? OFFSET ?",
            (person_id, low, high, limit, offset),
        )
        return [SealedRow(row["id"], row["date_ms"], bytes(row["sealed"])) for row in rows]

    def sealed_by_id(self, table: str, person_id: str, ids: list[int]) -> dict[int, bytes]:
        """The stored records `ids` of a person in `table` (entries or treatments)."""
        if table not in ("entries", "treatments"):
            raise ValueError(f"no sealed table {table!r}")
        found: dict[int, bytes] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for row in self.database.query(
                f"SELECT id, sealed FROM {table} WHERE person_id = ? AND id IN ({marks})",
                (person_id, *chunk),
            ):
                found[row["id"]] = bytes(row["sealed"])
        return found

    def entries(
        self,
        person_id: str,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[SealedRow]:
        """Newest first, `since_ms <= date <= until_ms` (bounds inclusive, None = open),
        `limit` rows after skipping `offset` (pages for filters on sealed fields)."""
        return self._rows("entries", person_id, since_ms, until_ms, limit, offset)

    def treatments(
        self,
        person_id: str,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[SealedRow]:
        return self._rows("treatments", person_id, since_ms, until_ms, limit, offset)

    # -- live alert decisions --------------------------------------------------------------

    def add_alerts(self, person_id: str, rows: Sequence[tuple[int, int, str, str, bytes]]) -> None:
        """Store decisions (reading date_ms, model id, model sha256, model kind, sealed)."""
        created = now()
        with self.database.transaction() as connection:
            _refuse_erased(connection, person_id)
            connection.executemany(
                "INSERT INTO alerts (person_id, date_ms, created, model_id, model_sha256,"
                " model_kind, sealed) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(person_id, d, created, m, sha, kind, sealed) for d, m, sha, kind, sealed in rows],
            )

    def alerts(
        self,
        person_id: str,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 10,
    ) -> list[StoredAlert]:
        """Decisions, newest reading first (the latest decision first among equal times)."""
        low = since_ms if since_ms is not None else -(2**62)
        high = until_ms if until_ms is not None else 2**62
        rows = self.database.query(
            "SELECT * FROM alerts WHERE person_id = ? AND date_ms >= ? AND date_ms <= ?"
            " ORDER BY date_ms DESC, id DESC LIMIT ?",
            (person_id, low, high, limit),
        )
        return [
            StoredAlert(
                row["id"],
                row["date_ms"],
                row["created"],
                row["model_id"],
                row["model_sha256"],
                row["model_kind"],
                bytes(row["sealed"]),
            )
            for row in rows
        ]

    # -- personalization jobs ----------------------------------------------------------------

    def add_job(self, person_id: str, requested_by: str) -> Job:
        with self.database.transaction() as connection:
            busy = connection.execute(
                "SELECT id FROM jobs WHERE person_id = ? AND status IN ('queued', 'running')",
                (person_id,),
            ).fetchone()
            if busy:
                raise TailormlError(
                    f"a personalization of this person is already under way (job {busy['id']});"
                    " wait for it to finish"
                )
            cursor = connection.execute(
                "INSERT INTO jobs (person_id, requested_by, status, created) VALUES (?, ?,"
                " 'queued', ?)",
                (person_id, requested_by, now()),
            )
            job_id = int(cursor.lastrowid)
            audit(connection, requested_by, "request_personalization", person_id, {"job": job_id})
        return self.job(job_id)

    def job(self, job_id: int) -> Job:
        in_range = -(2**63) <= job_id < 2**63  # SQLite integers; larger ids do not exist
        rows = self.database.query("SELECT * FROM jobs WHERE id = ?", (job_id,)) if in_range else []
        if not rows:
            raise NotFoundError(f"no personalization job {job_id}")
        return _job(rows[0])

    def jobs(self, person_id: str) -> list[Job]:
        rows = self.database.query(
            "SELECT * FROM jobs WHERE person_id = ? ORDER BY id DESC", (person_id,)
        )
        return [_job(row) for row in rows]

    def claim_job(self) -> Job | None:
        """The oldest queued job, now marked running (atomically: one worker gets it)."""
        with self.database.transaction() as connection:
            row = connection.execute(
                "SELECT * FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            connection.execute(
                "UPDATE jobs SET status = 'running', started = ? WHERE id = ?", (now(), row["id"])
            )
        return self.job(int(row["id"]))

    def finish_job(
        self, job_id: int, status: str, session_id: int | None = None, error: str | None = None
    ) -> Job:
        if status not in ("done", "failed"):
            raise ValueError(f"a job finishes done or failed, not {status!r}")
        with self.database.transaction() as connection:
            connection.execute(
                "UPDATE jobs SET status = ?, session_id = ?, error = ?, finished = ? WHERE id = ?",
                (status, session_id, error, now(), job_id),
            )
            job = connection.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            audit(
                connection,
                "service",
                f"personalization_{status}",
                job["person_id"],
                {"job": job_id, "session_id": session_id, "error": error},
            )
        return self.job(job_id)

    def requeue_interrupted(self) -> int:
        """Jobs left running by a stopped server go back to the queue (at start-up)."""
        with self.database.transaction() as connection:
            cursor = connection.execute(
                "UPDATE jobs SET status = 'queued', started = NULL WHERE status = 'running'"
            )
            return cursor.rowcount

    # -- the audit log and erasure -------------------------------------------------------------

    def record(self, actor: str, action: str, person_id: str | None, details: dict[str, Any]):
        """An audit line for a read (a write records itself in its own transaction)."""
        with self.database.transaction() as connection:
            audit(connection, actor, action, person_id, details)

    def erase(self, person_id: str, actor: str, retired_models: list[int]) -> dict[str, int]:
        """Delete a person's readings, treatments, alerts and data key; keep the account row
        (erased, revoked) and the audit log, which says what was deleted and by whom."""
        counts: dict[str, int] = {}
        with self.database.transaction() as connection:
            connection.execute("PRAGMA secure_delete=ON")
            for table in ("entries", "treatments", "alerts"):
                counts[table] = connection.execute(
                    f"DELETE FROM {table} WHERE person_id = ?", (person_id,)
                ).rowcount
            connection.execute(
                "DELETE FROM assignments WHERE patient_id = ? OR clinician_id = ?",
                (person_id, person_id),
            )
            stamp = now()
            connection.execute(
                "UPDATE people SET wrapped_key = NULL, key_id = NULL, erased = ?, revoked ="
                " COALESCE(revoked, ?) WHERE id = ?",
                (stamp, stamp, person_id),
            )
            audit(
                connection,
                actor,
                "erase",
                person_id,
                counts | {"retired_models": retired_models, "data_key": "deleted"},
            )
        return counts


def _refuse_erased(connection, person_id: str) -> None:
    """Inside the writing transaction: an upload racing an erasure stores nothing once the
    erasure has committed (checked outside, it could store after the erasure)."""
    row = connection.execute("SELECT erased FROM people WHERE id = ?", (person_id,)).fetchone()
    if row is not None and row["erased"] is not None:
        raise TailormlError(f"person {person_id} has been erased; nothing was stored")
