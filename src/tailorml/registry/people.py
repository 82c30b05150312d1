"""The service's people and their data: accounts, tokens, clinician assignments, wrapped data
keys, sealed readings and treatments, live alert decisions and personalization jobs.

This is the storage interface of the cloud service (`tailorml.service`): it holds bytes it
cannot read. Readings, treatments, Nightscout documents (devicestatus, profile) and alert
decisions arrive sealed by the person's data key (`tailorml.service.crypto`); only their
time (for range queries and ordering), keyed fingerprints (which record an upload is: the
same time and type for a reading; and whether its content changed) and an opaque id are
stored in the clear. Ids are random per record and looked up per person, so they say
nothing about other people's uploads (rows stored before ids were random keep the id they
were answered with). A record that is corrected or deleted leaves its previous sealed
content in `replaced`, with who and when. Tokens are stored as hashes.

The tables live in a data directory's SQLite file or in a PostgreSQL database (a
`postgresql://` URL): the same SQL on both (`registry.database`, `registry.dialect`). What
SQLite's single writer gave for free is a row lock on PostgreSQL: a person's writes lock
their `people` row (`_lock_person`), so one person's uploads, decisions, jobs and erasure
take turns while other people's run beside.

Every write is one transaction with its audit line (`registry.database.audit`), so an
acknowledged upload is on disk with its record, and a killed process leaves no half-write.
"""

from __future__ import annotations

import atexit
import contextlib
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from tailorml.errors import TailormlError
from tailorml.registry import consent, job_queue, partitions, push, retention
from tailorml.registry import sealed_formats as formats
from tailorml.registry.database import (
    DATABASE_ERRORS,
    INTEGRITY_ERRORS,
    add_columns,
    audit,
    dialect_of,
    insert_id,
    is_postgres_url,
    now,
    open_database,
    table_columns,
)
from tailorml.registry.job_queue import Job

ROLES = ("patient", "clinician")
JOB_STATES = ("queued", "running", "done", "failed")
RECORD_TABLES = ("entries", "treatments")
COLLECTIONS = ("devicestatus", "profile", "food", "settings")
# Nightscout API v3 reads every collection by server modification time: a record's kind as
# the tombstones of deleted ones name it
V3_TABLES = {"entries": "entries", "treatments": "treatments"} | dict.fromkeys(
    COLLECTIONS, "documents"
)
# SQLite's retention deletes this many rows per table and transaction
RETENTION_BATCH = 20_000
V3_COLUMNS = {"srv_modified": "INTEGER", "srv_created": "INTEGER", "identifier": "TEXT"}

SCHEMA = (
    """
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
    public_id TEXT,
    content TEXT,
    srv_modified INTEGER,
    srv_created INTEGER,
    identifier TEXT,
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
    public_id TEXT,
    content TEXT,
    srv_modified INTEGER,
    srv_created INTEGER,
    identifier TEXT,
    UNIQUE (person_id, fingerprint)
);
CREATE INDEX IF NOT EXISTS treatments_by_time ON treatments(person_id, date_ms);
CREATE TABLE IF NOT EXISTS alert_models (
    id INTEGER PRIMARY KEY,
    model_id INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL,
    UNIQUE (model_id, sha256, kind)
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people(id),
    date_ms INTEGER NOT NULL,
    created_s INTEGER NOT NULL,
    model INTEGER NOT NULL REFERENCES alert_models(id),
    sealed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts(person_id, date_ms, id);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people(id),
    collection TEXT NOT NULL CHECK (collection IN ('devicestatus', 'profile', 'food',
        'settings')),
    public_id TEXT NOT NULL,
    date_ms INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    created TEXT NOT NULL,
    fingerprint TEXT,
    srv_modified INTEGER,
    srv_created INTEGER,
    identifier TEXT,
    UNIQUE (person_id, public_id)
);
CREATE INDEX IF NOT EXISTS documents_by_time ON documents(person_id, collection, date_ms);
CREATE TABLE IF NOT EXISTS replaced (
    id INTEGER PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people(id),
    record_table TEXT NOT NULL CHECK (record_table IN ('entries', 'treatments')),
    public_id TEXT NOT NULL,
    date_ms INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    change TEXT NOT NULL CHECK (change IN ('replaced', 'deleted')),
    actor TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS replaced_by_person ON replaced(person_id, record_table, id);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people(id),
    requested_by TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    session_id INTEGER,
    error TEXT,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    lease_owner TEXT,
    lease_expires_s REAL,
    expired_leases INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status, id);
CREATE TABLE IF NOT EXISTS review_sessions (
    id_sha256 TEXT PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people(id),
    created TEXT NOT NULL,
    expires_s INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS review_sessions_by_person ON review_sessions(person_id);
CREATE TABLE IF NOT EXISTS tombstones (
    id INTEGER PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people(id),
    collection TEXT NOT NULL,
    public_id TEXT NOT NULL,
    identifier TEXT,
    date_ms INTEGER NOT NULL,
    srv_created INTEGER,
    srv_modified INTEGER NOT NULL,
    sealed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tombstones_by_modified ON tombstones(person_id, collection,
    srv_modified);
CREATE TABLE IF NOT EXISTS srv_clock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS srv_clocks (
    person_id TEXT PRIMARY KEY REFERENCES people(id),
    last_ms INTEGER NOT NULL
);
"""
    + consent.SCHEMA
    + push.SCHEMA
)


def migrate(connection: sqlite3.Connection) -> None:
    """A data directory written before ids were per person and corrections were kept:
    entries and treatments get `public_id` (an existing row keeps the id it was answered
    with, its row number in 24 hex digits, so an uploader that kept it can still update or
    delete it) and `content` (NULL: unknown, so a repeat of an old row is stored as a
    correction once, harmlessly).

    SQLite only: a PostgreSQL database's schema is Alembic's revisions
    (`registry.schema_versions`)."""
    for table in RECORD_TABLES:
        add_columns(connection, table, {"public_id": "TEXT", "content": "TEXT"})
        connection.execute(
            f"UPDATE {table} SET public_id = printf('%024x', id) WHERE public_id IS NULL"
        )
    job_queue.migrate(connection)
    consent.migrate(connection)
    _migrate_v3(connection)
    _migrate_compact(connection)
    _migrate_alerts(connection)
    _indexes(connection)


def _indexes(connection) -> None:
    """The indexes on columns that SQLite's migrations added (public ids, API v3's server
    times and identifiers), made once at the end of every migration (the steps before may
    rebuild or drop them), so an existing data directory gets an index added since when it
    is next opened (a PostgreSQL database has them from its revisions).
    `documents_by_collection_modified`: API v3's lastModified (and the socket.io poll) asks
    for the newest server time of one collection stored whole; by (person, server time)
    alone that read every devicestatus, profile, food and settings record of the person
    (40 ms with 20,000 devicestatus)."""
    for table in RECORD_TABLES:
        connection.execute(
            f"CREATE UNIQUE INDEX IF NOT EXISTS {table}_by_public_id ON {table}(person_id,"
            " public_id)"
        )
    for table in (*RECORD_TABLES, "documents"):
        connection.execute(
            f"CREATE INDEX IF NOT EXISTS {table}_by_modified ON {table}(person_id, srv_modified)"
        )
        connection.execute(
            f"CREATE INDEX IF NOT EXISTS {table}_by_identifier ON {table}(person_id, identifier)"
            " WHERE identifier IS NOT NULL"
        )
    connection.execute(
        "CREATE INDEX IF NOT EXISTS documents_by_collection_modified ON documents(person_id,"
        " collection, srv_modified)"
    )


