"""The registry's database: connections, transactions and the append-only audit log.

Two backends behind one interface (`transaction()`, `query`, `tuples`, `reader`, `close`,
`dialect`), chosen by `open_database` from where the data lives:

- **SQLite** (`Database`, a data directory's file): the embedded default. One file,
  transactions and a write-ahead log come with Python, and several processes (a
  personalization run, the service, its background worker) can share it safely: WAL mode,
  `BEGIN IMMEDIATE` for writers, a busy timeout.
- **PostgreSQL** (`registry.postgres.PostgresDatabase`, a `postgresql://` URL): for several
  API processes and hosts on one database.

How the SQL is written for both: once, in SQLite's dialect, and translated for PostgreSQL
statement by statement by `registry.dialect` -- a small, closed and tested translation of
the differences the registry actually uses (placeholders, `INSERT OR IGNORE`, `IS ?`,
column types, the append-only triggers), which refuses what it does not know. Where the
two differ in more than spelling (a table's columns, the id of an inserted row, a row
lock), each backend has its own code here (`table_columns`, `insert_id`, `for_update`).
Why not SQLAlchemy Core now: the store is ~180 hand-written statements whose plans were
measured on SQLite; Core's `text()` would pass them on untranslated (it does not rewrite
`?` or `INSERT OR IGNORE`), and rewriting them as expressions is a large change with the
risk of changing what each query does, for differences that are few and mechanical.

Schemas: on SQLite each module of the registry brings its own (`CREATE ... IF NOT EXISTS`)
and its idempotent `migrate`, applied when it opens the file; on PostgreSQL the schema is
versioned by Alembic's revisions (`registry.schema_versions`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from tailorml.errors import TailormlError
from tailorml.registry.audit_schema import AUDIT_SCHEMA


def _postgres_errors() -> tuple[tuple, tuple]:
    try:
        import psycopg
    except ImportError:  # the PostgreSQL driver is installed only where it is used
        return (), ()
    return (psycopg.IntegrityError,), (psycopg.Error,)


_PG_INTEGRITY, _PG_ERRORS = _postgres_errors()
#: a constraint refused a write, on either backend
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, *_PG_INTEGRITY)
#: anything the database itself raised, on either backend
DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, *_PG_ERRORS)


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


#: where a process started by the service (a personalization job, an ONNX export) finds
#: the PostgreSQL URL of `--database`: its environment, never its command line (which any
#: user of the machine can read, password included)
DATABASE_ENV = "TAILORML_DATABASE"

_shared: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()


def open_database(
    location: str | Path,
    schema: str,
    what: str = "--registry",
    synchronous: str = "FULL",
    migrate: Callable | None = None,
):
    """A `postgresql://` URL: the PostgreSQL store (`synchronous` is the server's own
    setting there, and `schema` and `migrate` are not used: the PostgreSQL schema is
    Alembic's revisions, `registry.schema_versions`); anything else: the SQLite file at
    that path.

    On PostgreSQL the stores of one process that open the same URL (the people store and
    the model registry of a service) share one `PostgresDatabase`, each adding its schema:
    a thread then holds one server connection, not one per store, which is what bounds a
    process's connections by its threads (docs/service.md, "Connections")."""
    if is_postgres_url(location):
        from tailorml.registry.postgres import PostgresDatabase

        url = str(location)
        with _shared_lock:
            found = _shared.get(url)
            if found is None:
                found = _shared[url] = PostgresDatabase(url, what)
        return found
    return Database(location, schema, what, synchronous, migrate)


def dialect_of(connection) -> str:
    """ "sqlite" or "postgresql": which SQL a connection of either backend speaks."""
    return "sqlite" if isinstance(connection, sqlite3.Connection) else connection.dialect


def for_update(connection, skip_locked: bool = False) -> str:
    """The row-lock clause of a SELECT inside a write transaction: nothing on SQLite (its
    write transaction holds the whole file), `FOR UPDATE [SKIP LOCKED]` on PostgreSQL."""
    if dialect_of(connection) == "sqlite":
        return ""
    return " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"


def lock_key(connection, key: str) -> None:
    """Inside a write transaction: hold an exclusive lock named `key` until it ends (a
    transaction-level advisory lock on PostgreSQL; nothing on SQLite, whose write
    transaction holds the whole file). For writes that must take turns but share no row
    to lock, e.g. one individual's activations in the model registry."""
    if dialect_of(connection) != "sqlite":
        connection.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (key,))


