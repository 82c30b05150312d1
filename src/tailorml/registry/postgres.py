"""The registry on a PostgreSQL server: `registry.database.Database`'s interface over psycopg 3.

Chosen by a URL (`postgresql://user@host/db`, see `registry.database.open_database`). The
store modules write their SQL once, in SQLite's dialect; `Connection.execute` translates
each statement (`registry.dialect`) and returns rows readable by name and by index, as
`sqlite3.Row`. What differs in behaviour, and how the store keeps its guarantees:

- **Transactions**: `transaction()` is BEGIN ... COMMIT (psycopg's, nested ones are
  savepoints), READ COMMITTED. SQLite's `BEGIN IMMEDIATE` made every write transaction
  the only one; here writers run side by side, so what relied on that takes a row lock:
  a person's writes lock their `people` row (`people._lock_person`: `FOR NO KEY UPDATE`,
  which foreign-key checks and other people's writes do not wait for), the job queue
  claims with `FOR UPDATE SKIP LOCKED`, and API v3's server clock is one row per person
  (`people._server_times`), locked until the write commits.
- **Connections**: one per thread, opened on first use, closed when the thread is gone,
  in autocommit mode outside a transaction (a read outside `transaction()` sees the newest
  committed state, as a WAL reader does). The stores of a process that open one URL share
  this object (`registry.database.open_database`), so a thread holds one connection: an API
  process's connections are bounded by its request threads (`tailorml serve --threads`,
  checked against the server's `max_connections` at start, docs/service.md).
- **Schema**: versioned by Alembic revisions (`registry.schema_versions`), brought up to
  this release's at open, in one transaction under an advisory lock (processes starting
  together wait for the first). The stores' SQLite-dialect schemas are not applied here:
  a change to them needs a revision (tests/test_schema_versions.py compares the two).
  Readings and decisions are partitioned by month (`registry.partitions`), whose coming
  months are made at open and hourly by the service's housekeeping.
- **Errors**: psycopg's `IntegrityError` is in `registry.database.INTEGRITY_ERRORS`, its
  `Error` in `DATABASE_ERRORS`.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq
from psycopg.rows import tuple_row

from tailorml.errors import TailormlError
from tailorml.registry import dialect, partitions, schema_versions

log = logging.getLogger(__name__)

# the server ends a session that idles this long inside a transaction (its locks go with it);
# the store's transactions run their statements back to back, well under a second apart
IDLE_IN_TRANSACTION = "120s"


def sqlalchemy_errors() -> tuple[type[Exception], ...]:
    """SQLAlchemy's wrapper of driver errors (Alembic connects through it)."""
    from sqlalchemy.exc import DBAPIError

    return (DBAPIError,)


class Row:
    """A row as `sqlite3.Row` reads: by index, by column name, `keys()`, `dict(row)`."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: tuple, index: dict[str, int]) -> None:
        self._values, self._index = values, index

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other) -> bool:
        return isinstance(other, Row) and self._values == other._values

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values, strict=True))!r})"


def _rows(cursor: psycopg.Cursor) -> Callable[[tuple], Row]:
    description = cursor.description or []
    index = {column.name: k for k, column in enumerate(description)}
    return lambda values: Row(tuple(values), index)


def _parameters(parameters) -> tuple:
    """SQLite stores booleans as 0/1 in INTEGER columns; PostgreSQL's BIGINT takes no bool."""
    return tuple(int(p) if isinstance(p, bool) else p for p in parameters)


class Cursor:
    """What the store reads of a `sqlite3.Cursor`: fetchone, fetchall, iteration, rowcount."""

    def __init__(self, cursor: psycopg.Cursor) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchone(self):
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchall(self) -> list:
        return self._cursor.fetchall() if self._cursor.description else []

    def __iter__(self):
        return iter(self.fetchall())


class Connection:
    """A psycopg connection that takes the store's SQLite-dialect statements."""

    dialect = "postgresql"

    def __init__(self, raw: psycopg.Connection) -> None:
        self.raw = raw

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def execute(self, sql: str, parameters=(), *, plain: bool = False) -> Cursor:
        """One statement; `plain`: rows as tuples (no names), for the hottest reads."""
        cursor = self.raw.cursor(row_factory=tuple_row if plain else _rows)
        cursor.execute(dialect.statement(sql), _parameters(parameters))
        return Cursor(cursor)

    def executemany(self, sql: str, rows) -> Cursor:
        cursor = self.raw.cursor(row_factory=_rows)
        cursor.executemany(dialect.statement(sql), [_parameters(row) for row in rows])
        return Cursor(cursor)


