"""Monthly partitions of the readings and alert decisions on PostgreSQL: made ahead of time,
split out of the default partition, dropped by retention.

A row lands in the partition of its month (UTC) of `date_ms`; a row whose month has no
partition (a backfill of old data, a phone whose clock is years off) lands in the table's
`DEFAULT` partition, so that no upload ever fails for want of a partition. `maintain` --
run when a process opens the database and hourly by the service's housekeeping -- makes
this month's and the next `MONTHS_AHEAD` months' partitions and moves every month found in
the default partition into one of its own. `drop_before` is retention: it drops whole
months (no row-by-row delete, no vacuum), and deletes what the default partition holds
before the cut.

Concurrency: both run in one transaction under a try-lock (a second process finds it held
and skips: the first does the work) and with a short `lock_timeout` (making a partition
briefly locks the table against writes; an upload never waits long for it, and the work
is retried at the next run). SQLite has no partitions: its retention is a DELETE
(`registry.people.PeopleStore.apply_retention`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

PARTITIONED = ("entries", "alerts")
MONTHS_AHEAD = 2
FIRST_YEAR = 2000  # months before stay in the default partition (a clock at 1970)
MAINTENANCE_LOCK = 7_436_201_938  # pg_try_advisory_xact_lock key
LOCK_TIMEOUT = "5s"

Month = tuple[int, int]


def month_of(ms: int) -> Month:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.year, moment.month


def next_month(month: Month) -> Month:
    year, number = month
    return (year + 1, 1) if number == 12 else (year, number + 1)


def start_ms(month: Month) -> int:
    """The first millisecond of `month` (UTC)."""
    return int(datetime(month[0], month[1], 1, tzinfo=UTC).timestamp() * 1000)


def name_of(table: str, month: Month) -> str:
    return f"{table}_p{month[0]:04d}{month[1]:02d}"


def months(raw, table: str) -> dict[Month, str]:
    """The monthly partitions `table` has: month -> partition name."""
    pattern = re.compile(rf"{table}_p(\d{{4}})(\d{{2}})")
    rows = raw.execute(
        "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
        " JOIN pg_class AS p ON p.oid = i.inhparent WHERE p.relname = %s"
        " AND p.relnamespace = current_schema()::regnamespace",
        (table,),
    ).fetchall()
    found = {}
    for (name,) in rows:
        match = pattern.fullmatch(name)
        if match is not None:
            found[int(match[1]), int(match[2])] = name
    return found


def _months_in_default(raw, table: str, until: Month) -> set[Month]:
    rows = raw.execute(
        "SELECT DISTINCT EXTRACT(YEAR FROM t)::int, EXTRACT(MONTH FROM t)::int FROM (SELECT"
        f" to_timestamp(date_ms / 1000.0) AT TIME ZONE 'UTC' AS t FROM {table}_default"
        " WHERE date_ms >= %s AND date_ms < %s) AS moments",
        (start_ms((FIRST_YEAR, 1)), start_ms(until)),
    ).fetchall()
    return {(int(year), int(number)) for year, number in rows}


def _make(raw, table: str, month: Month) -> int:
    """Make `month`'s partition of `table`, moving its rows out of the default partition
    (a partition cannot be made while the default one holds rows of its range); the number
    of rows moved."""
    low, high, name = start_ms(month), start_ms(next_month(month)), name_of(table, month)
    bounds = f"FOR VALUES FROM ({low}) TO ({high})"
    waiting = raw.execute(
        f"SELECT 1 FROM {table}_default WHERE date_ms >= %s AND date_ms < %s LIMIT 1",
        (low, high),
    ).fetchone()
    if waiting is None:
        raw.execute(f"CREATE TABLE {name} PARTITION OF {table} {bounds}")
        return 0
    raw.execute(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    moved = raw.execute(
        f"WITH moved AS (DELETE FROM {table}_default WHERE date_ms >= %s AND date_ms < %s"
        f" RETURNING *) INSERT INTO {name} SELECT * FROM moved",
        (low, high),
    ).rowcount
    raw.execute(f"ALTER TABLE {table} ATTACH PARTITION {name} {bounds}")
    return moved


def maintain(raw, now_ms: int) -> dict[str, list[str]] | None:
    """Make the partitions due (this month, the next `MONTHS_AHEAD`, and every month waiting
    in the default partition, up to the last of those); the partitions made per table, or
    None when another process holds the maintenance lock. `raw`: a psycopg connection in
    autocommit mode (this opens its own transaction)."""
    with raw.transaction():
        (mine,) = raw.execute(
            "SELECT pg_try_advisory_xact_lock(%s)", (MAINTENANCE_LOCK,)
        ).fetchone()
        if not mine:
            return None
        raw.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        made: dict[str, list[str]] = {}
        this = month_of(now_ms)
        due = [this]
        for _ in range(MONTHS_AHEAD):
            due.append(next_month(due[-1]))
        for table in PARTITIONED:
            have = months(raw, table)
            wanted = set(due) | _months_in_default(raw, table, next_month(due[-1]))
            for month in sorted(wanted - set(have)):
                _make(raw, table, month)
                made.setdefault(table, []).append(name_of(table, month))
        return made


def summary(raw) -> dict[str, dict]:
    """Per partitioned table: its months (how many, the first and last), the rows the
    server estimates in all (from its statistics: no table is scanned) and the rows waiting
    in the default partition (counted)."""
    found = {}
    for table in PARTITIONED:
        have = months(raw, table)
        (estimate,) = raw.execute(
            "SELECT COALESCE(SUM(GREATEST(c.reltuples, 0)), 0)::bigint FROM pg_inherits AS i"
            " JOIN pg_class AS c ON c.oid = i.inhrelid JOIN pg_class AS p ON p.oid ="
            " i.inhparent WHERE p.relname = %s AND p.relnamespace ="
            " current_schema()::regnamespace",
            (table,),
        ).fetchone()
        (waiting,) = raw.execute(f"SELECT COUNT(*) FROM {table}_default").fetchone()
        found[table] = {
            "months": len(have),
            "first": min(have) if have else None,
            "last": max(have) if have else None,
            "rows_estimate": int(estimate),
            "in_default": int(waiting),
        }
    return found


def drop_before(raw, cut_ms: int) -> dict[str, dict]:
    """Inside the caller's transaction: drop every monthly partition that ends at or before
    `cut_ms` and delete the default partition's rows before it; per table, the partitions
    dropped (with their rows) and the rows deleted from the default partition."""
    done: dict[str, dict] = {}
    for table in PARTITIONED:
        dropped = {}
        for month, name in sorted(months(raw, table).items()):
            if start_ms(next_month(month)) <= cut_ms:
                (rows,) = raw.execute(f"SELECT COUNT(*) FROM {name}").fetchone()
                raw.execute(f"DROP TABLE {name}")
                dropped[name] = int(rows)
        deleted = raw.execute(f"DELETE FROM {table}_default WHERE date_ms < %s", (cut_ms,)).rowcount
        done[table] = {"partitions": dropped, "default_rows": int(deleted)}
    return done