def insert_id(connection, sql: str, parameters: tuple) -> int:
    """Run an INSERT into a table with an `id` primary key; the new row's id
    (`lastrowid` on SQLite, `RETURNING id` on PostgreSQL)."""
    if dialect_of(connection) == "sqlite":
        return int(connection.execute(sql, parameters).lastrowid)
    (found,) = connection.execute(sql + " RETURNING id", parameters).fetchone()
    return int(found)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Database:
    """One SQLite file with `schema` applied (plus the audit log's)."""

    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        schema: str,
        what: str = "--registry",
        synchronous: str = "FULL",
        migrate: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """`synchronous` FULL: every commit is on disk before it returns (survives a power
        loss); NORMAL: on disk at the next checkpoint, in the OS's hands before (survives a
        killed process, not a power loss), about 5 ms less per commit.

        `migrate` brings a file written by an older version up to `schema` (columns a
        `CREATE TABLE IF NOT EXISTS` cannot add to an existing table, indexes on them): it
        runs after the schema, in one `BEGIN IMMEDIATE` transaction, every time the file is
        opened, so it must be idempotent (`add_columns` is)."""
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.synchronous = synchronous
        self.path = Path(path)
        self._local = threading.local()
        try:
            with self.connect() as connection:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.executescript(AUDIT_SCHEMA + schema)
                if migrate is not None:
                    connection.execute("BEGIN IMMEDIATE")
                    try:
                        migrate(connection)
                    except BaseException:
                        connection.execute("ROLLBACK")
                        raise
                    connection.execute("COMMIT")
        except sqlite3.DatabaseError as error:
            raise TailormlError(
                f"{self.path} is not a tailorml registry ({error}); check {what}"
            ) from None

    def connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=30000")
        connection.execute(f"PRAGMA synchronous={self.synchronous}")
        return connection

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened once. Why not one per call: closing the last
        connection to a WAL database checkpoints it (about 10 ms), which every request of
        the service would otherwise pay."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self.connect()
        return connection

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; anything raised inside rolls everything back. Inside
        another transaction of this thread it is a savepoint of that one: its writes are
        undone if it fails, and committed with the outer transaction."""
        connection = self._connection()
        if connection.in_transaction:
            with self._savepoint(connection):
                yield connection
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    @staticmethod
    @contextmanager
    def _savepoint(connection: sqlite3.Connection) -> Iterator[None]:
        connection.execute("SAVEPOINT inner")
        try:
            yield
        except BaseException:
            connection.execute("ROLLBACK TO inner")
            connection.execute("RELEASE inner")
            raise
        connection.execute("RELEASE inner")

    def query(self, sql: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        return self._connection().execute(sql, parameters).fetchall()

    def tuples(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        """Rows as plain tuples (no names): the hottest reads, without a row object each."""
        cursor = self._connection().cursor()
        cursor.row_factory = None
        return cursor.execute(sql, parameters).fetchall()

    def reader(self) -> sqlite3.Connection:
        """This thread's connection, for reads outside a transaction."""
        return self._connection()

    def storage(self) -> dict[str, str]:
        """What the store runs on, as API v3's status names it."""
        return {"storage": "sqlite", "version": sqlite3.sqlite_version}

    def table_bytes(self) -> dict[str, int]:
        """Bytes of every table and index after a checkpoint and VACUUM (SQLite's `dbstat`),
        largest first: what a measurement of the store's size reads."""
        connection = self._connection()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("VACUUM")
        rows = connection.execute(
            "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
        ).fetchall()
        return {name: int(size) for name, size in rows}

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def audit(
    connection: sqlite3.Connection,
    actor: str,
    action: str,
    individual: str | None,
    details: dict,
) -> None:
    """Append one line to the audit log, inside the caller's transaction (so a change and
    its record are written together or not at all)."""
    connection.execute(
        "INSERT INTO audit_log (created, actor, action, individual, details_json)"
        " VALUES (?, ?, ?, ?, ?)",
        (now(), actor, action, individual, json.dumps(details, sort_keys=True, default=str)),
    )


def table_columns(connection, table: str) -> set[str]:
    """The names of `table`'s columns (none: no such table)."""
    if dialect_of(connection) == "sqlite":
        return {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
    rows = connection.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema ="
        " current_schema() AND table_name = ?",
        (table,),
    ).fetchall()
    return {row[0] for row in rows}


def add_columns(connection, table: str, columns: dict[str, str]) -> list[str]:
    """Add each of `columns` (name -> SQL declaration) that `table` lacks; returns the
    names added (none on a file already migrated). SQLite's migrations only: a PostgreSQL
    database's columns come from its revisions (`registry.schema_versions`)."""
    present = table_columns(connection, table)
    added = [name for name in columns if name not in present]
    for name in added:
        connection.execute(f"ALTER TABLE {table} ADD COLUMN {name} {columns[name]}")
    return added