def _migrate_alerts(connection: sqlite3.Connection) -> None:
    """A data directory from before alerts named their model by reference: each row held the
    model's id, its 64-hex sha256 and its kind, and an ISO `created` (about 100 bytes a
    decision). The table is rebuilt, ids and sealed bytes kept: the (model id, sha256,
    kind) of its rows go to `alert_models` once each, a row keeps a reference to its own,
    and `created` becomes whole seconds since the epoch (it had no finer part)."""
    if "model_sha256" not in table_columns(connection, "alerts"):
        return
    connection.execute("ALTER TABLE alerts RENAME TO alerts_before_models")
    # one statement: executescript would commit the migration's transaction
    connection.execute(SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS alerts (") :].split(";")[0])
    connection.execute(
        "INSERT OR IGNORE INTO alert_models (model_id, sha256, kind) SELECT DISTINCT model_id,"
        " model_sha256, model_kind FROM alerts_before_models ORDER BY model_id"
    )
    connection.execute(
        "INSERT INTO alerts (id, person_id, date_ms, created_s, model, sealed) SELECT a.id,"
        " a.person_id, a.date_ms, CAST(strftime('%s', a.created) AS INTEGER), m.id, a.sealed"
        " FROM alerts_before_models AS a JOIN alert_models AS m ON m.model_id = a.model_id AND"
        " m.sha256 = a.model_sha256 AND m.kind = a.model_kind"
    )
    (moved,) = connection.execute("SELECT COUNT(*) FROM alerts").fetchone()
    (kept,) = connection.execute("SELECT COUNT(*) FROM alerts_before_models").fetchone()
    if moved != kept:  # never expected: refuse to lose a decision
        raise TailormlError(f"alerts: {kept} rows before, {moved} after; nothing was changed")
    connection.execute("DROP TABLE alerts_before_models")
    connection.execute(
        "CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts(person_id, date_ms, id)"
    )


# keyed fingerprints: (table, column) -- 32 hex digits since "less per reading"
FINGERPRINT_COLUMNS = (
    ("entries", "fingerprint"),
    ("entries", "content"),
    ("entries", "identifier"),
    ("treatments", "fingerprint"),
    ("treatments", "content"),
    ("treatments", "identifier"),
    ("documents", "fingerprint"),
    ("documents", "identifier"),
    ("tombstones", "identifier"),
    ("push_subscriptions", "fingerprint"),
)


def _migrate_compact(connection: sqlite3.Connection) -> None:
    """A data directory from before "less per reading": its keyed fingerprints (64 hex
    digits, HMAC-SHA-256) are cut to the 32 digits the service now computes (their first
    128 bits, `service.crypto.DataCipher.fingerprint`), so a repeat of an older record is
    still found; the index on v3 identifiers leaves out the records without one (most
    readings). Rows keep their ids and sealed bytes: older sealed layouts still open."""
    for table, column in FINGERPRINT_COLUMNS:
        connection.execute(
            f"UPDATE {table} SET {column} = substr({column}, 1, 32) WHERE length({column}) = 64"
        )
    for table in (*RECORD_TABLES, "documents"):
        found = connection.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
            (f"{table}_by_identifier",),
        ).fetchone()
        if found is not None and "WHERE" not in found["sql"]:
            connection.execute(f"DROP INDEX {table}_by_identifier")  # `_indexes` makes it again


def _migrate_v3(connection: sqlite3.Connection) -> None:
    """A data directory from before API v3: documents may hold food and settings (the table
    is rebuilt with the wider CHECK, rows and ids kept), and every record gets its server
    times (`srv_created`, `srv_modified`: when it was stored, from `created`) and an
    `identifier` column (a keyed fingerprint of the identifier a v3 client gave it)."""
    found = connection.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'documents'"
    ).fetchone()
    if found is not None and "'food'" not in found["sql"]:
        add_columns(connection, "documents", {"fingerprint": "TEXT"} | V3_COLUMNS)
        connection.execute("ALTER TABLE documents RENAME TO documents_before_v3")
        # one statement: executescript would commit the migration's transaction
        connection.execute(
            SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS documents") :].split(";")[0]
        )
        columns = "id, person_id, collection, public_id, date_ms, sealed, created, " + ", ".join(
            ["fingerprint", *V3_COLUMNS]
        )
        connection.execute(
            f"INSERT INTO documents ({columns}) SELECT {columns} FROM documents_before_v3"
        )
        connection.execute("DROP TABLE documents_before_v3")
    for table in (*RECORD_TABLES, "documents"):
        add_columns(connection, table, V3_COLUMNS)
        connection.execute(
            f"UPDATE {table} SET srv_created = CAST(strftime('%s', created) AS INTEGER) * 1000"
            " WHERE srv_created IS NULL"
        )
        connection.execute(
            f"UPDATE {table} SET srv_modified = srv_created WHERE srv_modified IS NULL"
        )
    connection.execute(
        "CREATE INDEX IF NOT EXISTS documents_by_time ON documents(person_id, collection, date_ms)"
    )


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
    """A stored record as the store sees it: time, ids, and bytes it cannot read."""

    id: int
    date_ms: int
    sealed: bytes
    public_id: str = ""
    srv_modified: int | None = None
    srv_created: int | None = None
    collection: str = ""
    deleted: bool = False


class Write(NamedTuple):
    """One record to store: `key` says which record it is (a reading: its type and time),
    `content` whether it changed; with `public_id`, the record of that id is the one
    replaced (a PUT), or the id a new record gets."""

    date_ms: int
    key: str
    sealed: bytes
    content: str | None = None
    public_id: str | None = None
    identifier: str | None = None  # keyed fingerprint of a v3 client's identifier


@dataclass(frozen=True)
class Upserted:
    """What became of one write: `outcome` new, same (a repeat) or replaced (a correction:
    the previous content is kept in `replaced`); `previous_ms` the replaced record's time."""

    id: int
    public_id: str
    outcome: str
    date_ms: int
    previous_ms: int | None = None
    srv_modified: int | None = None

    @property
    def new(self) -> bool:
        return self.outcome == "new"


@dataclass(frozen=True)
class StoredAlert:
    id: int
    date_ms: int
    created: str
    model_id: int
    model_sha256: str
    model_kind: str
    sealed: bytes


def _person(row: sqlite3.Row) -> Person:
    return Person(
        row["id"], row["name"], row["role"], row["created"], row["revoked"], row["erased"]
    )


DURABILITY = {"full": "FULL", "normal": "NORMAL"}
# reads are audited per reader, person and kind of read and hour: the first at once, the
# rest as one line (a follower polling every 5 minutes wrote a line per poll)
READ_BATCH_SECONDS = 3600


def _flush_at_exit(store_ref) -> None:
    store = store_ref()
    if store is not None:
        with contextlib.suppress(*DATABASE_ERRORS, TailormlError):  # the file is gone (a test's)
            store.flush_reads()


