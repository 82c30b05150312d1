"""`tailorml database ...` as an operator runs it: status and upgrade of a PostgreSQL
database's schema, the revisions, a retention run on either backend, and clear refusals."""

from __future__ import annotations

import time

import psycopg

from tailorml.registry import schema_versions
from tailorml.registry.people import PeopleStore, Write
from tailorml.service.auth import add_person

DAY_MS = 86_400_000


def test_status_and_upgrade_of_an_older_database(empty_postgres_url, tailorml_in_process):
    schema_versions.upgrade(empty_postgres_url, "0001")
    behind = tailorml_in_process("database", "status", "--database", empty_postgres_url)
    assert behind.returncode == 0
    assert "revision 0001; newest 0002 (behind: `tailorml database upgrade`)" in behind.stdout
    done = tailorml_in_process("database", "upgrade", "--database", empty_postgres_url)
    assert "Schema upgraded from revision 0001 to 0002." in done.stdout
    again = tailorml_in_process("database", "upgrade", "--database", empty_postgres_url)
    assert "already at revision 0002" in again.stdout
    status = tailorml_in_process("database", "status", "--database", empty_postgres_url)
    assert "(current)" in status.stdout
    rows = {
        p[0]: p[1:]
        for p in map(str.split, status.stdout.splitlines())
        if p[:1] in (["entries"], ["alerts"])
    }
    assert rows["entries"][0] == rows["alerts"][0] == "3"  # this month and the next two


def test_a_database_newer_than_the_release_is_said_so(postgres_url, tailorml_in_process):
    with psycopg.connect(postgres_url, autocommit=True) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '0099'")
    status = tailorml_in_process("database", "status", "--database", postgres_url)
    assert "revision 0099; newest 0002 (NEWER than this release" in status.stdout
    refused = tailorml_in_process("database", "upgrade", "--database", postgres_url)
    assert refused.returncode == 2
    assert "revision 0099, which this release" in refused.stderr


def test_history_lists_the_revisions_oldest_first(tailorml_in_process):
    lines = tailorml_in_process("database", "history").stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["0001", "0002"]


def test_status_without_a_database_names_the_option(tailorml_in_process):
    said = tailorml_in_process("database", "status", unset=("TAILORML_DATABASE",))
    assert said.returncode == 2 and "'--database'" in said.stderr


def test_a_retention_run_on_a_data_directory(tmp_path, tailorml_in_process):
    data = tmp_path / "data"
    store = PeopleStore(data)
    ann, _ = add_person(store, "ann", "patient", "test")
    now = int(time.time() * 1000)
    store.add_entries(
        ann.id, [Write(now - 200 * DAY_MS, "o", b"o", "c"), Write(now, "n", b"n", "c")], "ann"
    )
    done = tailorml_in_process("database", "retention", "--days", "60", "--data", str(data))
    assert done.returncode == 0
    assert "Removed everything dated before" in done.stdout and "1 entries" in done.stdout
    again = tailorml_in_process("database", "retention", "--days", "60", "--data", str(data))
    assert "nothing removed" in again.stdout
    short = tailorml_in_process("database", "retention", "--days", "7", "--data", str(data))
    assert short.returncode == 2 and "'--days'" in short.stderr


def test_an_unreachable_server_is_one_line_without_the_password(tailorml_in_process):
    url = "postgresql://tailorml:s3cret-word@127.0.0.1:1/service"
    for command in ("status", "upgrade"):
        said = tailorml_in_process("database", command, "--database", url)
        assert said.returncode == 2
        assert "cannot reach the PostgreSQL database postgresql://tailorml@127.0.0.1:1/service" in (
            said.stderr
        )
        assert "s3cret" not in said.stderr + said.stdout and "Traceback" not in said.stderr
