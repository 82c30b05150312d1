"""Monthly partitions on PostgreSQL (`registry.partitions`) and retention on both backends
(`PeopleStore.apply_retention`): coming months are made ahead, a backfill waits in the
default partition until its month is made, and retention removes whole months before the
cut -- and nothing after it -- with one audit line."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import psycopg
import pytest

from tailorml.errors import TailormlError
from tailorml.registry import partitions
from tailorml.registry import people as people_module
from tailorml.registry.people import PeopleStore, Write
from tailorml.service.auth import add_person


def ms(year: int, month: int, day: int = 1, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp() * 1000)


NOW = ms(2026, 12, 8, 12)


def where(url: str, table: str) -> dict[int, str]:
    with psycopg.connect(url) as raw:
        rows = raw.execute(f"SELECT date_ms, tableoid::regclass::text FROM {table}").fetchall()
    return dict(rows)


def test_month_arithmetic_is_utc_and_wraps_the_year():
    assert partitions.month_of(ms(2026, 12, 31, 23)) == (2026, 12)
    assert partitions.next_month((2026, 12)) == (2027, 1)
    assert partitions.start_ms((2027, 1)) == ms(2027, 1)
    assert partitions.name_of("entries", (2027, 1)) == "entries_p202701"


def later(month: partitions.Month, count: int) -> partitions.Month:
    for _ in range(count):
        month = partitions.next_month(month)
    return month


def test_coming_months_are_made_and_a_backfill_gets_its_month(postgres_url):
    store = PeopleStore(postgres_url)  # opening made this month's and the next two
    ann, _ = add_person(store, "ann", "patient", "test")
    this = partitions.month_of(int(time.time() * 1000))
    with psycopg.connect(postgres_url) as raw:
        for table in partitions.PARTITIONED:
            # (a superset: the template database may hold last month's, made before midnight)
            assert {this, later(this, 1), later(this, 2)} <= set(partitions.months(raw, table))
    ahead_month = later(this, 6)
    old, clockless = ms(2024, 3, 5), ms(1970, 1, 2)
    ahead = partitions.start_ms(ahead_month) + 3_600_000
    store.add_entries(
        ann.id,
        [
            Write(old, "a", b"1", "c"),
            Write(clockless, "b", b"2", "c"),
            Write(ahead, "c", b"3", "c"),
        ],
        "ann",
    )
    assert set(where(postgres_url, "entries").values()) == {"entries_default"}
    assert store.maintain() == {"entries": ["entries_p202403"]}  # the month waiting
    assert where(postgres_url, "entries") == {
        old: "entries_p202403",
        clockless: "entries_default",  # before 2000: a wrong clock, left where it is
        ahead: "entries_default",  # beyond the months made ahead: when its time comes
    }
    made = store.maintain(partitions.start_ms(later(this, 5)))
    assert made["entries"] == [partitions.name_of("entries", later(this, k)) for k in (5, 6, 7)]
    assert where(postgres_url, "entries")[ahead] == partitions.name_of("entries", ahead_month)
    assert [r.date_ms for r in store.entries(ann.id, limit=5)] == [ahead, old, clockless]
    assert store.maintain() == {}  # nothing due


def test_a_second_process_skips_the_maintenance_another_one_is_doing(postgres_url):
    store = PeopleStore(postgres_url)
    with psycopg.connect(postgres_url) as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s)", (partitions.MAINTENANCE_LOCK,))
        assert store.maintain(NOW) is None
    assert store.maintain(NOW) is not None


def readings_and_decisions(store: PeopleStore) -> str:
    ann, _ = add_person(store, "ann", "patient", "test")
    times = [ms(2026, 9, 30, 23), ms(2026, 10, 1), ms(2026, 11, 15), ms(1999, 5, 1)]
    store.add_entries(ann.id, [Write(t, f"k{t}", b"s", "c") for t in times], "ann")
    # a corrected value: its previous version is kept in `replaced`
    store.add_entries(ann.id, [Write(times[0], f"k{times[0]}", b"fixed", "c2")], "ann")
    store.add_alerts(ann.id, [(t, 1, "f" * 64, "predefined", b"d") for t in times])
    return ann.id


def test_retention_removes_the_months_before_the_cut_and_nothing_after(store_location):
    store = PeopleStore(store_location)
    person = readings_and_decisions(store)
    store.maintain(NOW)
    # 2026-12-08 less 60 days is 2026-10-09: October is kept whole, September goes
    done = store.apply_retention(60, "admin", now_ms=NOW)
    assert done["before"] == "2026-10-01T00:00:00+00:00" and done["kept_days"] == 60
    kept = [ms(2026, 11, 15), ms(2026, 10, 1)]
    assert [r.date_ms for r in store.entries(person, limit=10)] == kept
    assert [a.date_ms for a in store.alerts(person, limit=10)] == kept
    assert store.replaced(person) == []
    (line,) = [e for e in store_audit(store) if e["action"] == "retention"]
    assert line["actor"] == "admin" and line["individual"] is None
    if store.database.dialect == "postgresql":
        assert done["entries"]["partitions"] == {"entries_p202609": 1}
        assert done["entries"]["default_rows"] == 1  # the 1999 reading
        with psycopg.connect(store_location) as raw:
            assert (2026, 9) not in partitions.months(raw, "entries")
    else:
        assert done["entries"] == {"rows": 2} and done["alerts"] == {"rows": 2}
    assert done["replaced"] == {"rows": 1}
    # nothing more to remove: no second line
    assert store.apply_retention(60, "admin", now_ms=NOW) == {}
    assert [e["action"] for e in store_audit(store)].count("retention") == 1


def store_audit(store: PeopleStore) -> list[dict]:
    return [dict(row) for row in store.database.query("SELECT * FROM audit_log ORDER BY id")]


def test_a_retention_shorter_than_a_month_is_refused_naming_the_option(tmp_path):
    store = PeopleStore(tmp_path / "data")
    with pytest.raises(TailormlError, match="--retention-days must be at least 30, not 7"):
        store.apply_retention(7, "admin")


def test_on_sqlite_each_batch_is_a_transaction_with_its_own_audit_line(tmp_path, monkeypatch):
    """A retention killed half-way has recorded what it deleted: every transaction that
    deletes writes its line (here 2 rows per table and transaction)."""
    monkeypatch.setattr(people_module, "RETENTION_BATCH", 2)
    store = PeopleStore(tmp_path / "data")
    ann, _ = add_person(store, "ann", "patient", "test")
    old = [ms(2025, 1, day) for day in range(1, 6)]  # five readings and decisions to go
    store.add_entries(ann.id, [Write(t, f"k{t}", b"s", "c") for t in old], "ann")
    store.add_alerts(ann.id, [(t, 1, "f" * 64, "predefined", b"d") for t in old])
    done = store.apply_retention(60, "admin", now_ms=NOW)
    assert done["entries"] == done["alerts"] == {"rows": 5}
    lines = [
        json.loads(e["details_json"]) for e in store_audit(store) if e["action"] == "retention"
    ]
    assert [line["entries"]["rows"] for line in lines] == [2, 2, 1]
    assert [line["alerts"]["rows"] for line in lines] == [2, 2, 1]
    assert store.entries(ann.id) == []
