"""The PostgreSQL schema's versions (`registry.schema_versions`, Alembic): yesterday's
database is upgraded with its data, the revisions build what the stores write on SQLite,
a database newer than this release is refused, processes starting together upgrade once."""

from __future__ import annotations

import importlib
import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tailorml.errors import TailormlError
from tailorml.registry import schema_versions
from tailorml.registry.database import table_columns
from tailorml.registry.models import Registry
from tailorml.registry.people import PeopleStore, Write
from tailorml.service.auth import add_person

MS_2026_12_03 = 1_796_256_000_000  # 2026-12-03 00:00 UTC
MS_2025_06_10 = 1_749_513_600_000  # 2025-06-10 00:00 UTC


def yesterdays_rows(url: str) -> None:
    """What yesterday's release wrote: a patient, two readings (one from last year), a
    decision, in its schema (revision 0001)."""
    with psycopg.connect(url, autocommit=True) as raw:
        raw.execute(
            "INSERT INTO people (id, name, role, token_sha256, secret_sha1, created) VALUES"
            " ('p1', 'ann', 'patient', 't', 's', '2026-12-07T10:00:00+00:00')"
        )
        raw.execute(
            "INSERT INTO entries (person_id, date_ms, fingerprint, sealed, created, public_id,"
            " content, srv_created, srv_modified) VALUES (%s, %s, 'f1', %s, 'c', 'id-one', 'c1',"
            " 1, 1), (%s, %s, 'f2', %s, 'c', 'id-two', 'c2', 2, 2)",
            ("p1", MS_2026_12_03, b"one", "p1", MS_2025_06_10, b"two"),
        )
        raw.execute("INSERT INTO alert_models (model_id, sha256, kind) VALUES (1, 'a', 'b')")
        raw.execute(
            "INSERT INTO alerts (person_id, date_ms, created_s, model, sealed) VALUES"
            " ('p1', %s, 1, 1, %s)",
            (MS_2026_12_03, b"decided"),
        )


def partition_of(url: str, table: str) -> dict[int, str]:
    """date_ms -> the partition that holds the row."""
    with psycopg.connect(url) as raw:
        rows = raw.execute(f"SELECT date_ms, tableoid::regclass::text FROM {table}").fetchall()
    return dict(rows)


def test_yesterdays_database_is_upgraded_with_every_row_in_its_month(empty_postgres_url):
    url = empty_postgres_url
    assert schema_versions.upgrade(url, "0001") == (None, "0001")
    yesterdays_rows(url)
    store = PeopleStore(url)  # opening upgrades, then makes the months' partitions
    assert schema_versions.current(url) == schema_versions.head() == "0002"
    assert partition_of(url, "entries") == {
        MS_2026_12_03: "entries_p202612",
        MS_2025_06_10: "entries_p202506",
    }
    assert partition_of(url, "alerts") == {MS_2026_12_03: "alerts_p202612"}
    rows = store.entries("p1")
    assert [(r.public_id, r.sealed) for r in rows] == [("id-one", b"one"), ("id-two", b"two")]
    # the same reading again is a repeat, a new one gets the next id
    again = store.add_entries("p1", [Write(MS_2026_12_03, "f1", b"one", "c1")], "ann")
    assert [u.outcome for u in again] == ["same"]
    (new,) = store.add_entries("p1", [Write(MS_2026_12_03 + 300_000, "f3", b"x", "c3")], "ann")
    assert new.id == 3
    assert [a.date_ms for a in store.alerts("p1", limit=5)] == [MS_2026_12_03]


def test_a_database_yesterdays_release_made_without_a_version_is_upgraded(empty_postgres_url):
    """Yesterday's release made its tables without Alembic's version table: the first
    revision, all `IF NOT EXISTS`, leaves them as they are, and the second partitions them."""
    baseline = importlib.import_module("tailorml.registry.migrations.versions.0001_baseline")
    with psycopg.connect(empty_postgres_url, autocommit=True) as raw:
        for statement in baseline.STATEMENTS:
            raw.execute(statement)
    yesterdays_rows(empty_postgres_url)
    assert schema_versions.current(empty_postgres_url) is None
    store = PeopleStore(empty_postgres_url)
    assert schema_versions.current(empty_postgres_url) == "0002"
    assert len(store.entries("p1")) == 2


def test_the_revisions_build_the_tables_the_stores_make_on_sqlite(tmp_path, postgres_url):
    """A change to a store's schema needs a revision: every table and column that the
    SQLite stores make, the PostgreSQL revisions make too (and nothing else but Alembic's
    version table and the partitions)."""
    PeopleStore(tmp_path / "data")
    Registry(tmp_path / "registry")
    Registry(tmp_path / "pg-files", database=postgres_url)
    sqlite_tables: dict[str, set[str]] = {}
    for store_file in (
        tmp_path / "data" / "registry.sqlite",
        tmp_path / "registry" / "registry.sqlite",
    ):
        with sqlite3.connect(store_file) as connection:
            names = [
                row[0]
                for row in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE"
                    " 'sqlite_%'"
                )
            ]
            for name in names:
                sqlite_tables[name] = {
                    r[1] for r in connection.execute(f"PRAGMA table_info({name})")
                }
    with psycopg.connect(postgres_url) as raw:
        pg_names = {
            row[0]
            for row in raw.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
                " AND relkind IN ('r', 'p') AND NOT relispartition"
            )
        }
    assert pg_names == set(sqlite_tables) | {"alembic_version"}
    store = PeopleStore(postgres_url)
    with store.database.transaction() as connection:
        for name, columns in sqlite_tables.items():
            assert table_columns(connection, name) == columns, name


def test_downgrade_and_upgrade_again_keep_every_row(empty_postgres_url):
    url = empty_postgres_url
    schema_versions.upgrade(url, "0001")
    yesterdays_rows(url)
    PeopleStore(url).database.close()
    schema_versions.downgrade(url, "0001")
    assert set(partition_of(url, "entries").values()) == {"entries"}
    assert schema_versions.upgrade(url) == ("0001", "0002")
    assert len(partition_of(url, "entries")) == 2


def test_a_database_newer_than_this_release_is_refused_in_one_line(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(TailormlError) as refused:
        schema_versions.upgrade(postgres_url)
    said = str(refused.value)
    assert "0099" in said and "0002" in said and "\n" not in said


def test_processes_starting_together_on_an_empty_database_upgrade_it_once(empty_postgres_url):
    results, errors = [], []

    def start() -> None:
        try:
            results.append(schema_versions.upgrade(empty_postgres_url))
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results, key=str) == [("0002", "0002"), ("0002", "0002"), (None, "0002")]


def test_the_revisions_ship_inside_the_package():
    assert Path(schema_versions.SCRIPTS, "env.py").is_file()
    assert [revision for revision, _ in schema_versions.history()] == ["0001", "0002"]


def test_a_patient_added_after_the_upgrade_uploads_into_this_months_partition(postgres_url):
    store = PeopleStore(postgres_url)
    person, _ = add_person(store, "bo", "patient", "test")
    now_ms = int(time.time() * 1000)
    store.add_entries(person.id, [Write(now_ms, "k", b"x", "c")], "bo")
    (where,) = partition_of(postgres_url, "entries").values()
    stamp = time.gmtime(now_ms / 1000)
    assert where == f"entries_p{stamp.tm_year:04d}{stamp.tm_mon:02d}"
