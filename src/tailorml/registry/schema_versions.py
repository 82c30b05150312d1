"""The PostgreSQL schema's version: Alembic revisions (`registry/migrations/versions`),
applied when a process opens the database and by `tailorml database upgrade`.

Why Alembic and why only here: a PostgreSQL database is shared by every process and host
of a deployment, and outlives any one release of them; it needs what Alembic keeps -- a
version table, revisions in order, each applied once, and a history an operator can read
(`tailorml database status`). SQLite data directories keep their own way (each store's
`migrate`, idempotent, run at every open): a file belongs to one installation, and
Alembic's SQLite support re-creates tables for most changes, which those steps do not
need. The revisions are written as SQL (`op.execute`), not SQLAlchemy models: the store's
SQL is hand-written and measured (`registry.database`), and SQLAlchemy is used only as the
connection Alembic needs.

Every upgrade runs in one transaction holding the schema's advisory lock: processes that
start together on an empty or older database wait for the first one, then find the
schema current; a failed revision leaves the database as it was.
"""

from __future__ import annotations

from pathlib import Path

from tailorml.errors import TailormlError

SCRIPTS = Path(__file__).with_name("migrations")
SCHEMA_LOCK = 7_436_201_937  # pg_advisory_xact_lock key while the schema changes


def _config(connection=None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = connection
    return config


def _engine(url: str):
    """An SQLAlchemy engine that connects as the store does (psycopg, the URL as given:
    socket hosts and parameters included), one connection, no pool."""
    import psycopg
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(url), poolclass=NullPool
    )


def head() -> str:
    """The newest revision this release knows."""
    from alembic.script import ScriptDirectory

    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None  # the package ships its revisions
    return found


def history() -> list[tuple[str, str]]:
    """(revision, first line of its docstring), oldest first."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_config())
    return [(s.revision, (s.doc or "").strip()) for s in reversed(list(scripts.walk_revisions()))]


def current(url: str) -> str | None:
    """The database's revision; None: no revision table (empty, or made before versions)."""
    from alembic.runtime.migration import MigrationContext

    engine = _engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, target: str = "head") -> tuple[str | None, str]:
    """Bring the database to `target` (by default this release's newest revision); returns
    (revision before, revision after). A database at a revision this release does not
    know (a newer release wrote it) is refused in one line: an older release must not
    write to it."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    engine = _engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            before = MigrationContext.configure(connection).get_current_revision()
            scripts = ScriptDirectory.from_config(_config())  # read once for both questions
            newest = scripts.get_current_head()
            known = {script.revision for script in scripts.walk_revisions()}
            if before is not None and before not in known:
                raise TailormlError(
                    f"the database's schema is at revision {before}, which this release"
                    f" (newest revision {newest}) does not know: a newer tailorml wrote it;"
                    " run that release (or newer) on it"
                )
            wanted = newest if target == "head" else target
            if before != wanted:
                command.upgrade(_config(connection), target)
            after = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    return before, after or ""


def downgrade(url: str, target: str) -> None:
    """Back to `target` (tests, and an operator undoing a release)."""
    from alembic import command

    engine = _engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            command.downgrade(_config(connection), target)
    finally:
        engine.dispose()
