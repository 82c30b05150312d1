"""SQLite's SQL as PostgreSQL runs it: the few dialect differences the registry uses.

The registry's SQL is written once, in SQLite's dialect (`?` placeholders), and the
PostgreSQL store (`registry.postgres`) translates each statement here, once per distinct
statement (cached). The translation is deliberately small and closed: it knows the
constructs the registry uses and refuses what it does not know (an unknown PRAGMA, a
trigger of another shape) instead of passing it on half-translated.

Statements (`statement`):

- `?` placeholders -> `%s` (psycopg's) and a literal `%` -> `%%` (psycopg reads `%`
  inside strings too); a `?` inside a quoted string stays a `?`;
- `INSERT OR IGNORE INTO t ...` -> `INSERT INTO t ... ON CONFLICT DO NOTHING`;
- `x IS ?` / `x IS other.column` (SQLite's null-safe equality) -> `IS NOT DISTINCT FROM`
  (`IS NULL`, `IS NOT ...`, `IS TRUE/FALSE` stay as they are);
- `PRAGMA table_info(t)` (how the code asks for a table's columns) -> the same columns
  (cid, name, type, notnull, dflt_value, pk) from `information_schema`, no rows for a
  table that does not exist; every other PRAGMA is refused.

Schemas are not translated: the PostgreSQL schema is Alembic's revisions, written in
PostgreSQL's own DDL (`registry.schema_versions`; the first revision is what this module's
schema translation made, frozen), so DDL in a statement is refused here.

What is not translated, because each backend has its own code (`registry.database`):
`sqlite_master`/`sqlite_schema`,
`strftime` and `printf` (used only by SQLite's migrations, which do not run on PostgreSQL),
`dbstat` (each backend's `table_bytes`), and `cursor.lastrowid` (`insert_id`: `RETURNING
id` on PostgreSQL).
"""

from __future__ import annotations

import re
from functools import lru_cache

_IS_VALUE = re.compile(r"\bIS\s+(?!NULL\b|NOT\b|TRUE\b|FALSE\b|DISTINCT\b)", re.IGNORECASE)
_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", re.IGNORECASE)
_OTHER_OR = re.compile(r"^\s*(INSERT|UPDATE)\s+OR\s+(REPLACE|ABORT|FAIL|ROLLBACK)\b", re.I)


_TABLE_INFO = re.compile(r"\s*PRAGMA\s+table_info\s*\(\s*(\w+)\s*\)\s*;?\s*", re.I)
TABLE_INFO = (
    "SELECT ordinal_position - 1 AS cid, column_name AS name, data_type AS type,"
    " CASE WHEN is_nullable = 'NO' THEN 1 ELSE 0 END AS notnull, column_default AS"
    " dflt_value, 0 AS pk FROM information_schema.columns WHERE table_schema ="
    " current_schema() AND table_name = '{table}' ORDER BY ordinal_position"
)


class UntranslatableSQL(ValueError):
    """SQLite SQL that this module does not know how to say in PostgreSQL."""


def _outside_quotes(sql: str) -> list[tuple[bool, str]]:
    """(quoted, text) pieces of `sql`: single-quoted strings and double-quoted names are
    quoted pieces (a doubled quote inside stays inside)."""
    pieces, start, k = [], 0, 0
    while k < len(sql):
        if sql[k] in "'\"":
            quote = sql[k]
            end = k + 1
            while True:
                end = sql.find(quote, end)
                if end == -1:
                    raise UntranslatableSQL(f"an unterminated {quote} in: {sql}")
                if end + 1 < len(sql) and sql[end + 1] == quote:
                    end += 2
                    continue
                break
            pieces.append((False, sql[start:k]))
            pieces.append((True, sql[k : end + 1]))
            start = k = end + 1
            continue
        k += 1
    pieces.append((False, sql[start:]))
    return [(quoted, text) for quoted, text in pieces if text]


@lru_cache(maxsize=2048)
def statement(sql: str) -> str:
    """One statement with `?` placeholders, in PostgreSQL's dialect with psycopg's `%s`."""
    if _OTHER_OR.match(sql):
        raise UntranslatableSQL(f"no PostgreSQL form for this conflict clause: {sql}")
    table_info = _TABLE_INFO.fullmatch(sql)
    if table_info is not None:
        return TABLE_INFO.format(table=table_info.group(1))
    if re.match(r"^\s*PRAGMA\b", sql, re.I):
        raise UntranslatableSQL(f"a PRAGMA is SQLite's; give PostgreSQL its own code: {sql}")
    if re.match(r"\s*(CREATE|ALTER|DROP)\s", sql, re.I):
        raise UntranslatableSQL(
            f"DDL is PostgreSQL's own, in a revision (registry/migrations): {sql}"
        )
    ignore = bool(_OR_IGNORE.match(sql))
    if ignore:
        sql = _OR_IGNORE.sub("INSERT INTO", sql, count=1)
    out = []
    for quoted, text in _outside_quotes(sql):
        if quoted:  # psycopg reads `%` everywhere, strings included
            text = text.replace("%", "%%")
        else:
            text = _IS_VALUE.sub("IS NOT DISTINCT FROM ", text)
            text = text.replace("%", "%%").replace("?", "%s")
        out.append(text)
    translated = "".join(out).rstrip().rstrip(";")
    if ignore:
        if re.search(r"\bON\s+CONFLICT\b|\bRETURNING\b", translated, re.I):
            raise UntranslatableSQL(f"INSERT OR IGNORE with its own conflict clause: {sql}")
        translated += " ON CONFLICT DO NOTHING"
    return translated