class PostgresDatabase:
    """A PostgreSQL database with `schema` applied (plus the audit log's)."""

    dialect = "postgresql"

    def __init__(self, url: str, what: str = "--database") -> None:
        self.url = url
        self.what = what
        self._local = threading.local()
        self._all: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()
        self._all_lock = threading.Lock()
        self._version: str | None = None
        # dropped without close() (a CLI command's store, a parent process's checks): its
        # connections close too, not only when their threads end (the main thread's: never)
        weakref.finalize(self, _close_all, self._all)
        reachable(url, what, lambda: schema_versions.upgrade(url))
        try:
            self.maintain()
        except psycopg.errors.LockNotAvailable:  # busy tables: the housekeeping tries again
            log.warning("the monthly partitions were not made at open (tables busy)")

    def maintain(self, now_ms: int | None = None) -> dict[str, list[str]] | None:
        """The monthly partitions due (`registry.partitions.maintain`)."""
        at = int(time.time() * 1000) if now_ms is None else now_ms
        return partitions.maintain(self._connection().raw, at)

    def storage(self) -> dict[str, str]:
        """What the store runs on, as API v3's status names it (the server's version)."""
        if self._version is None:
            number = self._connection().raw.info.server_version  # e.g. 160004
            self._version = f"{number // 10000}.{number % 10000}"
        return {"storage": "postgresql", "version": self._version}

    def connection_limit(self) -> tuple[int, int]:
        """(max_connections, superuser_reserved_connections) of the server: what all the
        processes of the service may hold together is the first less the second."""
        raw = self._connection().raw
        (limit,) = raw.execute("SHOW max_connections").fetchone()
        (reserved,) = raw.execute("SHOW superuser_reserved_connections").fetchone()
        return int(limit), int(reserved)

    def connect(self) -> Connection:
        """A new connection for this thread, closed when the thread is gone (a thread that
        ended would otherwise hold a server connection until the process exits)."""
        raw = psycopg.connect(self.url, autocommit=True)
        # a process frozen inside a transaction (SIGSTOP, a paused VM) would hold its row
        # locks for ever, and a job's row lock keeps the job from ever being claimed again
        raw.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}'")
        with self._all_lock:
            self._all.add(raw)
        weakref.finalize(threading.current_thread(), raw.close)
        return Connection(raw)

    def _connection(self) -> Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.raw.closed or connection.raw.broken:
            # first use in this thread, or the server closed it (a restart, a failover):
            # the next call gets a new connection (the failed one's caller saw the error)
            connection = self._local.connection = self.connect()
        return connection

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """BEGIN ... COMMIT; anything raised inside rolls everything back. Inside another
        transaction of this thread it is a savepoint of that one."""
        connection = self._connection()
        with connection.raw.transaction():
            yield connection

    def query(self, sql: str, parameters: tuple = ()) -> list[Row]:
        return self._connection().execute(sql, parameters).fetchall()

    def tuples(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        """Rows as plain tuples (no names): the hottest reads."""
        return self._connection().execute(sql, parameters, plain=True).fetchall()

    def reader(self) -> Connection:
        """This thread's connection, for reads outside a transaction."""
        return self._connection()

    def table_bytes(self) -> dict[str, int]:
        """Bytes of every table (with its TOAST data) and index after a VACUUM, largest
        first: what SQLite's `dbstat` gives (`registry.database.Database.table_bytes`). A
        partitioned table or index counts its partitions' bytes under its own name."""
        raw = self._connection().raw
        raw.execute("VACUUM")
        rows = raw.execute(
            "SELECT c.relname, CASE c.relkind WHEN 'i' THEN pg_relation_size(c.oid)"
            " WHEN 'r' THEN pg_table_size(c.oid) WHEN 'p' THEN (SELECT"
            " COALESCE(SUM(pg_table_size(t.relid)), 0) FROM pg_partition_tree(c.oid) AS t"
            " WHERE t.isleaf) ELSE (SELECT COALESCE(SUM(pg_relation_size(t.relid)), 0) FROM"
            " pg_partition_tree(c.oid) AS t WHERE t.isleaf) END AS size FROM pg_class AS c"
            " JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname ="
            " current_schema() AND c.relkind IN ('r', 'i', 'p', 'I') AND NOT"
            " c.relispartition ORDER BY size DESC, c.relname"
        ).fetchall()
        return {name: int(size) for name, size in rows}

    def close(self) -> None:
        """Close every thread's connection (a test's database can then be dropped)."""
        with self._all_lock:
            connections = list(self._all)
            self._all.clear()  # the same set: the finalizer of this object closes it
        for raw in connections:
            raw.close()
        self._local = threading.local()


def reachable(url: str, what: str, work: Callable[[], Any]) -> Any:
    """`work()` (something that connects to `url`); an unreachable or refusing server, or a
    URL psycopg cannot read, is one line naming the option (`what`) and the URL without its
    password, whether psycopg raised it or SQLAlchemy (Alembic's connection) wrapped it."""
    try:
        return work()
    except (psycopg.OperationalError, psycopg.ProgrammingError) as error:
        raise TailormlError(_unreachable(url, what, error)) from None
    except sqlalchemy_errors() as error:
        cause = getattr(error, "orig", None)
        if isinstance(cause, psycopg.OperationalError | psycopg.ProgrammingError):
            raise TailormlError(_unreachable(url, what, cause)) from None
        raise


def _unreachable(url: str, what: str, error: Exception) -> str:
    if isinstance(error, psycopg.ProgrammingError):
        where = safe_url(url)
        return f"{where} is not a PostgreSQL URL psycopg can use: {_line(error)}; check {what}"
    return f"cannot reach the PostgreSQL database {safe_url(url)}: {_line(error)}; check {what}"


def _close_all(connections: weakref.WeakSet) -> None:
    for raw in list(connections):
        raw.close()


def safe_url(url: str) -> str:
    """The URL without its password (in the user part or as a parameter), for messages."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = urllib.parse.urlencode(
        [
            (k, v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if k.lower() != "password"
        ]
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _line(error: Exception) -> str:
    """psycopg's message on one line (libpq's are several: the failure, then hints)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines[:2]) if lines else type(error).__name__