class PeopleStore:
    """The people tables of the registry file in `root` (registry.sqlite), or of the
    PostgreSQL database when `root` is a `postgresql://` URL.

    `durability` "normal" (the service's default) makes an acknowledged upload survive a
    killed server but not a power loss of the machine; "full" also a power loss, at about one
    disk flush per write (see `registry.database.Database`). On PostgreSQL it is the
    server's setting (`synchronous_commit`), not the store's."""

    def __init__(self, root: str | Path, durability: str = "full") -> None:
        if durability not in DURABILITY:
            raise TailormlError(f"--durability must be full or normal, not {durability!r}")
        if is_postgres_url(root):
            self.root = None
            self.database = open_database(str(root), SCHEMA, "--database", migrate=migrate)
        else:
            self.root = Path(root)
            if self.root.exists() and not self.root.is_dir():
                raise TailormlError(f"{self.root} is a file; pass a directory (--data)")
            self.root.mkdir(parents=True, exist_ok=True)
            self.database = open_database(
                self.root / "registry.sqlite", SCHEMA, "--data", DURABILITY[durability], migrate
            )
        # reads waiting for their audit line: (window, actor, action, person) -> counts
        self._reads: dict[tuple, dict[str, Any]] = {}
        self._reads_lock = threading.Lock()
        atexit.register(_flush_at_exit, weakref.ref(self))

    # -- accounts ------------------------------------------------------------------------

    def add_person(
        self,
        person_id: str,
        name: str,
        role: str,
        token_sha256: str,
        secret_sha1: str,
        actor: str,
        personalization: bool = True,
    ) -> Person:
        """A new account; a patient's consent to personalization as given at enrollment
        (`personalization`: False when they will give it themselves, on their page)."""
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
                if role == "patient":  # consent given at enrollment (registry.consent)
                    consent.record(
                        connection,
                        person_id,
                        consent.PERSONALIZATION,
                        None,
                        personalization,
                        "enrollment",
                        actor,
                    )
        except INTEGRITY_ERRORS:
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

    def token_hash(self, person_id: str) -> str | None:
        """The SHA-256 of the person's current token (what a JWT is bound to: a rotated
        token ends the JWTs exchanged for the old one)."""
        rows = self.database.query("SELECT token_sha256 FROM people WHERE id = ?", (person_id,))
        return rows[0]["token_sha256"] if rows else None

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
            _end_review_sessions(connection, person_id)
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
            _end_review_sessions(connection, person_id)
            audit(connection, actor, "rotate_token", person_id, {})
        return self.person(person_id)

    # -- review-page sign-ins (browser sessions; the API never takes them) -------------------

    def add_review_session(
        self, id_sha256: str, person_id: str, lifetime_s: int, actor: str
    ) -> None:
        """A browser session of `person_id` for `lifetime_s` seconds, known by the SHA-256
        of its id; sessions past their end (anyone's) are deleted on the way."""
        stamp = int(time.time())
        with self.database.transaction() as connection:
            connection.execute("DELETE FROM review_sessions WHERE expires_s <= ?", (stamp,))
            connection.execute(
                "INSERT INTO review_sessions (id_sha256, person_id, created, expires_s)"
                " VALUES (?, ?, ?, ?)",
                (id_sha256, person_id, now(), stamp + lifetime_s),
            )
            audit(connection, actor, "sign_in", person_id, {"lifetime_s": lifetime_s})

    def review_session(self, id_sha256: str) -> Person | None:
        """The person of an unexpired session (None: unknown, ended or expired)."""
        rows = self.database.query(
            "SELECT people.* FROM review_sessions JOIN people ON people.id ="
            " review_sessions.person_id WHERE review_sessions.id_sha256 = ? AND"
            " review_sessions.expires_s > ?",
            (id_sha256, int(time.time())),
        )
        return _person(rows[0]) if rows else None

    def end_review_session(self, id_sha256: str, actor: str) -> bool:
        """Sign-out: delete the session; whether there was one."""
        with self.database.transaction() as connection:
            row = connection.execute(
                "SELECT person_id FROM review_sessions WHERE id_sha256 = ?", (id_sha256,)
            ).fetchone()
            if row is None:
                return False
            connection.execute("DELETE FROM review_sessions WHERE id_sha256 = ?", (id_sha256,))
            audit(connection, actor, "sign_out", row["person_id"], {})
        return True

    def review_sessions(self, person_id: str) -> int:
        """How many unexpired review-page sessions a person has."""
        rows = self.database.query(
            "SELECT COUNT(*) AS n FROM review_sessions WHERE person_id = ? AND expires_s > ?",
            (person_id, int(time.time())),
        )
        return int(rows[0]["n"])

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
        for person in (clinician, patient):
            if person.erased is not None:
                raise TailormlError(
                    f"{person.name!r} was erased on {person.erased[:10]}; an erased account "
                    "cannot be assigned (add a new account for a returning person)"
                )
        with self.database.transaction() as connection:
            connection.execute(
                "INSERT OR IGNORE INTO assignments (clinician_id, patient_id, created)"
                " VALUES (?, ?, ?)",
                (clinician_id, patient_id, now()),
            )
            audit(connection, actor, "assign", patient_id, {"clinician": clinician_id})
            # access as agreed at assignment, unless the patient withdrew it before: a
            # patient's withdrawal is never undone by the administrator's assignment
            if consent.latest(connection, patient_id, consent.CLINICIAN, clinician_id) is None:
                consent.record(
                    connection,
                    patient_id,
                    consent.CLINICIAN,
                    clinician_id,
                    True,
                    "assignment",
                    actor,
                )
        return self.consented(patient_id, clinician_id)

    def consented(self, patient_id: str, clinician_id: str | None = None) -> bool:
        """Whether the patient's consent to personalization (`clinician_id` None), or to
        that clinician's access, is granted now."""
        scope = consent.PERSONALIZATION if clinician_id is None else consent.CLINICIAN
        return consent.granted(self.database.reader(), patient_id, scope, clinician_id)

    def patients_of(self, clinician_id: str) -> list[str]:
        """The patients a clinician may see: assigned, and consenting to that clinician."""
        rows = self.database.query(
            "SELECT patient_id FROM assignments WHERE clinician_id = ? AND "
            + consent.CONSENTED_ASSIGNMENT
            + " ORDER BY patient_id",
            (clinician_id,),
        )
        return [row["patient_id"] for row in rows]

    def assigned_patients(self, clinician_id: str) -> list[str]:
        """Every patient assigned to a clinician, whether they consent to access or not."""
        rows = self.database.query(
            "SELECT patient_id FROM assignments WHERE clinician_id = ? ORDER BY patient_id",
            (clinician_id,),
        )
        return [row["patient_id"] for row in rows]

    def clinicians_of(self, patient_id: str, consenting: bool = True) -> list[str]:
        """A patient's assigned clinicians: those with the patient's consent (or all)."""
        where = (" AND " + consent.CONSENTED_ASSIGNMENT) if consenting else ""
        rows = self.database.query(
            "SELECT clinician_id FROM assignments WHERE patient_id = ?"
            + where
            + " ORDER BY clinician_id",
            (patient_id,),
        )
        return [row["clinician_id"] for row in rows]

    # -- consent (registry.consent) ------------------------------------------------------------

    def set_consent(
        self,
        patient_id: str,
        grant: bool,
        actor: str,
        source: str,
        clinician_id: str | None = None,
    ) -> bool:
        """Grant or withdraw consent to personalization (`clinician_id` None) or to an
        assigned clinician's access; whether anything changed. Recorded and audited in one
        transaction; withdrawing personalization stops the person's jobs in it too."""
        patient = self.person(patient_id)
        if patient.role != "patient" or patient.erased is not None:
            raise TailormlError(f"{patient.name!r} is not an active patient: no consent to give")
        with self.database.transaction() as connection:
            _lock_person(connection, patient_id)
            if clinician_id is not None:
                assigned = connection.execute(
                    "SELECT 1 FROM assignments WHERE clinician_id = ? AND patient_id = ?",
                    (clinician_id, patient_id),
                ).fetchone()
                if assigned is None:
                    raise TailormlError(
                        f"clinician {clinician_id} is not assigned to {patient.name}: "
                        "consent is given to an assigned clinician (tailorml users assign)"
                    )
            scope = consent.PERSONALIZATION if clinician_id is None else consent.CLINICIAN
            return consent.record(connection, patient_id, scope, clinician_id, grant, source, actor)

    def consent_history(self, patient_id: str) -> list[consent.Consent]:
        return consent.history(self.database.reader(), patient_id)

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
            "SELECT key_id FROM people WHERE wrapped_key IS NOT NULL UNION SELECT key_id FROM"
            " service_keys ORDER BY key_id",
            (),
        )
        return [row["key_id"] for row in rows]

    # -- Web Push (registry.push) ------------------------------------------------------------

    def add_subscription(
        self, person_id: str, fingerprint: str, sealed: bytes, actor: str
    ) -> tuple[str, bool]:
        """(id, new): a browser's push subscription, sealed; the same endpoint once."""
        with self.database.transaction() as connection:
            _refuse_erased(connection, person_id)
            return push.add(connection, person_id, fingerprint, sealed, actor)

    def remove_subscription(self, person_id: str, public_id: str, actor: str) -> bool:
        with self.database.transaction() as connection:
            return push.remove(connection, person_id, public_id, actor)

    def subscriptions(self, person_ids: list[str]) -> list[push.Subscription]:
        return push.of(self.database.reader(), person_ids)

    def service_key(self, name: str) -> tuple[bytes, str, str] | None:
        """(wrapped, server key id, public part) of one of the service's own keys."""
        return push.service_key(self.database.reader(), name)

    def add_service_key(self, name: str, wrapped: bytes, key_id: str, public: str):
        """Keep the first key of `name` (another process may have stored one: it stays)."""
        with self.database.transaction() as connection:
            push.add_service_key(connection, name, wrapped, key_id, public)
        return self.service_key(name)

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

    def upsert(
        self,
        table: str,
        person_id: str,
        rows: Sequence[Write | tuple],
        actor: str,
        action: str,
        by_id: bool = False,
    ) -> list[Upserted]:
        """Store each write as Nightscout does: a record with the same key (or, `by_id`, the
        same public id) is replaced when its content differs (the previous sealed content
        goes to `replaced`), kept when it is the same; otherwise a new record with a random
        id. One transaction, with its audit line (counts only)."""
        if table not in RECORD_TABLES:
            raise ValueError(f"no record table {table!r}")
        created = now()
        result: list[Upserted] = []
        with self.database.transaction() as connection:
            _refuse_erased(connection, person_id)
            self._flush_reads(connection, self._read_window())
            writes = [Write(*r) for r in rows]
            stamps = iter(_server_times(connection, len(writes), person_id))
            for write in writes:
                if by_id:
                    where, values = "public_id = ?", (write.public_id,)
                elif table == "entries":  # a reading's key is of its time: one time to look at
                    where, values = "date_ms = ? AND fingerprint = ?", (write.date_ms, write.key)
                else:
                    where, values = "fingerprint = ?", (write.key,)
                found = connection.execute(
                    f"SELECT id, public_id, date_ms, content, sealed, srv_modified FROM {table}"
                    f" WHERE person_id = ? AND {where}",
                    (person_id, *values),
                ).fetchone()
                stamp = next(stamps)
                if found is None:
                    public_id = write.public_id or _new_public_id()
                    new_id = _insert_unique(
                        connection,
                        f"INSERT INTO {table} (person_id, date_ms, fingerprint, sealed, created,"
                        " public_id, content, srv_created, srv_modified, identifier) VALUES"
                        " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            person_id,
                            write.date_ms,
                            write.key,
                            write.sealed,
                            created,
                            public_id,
                            write.content,
                            stamp,
                            stamp,
                            write.identifier,
                        ),
                        new_id=True,
                    )
                    result.append(Upserted(new_id, public_id, "new", write.date_ms, None, stamp))
                    continue
                if write.content is not None and found["content"] == write.content:
                    result.append(
                        Upserted(
                            found["id"],
                            found["public_id"],
                            "same",
                            found["date_ms"],
                            None,
                            found["srv_modified"],
                        )
                    )
                    continue
                _keep_previous(connection, table, person_id, found, "replaced", actor, created)
                _insert_unique(
                    connection,
                    f"UPDATE {table} SET date_ms = ?, fingerprint = ?, sealed = ?, content = ?,"
                    " srv_modified = ?, identifier = COALESCE(?, identifier) WHERE id = ? AND"
                    " date_ms = ?",
                    (
                        write.date_ms,
                        write.key,
                        write.sealed,
                        write.content,
                        stamp,
                        write.identifier,
                        found["id"],
                        found["date_ms"],
                    ),
                )
                result.append(
                    Upserted(
                        found["id"],
                        found["public_id"],
                        "replaced",
                        write.date_ms,
                        found["date_ms"],
                        stamp,
                    )
                )
            counts = {o: sum(u.outcome == o for u in result) for o in ("new", "same", "replaced")}
            audit(
                connection,
                actor,
                action,
                person_id,
                {
                    "received": len(result),
                    "stored": counts["new"],
                    "repeated": counts["same"],
                    "replaced": counts["replaced"],
                },
            )
        return result

    def add_entries(self, person_id: str, rows, actor: str) -> list[Upserted]:
        """Readings (date_ms, key, sealed[, content]): a repeat of the same type and time
        replaces the stored value when it differs (Nightscout's upsert)."""
        return self.upsert("entries", person_id, rows, actor, "upload_entries")

    def add_treatments(self, person_id: str, rows, actor: str, by_id=False) -> list[Upserted]:
        return self.upsert("treatments", person_id, rows, actor, "upload_treatments", by_id)

    def existing_ids(self, table: str, person_id: str, public_ids: list[str]) -> set[str]:
        """Which of `public_ids` name a record of this person in `table`."""
        if table not in RECORD_TABLES:
            raise ValueError(f"no record table {table!r}")
        found: set[str] = set()
        for start in range(0, len(public_ids), 500):
            chunk = public_ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for row in self.database.query(
                f"SELECT public_id FROM {table} WHERE person_id = ? AND public_id IN ({marks})",
                (person_id, *chunk),
            ):
                found.add(row["public_id"])
        return found

    def delete(self, table: str, person_id: str, public_id: str, actor: str) -> int | None:
        """Delete a person's record by its id, keeping its sealed content in `replaced`;
        the deleted record's time, or None when the person has no record of that id."""
        if table not in RECORD_TABLES:
            raise ValueError(f"no record table {table!r}")
        with self.database.transaction() as connection:
            found = connection.execute(
                f"SELECT id, public_id, date_ms, sealed, identifier, srv_created FROM {table}"
                " WHERE person_id = ? AND public_id = ?",
                (person_id, public_id),
            ).fetchone()
            if found is not None:
                _keep_previous(connection, table, person_id, found, "deleted", actor, now())
                _bury(connection, person_id, table, found)
                connection.execute(
                    f"DELETE FROM {table} WHERE id = ? AND date_ms = ?",
                    (found["id"], found["date_ms"]),
                )
            audit(
                connection,
                actor,
                f"delete_{table}",
                person_id,
                {"id": public_id, "deleted": int(found is not None)},
            )
        return None if found is None else int(found["date_ms"])

    def replaced(self, person_id: str, table: str | None = None) -> list[dict[str, Any]]:
        """The previous contents of corrected or deleted records, oldest change first (sealed:
        `sealed` opens with the record kind of `record_table`)."""
        rows = self.database.query(
            "SELECT record_table, public_id, date_ms, sealed, change, actor, created FROM"
            " replaced WHERE person_id = ? AND (CAST(? AS TEXT) IS NULL OR record_table = ?)"
            " ORDER BY id",
            (person_id, table, table),
        )
        return [dict(row) | {"sealed": bytes(row["sealed"])} for row in rows]

    # -- Nightscout documents (devicestatus, profile): stored whole, sealed --------------------

    def add_documents(
        self, person_id: str, collection: str, rows: Sequence[tuple], actor: str
    ) -> list[str]:
        """Store (date_ms, sealed[, key, identifier]) documents of `collection` (`key`: a
        fingerprint of what makes a document the same one, for API v3's deduplication;
        `identifier`: of the identifier a v3 client gave it); returns their new ids."""
        if collection not in COLLECTIONS:
            raise ValueError(f"no collection {collection!r}")
        created, ids = now(), []
        with self.database.transaction() as connection:
            _refuse_erased(connection, person_id)
            stamps = _server_times(connection, len(rows), person_id)
            for (date_ms, sealed, *more), stamp in zip(rows, stamps, strict=True):
                key, identifier = [*more, None, None][:2]
                public_id = _new_public_id()
                connection.execute(
                    "INSERT INTO documents (person_id, collection, public_id, date_ms, sealed,"
                    " created, fingerprint, identifier, srv_created, srv_modified) VALUES"
                    " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        person_id,
                        collection,
                        public_id,
                        date_ms,
                        sealed,
                        created,
                        key,
                        identifier,
                        stamp,
                        stamp,
                    ),
                )
                ids.append(public_id)
            audit(connection, actor, f"upload_{collection}", person_id, {"received": len(rows)})
        return ids

    def replace_document(
        self,
        person_id: str,
        collection: str,
        public_id: str,
        row: tuple[int, bytes, str | None, str | None],
        actor: str,
    ) -> int | None:
        """API v3's update of a stored document (date_ms, sealed, key, identifier): its new
        server modification time, or None when the person has no document of that id."""
        date_ms, sealed, key, identifier = row
        with self.database.transaction() as connection:
            _refuse_erased(connection, person_id)
            (stamp,) = _server_times(connection, 1, person_id)
            changed = connection.execute(
                "UPDATE documents SET date_ms = ?, sealed = ?, fingerprint = ?, identifier ="
                " COALESCE(?, identifier), srv_modified = ? WHERE person_id = ? AND"
                " collection = ? AND public_id = ?",
                (date_ms, sealed, key, identifier, stamp, person_id, collection, public_id),
            ).rowcount
            audit(
                connection,
                actor,
                f"update_{collection}",
                person_id,
                {"id": public_id, "updated": changed},
            )
        return stamp if changed else None

    def delete_document(self, person_id: str, collection: str, public_id: str, actor: str) -> bool:
        """Delete a document, leaving its tombstone for API v3's history."""
        with self.database.transaction() as connection:
            found = connection.execute(
                "SELECT id, public_id, date_ms, sealed, identifier, srv_created FROM documents"
                " WHERE person_id = ? AND collection = ? AND public_id = ?",
                (person_id, collection, public_id),
            ).fetchone()
            if found is not None:
                _bury(connection, person_id, collection, found)
                connection.execute("DELETE FROM documents WHERE id = ?", (found["id"],))
            audit(
                connection,
                actor,
                f"delete_{collection}",
                person_id,
                {"id": public_id, "deleted": int(found is not None)},
            )
        return found is not None

    # -- Nightscout API v3: records by identifier and by server modification time ------------

    def _live(self, collection: str) -> tuple[str, str, tuple]:
        """(table, extra condition, its parameters) of a v3 collection's stored records."""
        if collection not in V3_TABLES:
            raise ValueError(f"no collection {collection!r}")
        table = V3_TABLES[collection]
        if table == "documents":
            return table, " AND collection = ?", (collection,)
        return table, "", ()

    def v3_find(
        self, collection: str, person_id: str, column: str, values: Sequence[str]
    ) -> SealedRow | None:
        """The person's stored record of `collection` whose `column` (public_id, identifier
        or fingerprint) is one of `values`."""
        if column not in ("public_id", "identifier", "fingerprint") or not values:
            return None
        table, extra, more = self._live(collection)
        marks = ", ".join("?" * len(values))
        rows = self.database.query(
            f"SELECT id, date_ms, sealed, public_id, srv_modified, srv_created FROM {table}"
            f" WHERE person_id = ?{extra} AND {column} IN ({marks}) ORDER BY id LIMIT 1",
            (person_id, *more, *values),
        )
        return _v3_row(rows[0], collection) if rows else None

    def v3_buried(self, collection: str, person_id: str, values: Sequence[str]) -> bool:
        """Whether a deleted record of `collection` had one of `values` as id or identifier."""
        if not values:
            return False
        marks = ", ".join("?" * len(values))
        return bool(
            self.database.query(
                "SELECT 1 FROM tombstones WHERE person_id = ? AND collection = ? AND"
                f" (public_id IN ({marks}) OR identifier IN ({marks})) LIMIT 1",
                (person_id, collection, *values, *values),
            )
        )

    def v3_rows(
        self,
        collection: str,
        person_id: str,
        bounds: dict[str, tuple[int | None, int | None]],
        order: str,
        descending: bool,
        limit: int,
        offset: int = 0,
    ) -> list[SealedRow]:
        """Stored records within `bounds` (column -> (low, high), inclusive; date_ms,
        srv_modified, srv_created), ordered by `order` (one of those, then id)."""
        table, extra, more = self._live(collection)
        columns = ("date_ms", "srv_modified", "srv_created")
        if order not in columns or not set(bounds) <= set(columns):
            raise ValueError("v3 rows are bounded and ordered by their times")
        where, parameters = "", []
        for column, (low, high) in bounds.items():
            where += f" AND {column} >= ? AND {column} <= ?"
            parameters += [-(2**62) if low is None else low, 2**62 if high is None else high]
        way = "DESC" if descending else "ASC"
        rows = self.database.query(
            f"SELECT id, date_ms, sealed, public_id, srv_modified, srv_created FROM {table}"
            f" WHERE person_id = ?{extra}{where} ORDER BY {order} {way}, id {way} LIMIT ?"
            " OFFSET ?",
            (person_id, *more, *parameters, limit, offset),
        )
        return [_v3_row(row, collection) for row in rows]

    def v3_history(
        self, collection: str, person_id: str, after_ms: int, inclusive: bool, limit: int
    ) -> list[SealedRow]:
        """Records stored, changed or deleted after `after_ms` (server modification time),
        oldest change first: the live ones and the tombstones of deleted ones (`deleted`)."""
        table, extra, more = self._live(collection)
        op = ">=" if inclusive else ">"
        rows = self.database.query(
            "SELECT * FROM (SELECT id, date_ms, sealed, public_id, srv_modified, srv_created,"
            f" 0 AS deleted FROM {table} WHERE person_id = ?{extra} AND srv_modified {op} ?"
            " UNION ALL SELECT id, date_ms, sealed, public_id, srv_modified, srv_created,"
            " 1 AS deleted FROM tombstones WHERE person_id = ? AND collection = ? AND"
            f" srv_modified {op} ?) AS found ORDER BY srv_modified, deleted, id LIMIT ?",
            (person_id, *more, after_ms, person_id, collection, after_ms, limit),
        )
        return [_v3_row(row, collection, bool(row["deleted"])) for row in rows]

    def last_modified(self, person_id: str) -> dict[str, int]:
        """The newest server modification time of each collection (changes and deletions);
        collections without any record are left out."""
        found: dict[str, int] = {}
        for collection in V3_TABLES:
            table, extra, more = self._live(collection)
            (row,) = self.database.query(
                f"SELECT MAX(srv_modified) AS m FROM {table} WHERE person_id = ?{extra}",
                (person_id, *more),
            )
            (buried,) = self.database.query(
                "SELECT MAX(srv_modified) AS m FROM tombstones WHERE person_id = ? AND"
                " collection = ?",
                (person_id, collection),
            )
            newest = max(row["m"] or 0, buried["m"] or 0)
            if newest:
                found[collection] = int(newest)
        return found

    def documents(
        self,
        person_id: str,
        collection: str,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[SealedRow]:
        """Newest first, as `entries`."""
        low = since_ms if since_ms is not None else -(2**62)
        high = until_ms if until_ms is not None else 2**62
        rows = self.database.query(
            "SELECT id, date_ms, sealed, public_id FROM documents WHERE person_id = ? AND"
            " collection = ? AND date_ms >= ? AND date_ms <= ? ORDER BY date_ms DESC, id DESC"
            " LIMIT ? OFFSET ?",
            (person_id, collection, low, high, limit, offset),
        )
        return [
            SealedRow(row["id"], row["date_ms"], bytes(row["sealed"]), row["public_id"])
            for row in rows
        ]

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
            f"SELECT id, date_ms, sealed, public_id FROM {table} WHERE person_id = ? AND"
            " date_ms >= ? AND date_ms <= ? ORDER BY date_ms DESC, id DESC LIMIT ? OFFSET ?",
            (person_id, low, high, limit, offset),
        )
        return [
            SealedRow(row["id"], row["date_ms"], bytes(row["sealed"]), row["public_id"])
            for row in rows
        ]

    def entry_blobs(
        self, person_id: str, since_ms: int | None, until_ms: int | None, limit: int
    ) -> list[tuple[str, bytes]]:
        """(public id, sealed) of the newest `limit` entries, as `entries` orders them: a
        follower's read, without building a row object per record (two columns, plain
        tuples; `entries_by_time` serves the order and the limit)."""
        low = since_ms if since_ms is not None else -(2**62)
        high = until_ms if until_ms is not None else 2**62
        return self.database.tuples(
            "SELECT public_id, sealed FROM entries WHERE person_id = ? AND date_ms >= ? AND"
            " date_ms <= ? ORDER BY date_ms DESC, id DESC LIMIT ?",
            (person_id, low, high, limit),
        )

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
        """Store decisions (reading date_ms, model id, model sha256, model kind, sealed): the
        model by reference (`alert_models`, one row per model), the time in seconds."""
        created = int(time.time())
        with self.database.transaction() as connection:
            _refuse_erased(connection, person_id)
            self._flush_reads(connection, self._read_window())
            models: dict[tuple[int, str, str], int] = {}
            for _, m, sha, kind, _ in rows:
                if (m, sha, kind) not in models:
                    models[m, sha, kind] = _alert_model(connection, m, sha, kind)
            connection.executemany(
                "INSERT INTO alerts (person_id, date_ms, created_s, model, sealed) VALUES"
                " (?, ?, ?, ?, ?)",
                [
                    (
                        person_id,
                        d,
                        created,
                        models[m, sha, kind],
                        _stored_alert(d, m, sha, kind, sealed),
                    )
                    for d, m, sha, kind, sealed in rows
                ],
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
            "SELECT a.id, a.date_ms, a.created_s, m.model_id, m.sha256 AS model_sha256, m.kind"
            " AS model_kind, a.sealed FROM alerts AS a JOIN alert_models AS m ON m.id = a.model"
            " WHERE a.person_id = ? AND a.date_ms >= ? AND a.date_ms <= ?"
            " ORDER BY a.date_ms DESC, a.id DESC LIMIT ?",
            (person_id, low, high, limit),
        )
        return [
            StoredAlert(
                row["id"],
                row["date_ms"],
                _iso_seconds(row["created_s"]),
                row["model_id"],
                row["model_sha256"],
                row["model_kind"],
                _read_alert(row),
            )
            for row in rows
        ]

    # -- one person's decisions in order -----------------------------------------------------

    @contextmanager
    def decisions_of(self, person_id: str) -> Iterator[None]:
        """Hold the write lock while one person's readings are decided: the alert state is
        read from the stored decisions and the new ones stored in one transaction, so two
        processes (or threads) deciding for one person take turns and the second sees the
        first's alert (two uploads at once raised the same alert twice). SQLite's lock is the
        whole file's (`BEGIN IMMEDIATE`); PostgreSQL's is the person's row (`_lock_person`),
        so other people's decisions run beside."""
        with self.database.transaction() as connection:
            _lock_person(connection, person_id)
            yield

    # -- personalization jobs ----------------------------------------------------------------

    def add_job(self, person_id: str, requested_by: str) -> Job:
        with self.database.transaction() as connection:
            _lock_person(connection, person_id)  # two requests at once: one job
            if not consent.granted(connection, person_id, consent.PERSONALIZATION):
                raise consent.NotConsented(
                    "the patient has not consented to personalization (or withdrew it): "
                    "nothing is personalized; the patient grants it on their page or with "
                    'PUT /api/v1/people/me/consent {"personalization": true}'
                )
            busy = connection.execute(
                "SELECT id FROM jobs WHERE person_id = ? AND status IN ('queued', 'running')",
                (person_id,),
            ).fetchone()
            if busy:
                raise TailormlError(
                    f"a personalization of this person is already under way (job {busy['id']});"
                    " wait for it to finish"
                )
            job_id = insert_id(
                connection,
                "INSERT INTO jobs (person_id, requested_by, status, created) VALUES (?, ?,"
                " 'queued', ?)",
                (person_id, requested_by, now()),
            )
            audit(connection, requested_by, "request_personalization", person_id, {"job": job_id})
        return self.job(job_id)

    def job(self, job_id: int) -> Job:
        return job_queue.get(self.database.reader(), job_id)

    def jobs(self, person_id: str) -> list[Job]:
        rows = self.database.query(
            "SELECT * FROM jobs WHERE person_id = ? ORDER BY id DESC", (person_id,)
        )
        return [job_queue.job_of(row) for row in rows]

    def claim_job(self, owner: str, lease_seconds: float = job_queue.LEASE_SECONDS) -> Job | None:
        """The oldest queued job, now running under `owner`'s lease (one process gets it);
        jobs whose lease expired go back to the queue first (`registry.job_queue`)."""
        with self.database.transaction() as connection:
            return job_queue.claim(connection, owner, lease_seconds)

    def renew_lease(
        self, job_id: int, owner: str, lease_seconds: float = job_queue.LEASE_SECONDS
    ) -> None:
        """Keep running `job_id`: `LeaseLost` when the lease is no longer `owner`'s."""
        with self.database.transaction() as connection:
            job_queue.renew(connection, job_id, owner, lease_seconds)

    def finish_job(
        self,
        job_id: int,
        status: str,
        owner: str,
        session_id: int | None = None,
        error: str | None = None,
    ) -> Job:
        """Done or failed, by the owner of the job's live lease (else `LeaseLost`)."""
        with self.database.transaction() as connection:
            job_queue.finish(connection, job_id, status, owner, session_id, error)
        return self.job(job_id)

    def release_job(self, job_id: int, owner: str) -> bool:
        """Back to the queue now (the server running it stops); False if not `owner`'s."""
        with self.database.transaction() as connection:
            return job_queue.release(connection, job_id, owner)

    # -- the audit log and erasure -------------------------------------------------------------

    def record(self, actor: str, action: str, person_id: str | None, details: dict[str, Any]):
        """An audit line for a read (a write records itself in its own transaction).

        Reads (`read_*` with at most a count of records returned) are batched per reader,
        person, kind of read and hour (`READ_BATCH_SECONDS`): the hour's first read is
        written at once, as a single read always was, so that who opened whose data is on
        disk whatever happens to this process; the hour's further reads become one line
        with how many they were, the records they returned in all and the first and last
        one's time. That line is written when the hour is over (at the next read, or with
        the next upload's transaction, of this process), before the audit log or an
        export is read (`flush_reads`), and when the process exits; a process killed
        without exiting (SIGKILL, a crash of the machine) loses the count of its current
        hour's further reads, never the fact that the reader read. Every other line is
        written at once."""
        if not (action.startswith("read_") and set(details) <= {"returned"}):
            with self.database.transaction() as connection:
                audit(connection, actor, action, person_id, details)
            return
        stamp, window = now(), self._read_window()
        with self._reads_lock:
            key = (window, actor, action, person_id)
            opening = key not in self._reads
            batch = self._reads.setdefault(key, {"reads": 0})
            if not opening:
                batch["reads"] += 1
                batch.setdefault("first", stamp)
                batch["last"] = stamp
                if "returned" in details:
                    batch["returned"] = batch.get("returned", 0) + int(details["returned"])
            due = any(k[0] < window for k in self._reads)
        if due:
            self.flush_reads(before_window=window)
        if opening:
            with self.database.transaction() as connection:
                audit(connection, actor, action, person_id, details)

    @staticmethod
    def _read_window() -> int:
        return int(time.time() // READ_BATCH_SECONDS)

    def flush_reads(self, before_window: int | None = None) -> None:
        """Write the batched read lines (those of windows before `before_window`; all)."""
        with self._reads_lock:
            if not any(before_window is None or k[0] < before_window for k in self._reads):
                return
        with self.database.transaction() as connection:
            self._flush_reads(connection, before_window)

    def _flush_reads(self, connection, before_window: int | None = None) -> None:
        """Inside the caller's transaction: the batched read lines are written with it (an
        upload writes those of past windows: the current one keeps collecting)."""
        with self._reads_lock:
            keys = [k for k in self._reads if before_window is None or k[0] < before_window]
            batches = [(k, self._reads.pop(k)) for k in sorted(keys, key=str)]
        for (_, actor, action, person_id), batch in batches:
            if batch["reads"] == 0:  # the window's first read only: its line is written
                continue
            if batch["reads"] == 1:  # one further read: its line as a read's always was
                batch = {k: v for k, v in batch.items() if k == "returned"}
            audit(connection, actor, action, person_id, batch)

    def erase(self, person_id: str, actor: str, retired_models: list[int]) -> dict[str, int]:
        """Delete a person's readings, treatments, alerts and data key; keep the account row
        (erased, revoked) and the audit log, which says what was deleted and by whom."""
        counts: dict[str, int] = {}
        with self.database.transaction() as connection:
            if dialect_of(connection) == "sqlite":
                connection.execute("PRAGMA secure_delete=ON")
            else:  # deleted rows stay in the table's pages until VACUUM reuses them
                _lock_person(connection, person_id)
            for table in (
                "entries",
                "treatments",
                "alerts",
                "documents",
                "replaced",
                "tombstones",
                "push_subscriptions",
            ):
                counts[table] = connection.execute(
                    f"DELETE FROM {table} WHERE person_id = ?", (person_id,)
                ).rowcount
            connection.execute(
                "DELETE FROM assignments WHERE patient_id = ? OR clinician_id = ?",
                (person_id, person_id),
            )
            _end_review_sessions(connection, person_id)
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

    # -- housekeeping: partitions and retention ------------------------------------------

    def maintain(self, now_ms: int | None = None) -> dict[str, list[str]] | None:
        """PostgreSQL: the monthly partitions due (`registry.partitions.maintain`); the
        partitions made, or None when another process is at it. SQLite: nothing to do."""
        if self.database.dialect == "sqlite":
            return {}
        return self.database.maintain(now_ms)

    def partitions(self) -> dict[str, dict]:
        """PostgreSQL: each partitioned table's months and rows (`registry.partitions.summary`);
        SQLite: none."""
        if self.database.dialect == "sqlite":
            return {}
        return partitions.summary(self.database.reader().raw)

    def apply_retention(self, days: int, actor: str, now_ms: int | None = None) -> dict:
        """Delete readings and alert decisions (and the kept previous versions of readings)
        of every person from before the month that holds the day `days` ago
        (`registry.retention`); what went, with the cut ({} when nothing was dated before
        it). Each transaction that deletes writes its audit line, so what is gone is on
        record even if the process dies half-way.

        PostgreSQL drops whole monthly partitions (`registry.partitions.drop_before`), one
        transaction and one line; SQLite deletes the rows `RETENTION_BATCH` per table and
        transaction (a line each), so that uploads wait at most one small transaction for
        the single writer."""
        at = int(time.time() * 1000) if now_ms is None else now_ms
        cut = retention.cut_ms(days, at)
        base = {"kept_days": days, "before": _iso_seconds(cut // 1000)}
        if self.database.dialect == "sqlite":
            done = self._delete_before(cut, actor, base)
        else:
            with self.database.transaction() as connection:
                done = partitions.drop_before(connection.raw, cut)
                done["replaced"] = _delete_replaced_before(connection, cut)
                if any(retention.removed(done).values()):
                    audit(connection, actor, "retention", None, base | done)
        return base | done if any(retention.removed(done).values()) else {}

    def _delete_before(self, cut: int, actor: str, base: dict) -> dict:
        """SQLite's retention: the rows before `cut`, a batch per table and transaction."""
        totals = {table: 0 for table in ("entries", "alerts", "replaced")}
        old = [  # looked for outside a transaction: the writer is not held to find none
            self.database.query(f"SELECT 1 FROM {table} WHERE date_ms < ? LIMIT 1", (cut,))
            for table in ("entries", "alerts")
        ]
        while any(old):
            with self.database.transaction() as connection:
                counts = {
                    table: connection.execute(
                        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE"
                        " date_ms < ? LIMIT ?)",
                        (cut, RETENTION_BATCH),
                    ).rowcount
                    for table in ("entries", "alerts")
                }
                counts["replaced"] = _delete_replaced_before(connection, cut)["rows"]
                if any(counts.values()):
                    details = {table: {"rows": count} for table, count in counts.items()}
                    audit(connection, actor, "retention", None, base | details)
            for table, count in counts.items():
                totals[table] += count
            if all(count < RETENTION_BATCH for count in counts.values()):
                break
        return {table: {"rows": count} for table, count in totals.items()}


def _delete_replaced_before(connection, cut: int) -> dict[str, int]:
    deleted = connection.execute(
        "DELETE FROM replaced WHERE record_table = 'entries' AND date_ms < ?", (cut,)
    ).rowcount
    return {"rows": int(deleted)}


def _alert_model(connection, model_id: int, sha256: str, kind: str) -> int:
    """The `alert_models` row of a model (added the first time a decision names it)."""
    connection.execute(
        "INSERT OR IGNORE INTO alert_models (model_id, sha256, kind) VALUES (?, ?, ?)",
        (model_id, sha256, kind),
    )
    (found,) = connection.execute(
        "SELECT id FROM alert_models WHERE model_id = ? AND sha256 = ? AND kind = ?",
        (model_id, sha256, kind),
    ).fetchone()
    return int(found)


def _iso_seconds(seconds: int) -> str:
    """A time stored in whole seconds as `registry.database.now` writes it."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _stored_alert(date_ms: int, model_id: int, sha256: str, kind: str, sealed: bytes) -> bytes:
    """What `alerts` keeps of a sealed decision: a compact one without its context (the
    reading time and model, which are this row's columns), anything else as given."""
    split = formats.detach(sealed)
    if split is not None and split[1] == formats.alert_context(date_ms, model_id, sha256, kind):
        return split[0]
    return sealed


def _read_alert(row: sqlite3.Row) -> bytes:
    """A stored decision as it was sealed: a compact one gets its context back."""
    sealed = bytes(row["sealed"])
    if sealed[:1] != bytes([formats.ALERT_FORMAT]):
        return sealed
    context = formats.alert_context(
        row["date_ms"], row["model_id"], row["model_sha256"], row["model_kind"]
    )
    return formats.attach(sealed, context)


def _lock_person(connection, person_id: str):
    """Inside a write transaction: the person's `people` row (None: no such person), locked
    on PostgreSQL until the transaction ends (`FOR NO KEY UPDATE`: a second writer for the
    same person waits; foreign-key checks and other people's writes do not). On SQLite the
    write transaction holds the whole file already."""
    lock = "" if dialect_of(connection) == "sqlite" else " FOR NO KEY UPDATE"
    return connection.execute(
        f"SELECT erased FROM people WHERE id = ?{lock}", (person_id,)
    ).fetchone()


def _refuse_erased(connection, person_id: str) -> None:
    """Inside the writing transaction: an upload racing an erasure stores nothing once the
    erasure has committed (checked outside, it could store after the erasure). Holds the
    person's lock (`_lock_person`) for the rest of the transaction."""
    row = _lock_person(connection, person_id)
    if row is not None and row["erased"] is not None:
        raise TailormlError(f"person {person_id} has been erased; nothing was stored")


def _end_review_sessions(connection, person_id: str) -> int:
    """Inside a revoking, rotating or erasing transaction: the person's browser sessions end
    with it (a session is never worth more than the token it was made from)."""
    return connection.execute(
        "DELETE FROM review_sessions WHERE person_id = ?", (person_id,)
    ).rowcount


def _new_public_id() -> str:
    """24 hex digits like a MongoDB ObjectId, random: nothing about when, or how many."""
    return secrets.token_hex(12)


def _insert_unique(connection, sql: str, parameters: tuple, new_id: bool = False):
    """Run `sql`; a unique key it breaks is the caller's error. `new_id`: the id of the
    inserted row (`registry.database.insert_id`)."""
    try:
        if new_id:
            return insert_id(connection, sql, parameters)
        return connection.execute(sql, parameters)
    except INTEGRITY_ERRORS:
        raise TailormlError(
            "another stored record has this key (the same time and type, or identifier) or id;"
            " change that one instead"
        ) from None


def _keep_previous(connection, table, person_id, found, change, actor, created) -> None:
    connection.execute(
        "INSERT INTO replaced (person_id, record_table, public_id, date_ms, sealed, change,"
        " actor, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            person_id,
            table,
            found["public_id"],
            found["date_ms"],
            found["sealed"],
            change,
            actor,
            created,
        ),
    )


def _server_times(connection, count: int, person_id: str) -> list[int]:
    """`count` server modification times (epoch ms) for a write of `person_id`'s records,
    each later than every one given before, so a client reading a history page by page
    (`srvModified` after the last it saw) never skips a record written in the same
    millisecond as another. On SQLite one clock for every writer and process, as
    Nightscout's (the file's write lock orders the transactions anyway). On PostgreSQL one
    clock per person (`srv_clocks`; a history is one person's): its row stays locked until
    the transaction ends, so the person's times are in commit order, while other people's
    uploads do not wait for this one's clock."""
    now_ms = int(time.time() * 1000)
    if dialect_of(connection) != "sqlite":
        if not count:
            return []
        # one statement: the clock row is created, moved on and locked at once
        (last,) = connection.execute(
            "INSERT INTO srv_clocks (person_id, last_ms) VALUES (?, ?) ON CONFLICT (person_id)"
            " DO UPDATE SET last_ms = GREATEST(srv_clocks.last_ms + ?, excluded.last_ms)"
            " RETURNING last_ms",
            (person_id, now_ms + count - 1, count),
        ).fetchone()
        return list(range(last - count + 1, last + 1))
    row = connection.execute("SELECT last_ms FROM srv_clock WHERE id = 1").fetchone()
    first = now_ms
    if row is not None:
        first = max(first, row["last_ms"] + 1)
    if count:
        connection.execute(
            "INSERT INTO srv_clock (id, last_ms) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET"
            " last_ms = excluded.last_ms",
            (first + count - 1,),
        )
    return list(range(first, first + count))


def _bury(connection, person_id: str, collection: str, found) -> None:
    """The tombstone of a deleted record: what it held (sealed), its ids and when it was
    deleted, for API v3's history (`isValid: false`)."""
    (stamp,) = _server_times(connection, 1, person_id)
    connection.execute(
        "INSERT INTO tombstones (person_id, collection, public_id, identifier, date_ms,"
        " srv_created, srv_modified, sealed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            person_id,
            collection,
            found["public_id"],
            found["identifier"],
            found["date_ms"],
            found["srv_created"],
            stamp,
            found["sealed"],
        ),
    )


def _v3_row(row: sqlite3.Row, collection: str, deleted: bool = False) -> SealedRow:
    return SealedRow(
        row["id"],
        row["date_ms"],
        bytes(row["sealed"]),
        row["public_id"],
        row["srv_modified"],
        row["srv_created"],
        collection,
        deleted,
    )
