"""`tailorml database ...`: the service's database seen by its operator -- the schema's
version (PostgreSQL: Alembic revisions), the monthly partitions of readings and decisions,
and a retention run on demand (the service's housekeeping runs one every hour when
`serve`/`worker --retention-days` is set)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from tailorml.cli_service import (
    DatabaseOption,
    DataOption,
    _actor,
    _store,
    console,
    database_url,
)
from tailorml.registry.retention import MIN_DAYS, removed

database_app = typer.Typer(
    rich_markup_mode=None,
    help="The service's database: schema version, partitions, retention.",
    no_args_is_help=True,
)


def _postgres(database: str | None) -> str:
    url = database_url(database)
    if url is None:
        raise typer.BadParameter(
            "is needed: a SQLite data directory (--data) has no schema versions or partitions;"
            " it brings itself up to date whenever a command or the service opens it",
            param_hint="'--database'",
        )
    return url


@database_app.command("status")
def database_status(database: DatabaseOption = None) -> None:
    """The schema's revision against this release's newest, and each partitioned table's
    months (with the server's estimate of their rows, and the rows waiting in the default
    partition). A current database is opened as every process opens it, which also makes
    the partitions due; an older one is only reported (`upgrade` upgrades it)."""
    from tailorml.registry import schema_versions
    from tailorml.registry.postgres import reachable, safe_url

    url = _postgres(database)
    current = reachable(url, "--database", lambda: schema_versions.current(url))
    newest = schema_versions.head()
    state = "current" if current == newest else "behind: `tailorml database upgrade`"
    known = {revision for revision, _ in schema_versions.history()}
    if current is not None and current not in known:
        state = "NEWER than this release: run a release that knows it"
    console.print(
        f"{safe_url(url)}: schema revision {current or 'none'}; newest {newest} ({state})"
    )
    if current != newest:
        return
    store = _store(Path("."), database=url)
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("table", "months", "first", "last", "rows (estimate)", "in default"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for name, found in store.partitions().items():
        first, last = found["first"], found["last"]
        table.add_row(
            name,
            f"{found['months']:,}",
            f"{first[0]}-{first[1]:02d}" if first else "-",
            f"{last[0]}-{last[1]:02d}" if last else "-",
            f"{found['rows_estimate']:,}",
            f"{found['in_default']:,}",
        )
    console.print(table)


@database_app.command("upgrade")
def database_upgrade(database: DatabaseOption = None) -> None:
    """Bring the schema to this release's newest revision (the service does it when it
    starts; run this first to upgrade before rolling out the new release's processes)."""
    from tailorml.registry import schema_versions
    from tailorml.registry.postgres import reachable

    url = _postgres(database)
    before = reachable(url, "--database", lambda: schema_versions.current(url))
    _store(Path("."), database=url)  # opening upgrades, then makes the partitions due
    after = schema_versions.current(url)
    if before == after:
        console.print(f"Schema already at revision {after}, this release's newest.")
    else:
        console.print(f"Schema upgraded from revision {before or 'none'} to {after}.")


@database_app.command("history")
def database_history() -> None:
    """The schema's revisions this release knows, oldest first."""
    from tailorml.registry import schema_versions

    for revision, doc in schema_versions.history():
        console.print(f"{revision}  {' '.join(doc.split())}")


@database_app.command("retention")
def database_retention(
    days: Annotated[
        int,
        typer.Option(min=MIN_DAYS, help="Keep this many days (whole months: up to a month more)."),
    ],
    data: DataOption,
    database: DatabaseOption = None,
) -> None:
    """Remove readings and alert decisions older than --days now, for everyone (whole
    months; the audit log says what went). The service's housekeeping does the same
    hourly with `serve`/`worker --retention-days`."""
    store = _store(data, database=database)
    done = store.apply_retention(days, _actor())
    if not done:
        console.print(f"Nothing dated before the cut of a {days}-day retention; nothing removed.")
        return
    parts = ", ".join(f"{count:,} {table}" for table, count in removed(done).items())
    console.print(f"Removed everything dated before {done['before']}: {parts}.")
