"""The people store's contract, run on both backends: a data directory's SQLite file and a
real PostgreSQL server (`store_location`, tests/postgres_fixtures.py). Each test says what
a caller of `PeopleStore` may rely on, whichever database holds the data."""

from __future__ import annotations

import threading
import time

import pytest

from tailorml.errors import TailormlError
from tailorml.registry import consent, sealed_formats
from tailorml.registry.database import DATABASE_ERRORS, add_columns, table_columns
from tailorml.registry.people import PeopleStore, Write
from tailorml.service.auth import add_person


@pytest.fixture
def store(store_location) -> PeopleStore:
    return PeopleStore(store_location)


def patient(store: PeopleStore, name: str = "ann", **kw):
    person, _ = add_person(store, name, "patient", "test", **kw)
    return person


def test_accounts_tokens_and_names(store):
    ann = patient(store)
    assert store.person(ann.id) == ann and store.by_name("ann") == ann
    assert store.by_token(store.token_hash(ann.id)) == ann
    with pytest.raises(TailormlError, match="exists already"):
        patient(store, "ann")
    assert [p.name for p in store.people()] == ["ann"]  # the refused one left nothing
    store.revoke(ann.id, "admin")
    assert not store.person(ann.id).active
    store.rotate(ann.id, "c" * 64, "d" * 40, "admin")
    assert store.person(ann.id).active and store.by_token("c" * 64).id == ann.id


def test_readings_are_stored_repeated_corrected_and_deleted_as_nightscout_does(store):
    ann = patient(store)
    first = store.add_entries(
        ann.id, [Write(1_000, "k1", b"\x00one", "c1"), Write(2_000, "k2", b"two", "c2")], "ann"
    )
    assert [u.outcome for u in first] == ["new", "new"]
    # a reading's key is of its type and time (service.core): the same key is the same time
    again = store.add_entries(
        ann.id, [Write(1_000, "k1", b"\x00one", "c1"), Write(1_000, "k1", b"fix", "c9")], "ann"
    )
    assert [u.outcome for u in again] == ["same", "replaced"]
    assert again[1].previous_ms == 1_000 and again[1].public_id == first[0].public_id
    rows = store.entries(ann.id)
    assert [(r.date_ms, r.sealed) for r in rows] == [(2_000, b"two"), (1_000, b"fix")]
    assert store.entry_blobs(ann.id, None, None, 1) == [(first[1].public_id, b"two")]
    assert store.entries(ann.id, since_ms=1_600) == rows[:1]
    assert store.existing_ids("entries", ann.id, [first[0].public_id, "nope"]) == {
        first[0].public_id
    }
    assert store.sealed_by_id("entries", ann.id, [rows[0].id]) == {rows[0].id: b"two"}
    assert store.delete("entries", ann.id, first[1].public_id, "ann") == 2_000
    assert store.delete("entries", ann.id, first[1].public_id, "ann") is None
    kept = store.replaced(ann.id)
    assert [(k["change"], k["sealed"]) for k in kept] == [
        ("replaced", b"\x00one"),
        ("deleted", b"two"),
    ]
    assert store.replaced(ann.id, "treatments") == []
    # API v3's history: the live record and the tombstone, in server time order
    history = store.v3_history("entries", ann.id, 0, False, 10)
    assert [(r.public_id, r.deleted) for r in history] == [
        (first[0].public_id, False),
        (first[1].public_id, True),
    ]
    assert history[0].srv_modified < history[1].srv_modified
    assert set(store.last_modified(ann.id)) == {"entries"}


def test_an_id_another_record_holds_is_refused_and_nothing_is_written(store):
    ann = patient(store)
    store.add_treatments(ann.id, [Write(1_000, "t1", b"a", "c", "id-one")], "ann", by_id=True)
    with pytest.raises(TailormlError, match="another stored record has this key"):
        store.add_treatments(
            ann.id,
            [Write(2_000, "t2", b"b", "c2", "id-two"), Write(3_000, "t1", b"c", "c3", "id-3")],
            "ann",
            by_id=True,
        )
    assert [r.public_id for r in store.treatments(ann.id)] == ["id-one"]  # all or nothing


def test_documents_and_v3_lookups(store):
    ann = patient(store)
    (doc,) = store.add_documents(ann.id, "devicestatus", [(5_000, b"s", "key", "ident")], "ann")
    found = store.v3_find("devicestatus", ann.id, "identifier", ["ident"])
    assert found.public_id == doc and found.sealed == b"s"
    stamp = store.replace_document(ann.id, "devicestatus", doc, (6_000, b"t", "key", None), "ann")
    assert stamp > found.srv_modified
    (row,) = store.v3_rows("devicestatus", ann.id, {"date_ms": (None, None)}, "date_ms", True, 5)
    assert (row.date_ms, row.sealed) == (6_000, b"t")
    assert store.documents(ann.id, "devicestatus")[0].sealed == b"t"
    assert store.delete_document(ann.id, "devicestatus", doc, "ann")
    assert store.v3_buried("devicestatus", ann.id, ["ident"])
    assert store.v3_find("devicestatus", ann.id, "public_id", [doc]) is None


def test_decisions_keep_their_model_by_reference(store):
    ann = patient(store)
    sha = "ab" * 32
    sealed = bytes([sealed_formats.ALERT_FORMAT + 1]) + b"opaque"  # not compact: kept as is
    store.add_alerts(ann.id, [(1_000, 7, sha, "cnn", sealed), (2_000, 7, sha, "cnn", sealed)])
    store.add_alerts(ann.id, [(3_000, 8, sha, "cnn", sealed)])
    alerts = store.alerts(ann.id)
    assert [(a.date_ms, a.model_id, a.model_sha256) for a in alerts] == [
        (3_000, 8, sha),
        (2_000, 7, sha),
        (1_000, 7, sha),
    ]
    assert alerts[0].sealed == sealed and alerts[0].created.endswith("+00:00")
    (count,) = store.database.query("SELECT COUNT(*) AS n FROM alert_models")
    assert count["n"] == 2


def test_the_audit_log_and_consents_are_append_only(store):
    ann = patient(store)
    for sql in (
        "UPDATE audit_log SET actor = 'x'",
        "DELETE FROM audit_log",
        "UPDATE consents SET granted = 0",
        "DELETE FROM consents",
    ):
        with (
            pytest.raises(DATABASE_ERRORS, match="append-only"),
            store.database.transaction() as connection,
        ):
            connection.execute(sql)
    assert store.consented(ann.id)
    actions = [r["action"] for r in store.database.query("SELECT action FROM audit_log")]
    assert actions == ["add_person", "consent_granted"]


def test_consent_assignment_and_withdrawal(store):
    ann = patient(store)
    bob, _ = add_person(store, "bob", "clinician", "test")
    assert store.assign(bob.id, ann.id, "admin") is True
    store.assign(bob.id, ann.id, "admin")  # again: one assignment (INSERT OR IGNORE)
    assert store.patients_of(bob.id) == [ann.id] and store.clinicians_of(ann.id) == [bob.id]
    job = store.add_job(ann.id, "ann")
    assert store.set_consent(ann.id, False, "ann", "patient", bob.id)
    assert store.patients_of(bob.id) == [] and store.assigned_patients(bob.id) == [ann.id]
    assert store.set_consent(ann.id, False, "ann", "patient")  # stops the queued job
    assert store.job(job.id).error == consent.WITHDRAWN_JOB
    assert not store.set_consent(ann.id, False, "ann", "patient")  # already withdrawn
    history = store.consent_history(ann.id)
    assert [(c.scope, c.granted) for c in history][-2:] == [
        ("clinician_access", False),
        ("personalization", False),
    ]
    with pytest.raises(consent.NotConsented):
        store.add_job(ann.id, "ann")


def test_keys_subscriptions_and_review_sessions(store):
    ann = patient(store)
    assert store.set_wrapped_key(ann.id, b"\x01" * 60, "k1") == (b"\x01" * 60, "k1")
    assert store.set_wrapped_key(ann.id, b"\x02" * 60, "k2") == (b"\x01" * 60, "k1")  # first wins
    first = store.add_service_key("vapid", b"w1", "k1", "pub1")
    assert store.add_service_key("vapid", b"w2", "k1", "pub2") == first == (b"w1", "k1", "pub1")
    assert store.wrapping_key_ids() == ["k1"]
    sub, new = store.add_subscription(ann.id, "fp", b"sealed", "ann")
    assert new and store.add_subscription(ann.id, "fp", b"again", "ann") == (sub, False)
    assert [s.sealed for s in store.subscriptions([ann.id])] == [b"again"]
    store.add_review_session("s" * 64, ann.id, 60, "ann")
    assert store.review_session("s" * 64).id == ann.id and store.review_sessions(ann.id) == 1
    assert store.end_review_session("s" * 64, "ann")
    assert store.review_session("s" * 64) is None


def test_erasure_deletes_the_data_and_keeps_the_account_and_audit(store):
    ann = patient(store)
    store.set_wrapped_key(ann.id, b"k" * 60, "k1")
    store.add_entries(ann.id, [Write(1_000, "k1", b"x", "c")], "ann")
    store.add_subscription(ann.id, "fp", b"s", "ann")
    counts = store.erase(ann.id, "admin", [])
    assert counts["entries"] == 1 and counts["push_subscriptions"] == 1
    assert store.wrapped_key(ann.id) is None and store.person(ann.id).erased is not None
    with pytest.raises(TailormlError, match="erased"):
        store.add_entries(ann.id, [Write(2_000, "k2", b"y", "c")], "ann")
    assert store.entries(ann.id) == []


def test_reads_are_audited_in_batches_and_flushed(store):
    ann = patient(store)
    for _ in range(3):
        store.record("bob", "read_entries", ann.id, {"returned": 2})
    store.flush_reads()
    rows = store.database.query(
        "SELECT details_json FROM audit_log WHERE action = 'read_entries' ORDER BY id"
    )
    assert len(rows) == 2  # the first read at once, the two others as one line
    assert '"reads": 2' in rows[1]["details_json"] and '"returned": 4' in rows[1]["details_json"]


def test_server_times_increase_across_writers_at_once(store_location):
    """Four connections write at once, two for each of two people (uploads and a delete):
    each person's server times (uploads and tombstones) are distinct, never reused. On
    SQLite the clock is one for all (no two times alike at all); on PostgreSQL it is each
    person's, so other people's uploads never wait for it."""
    stores = [PeopleStore(store_location) for _ in range(4)]
    people = [patient(stores[0], name) for name in ("ann", "eve")]
    stamps: dict[str, list[int]] = {person.id: [] for person in people}
    lock, start = threading.Lock(), threading.Barrier(4)

    def writer(k: int) -> None:
        person = people[k % 2]
        start.wait()
        for n in range(5):
            key = f"k{k}-{n}"
            (done,) = stores[k].add_entries(person.id, [Write(n, key, b"x", "c")], "t")
            with lock:
                stamps[person.id].append(done.srv_modified)
        stores[k].delete("entries", person.id, done.public_id, "t")

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for person in people:
        history = stores[0].v3_history("entries", person.id, 0, False, 100)
        times = [row.srv_modified for row in history]
        assert len(history) == 10 and len(set(times)) == 10 == len(set(stamps[person.id]))
        assert sum(row.deleted for row in history) == 2
    if stores[0].database.dialect == "sqlite":
        assert len({t for ts in stamps.values() for t in ts}) == 20  # one clock for all


def test_one_persons_decisions_take_turns_and_others_run_beside(store_location):
    """`decisions_of`: a second decider for the same person waits for the first one's
    transaction; on PostgreSQL a decider for another person does not wait (the lock is the
    person's row), on SQLite it does (the whole file's)."""
    first, second = PeopleStore(store_location), PeopleStore(store_location)
    ann, eve = patient(first, "ann"), patient(first, "eve")
    order, inside = [], threading.Event()

    def decide(store, person, label):
        with store.decisions_of(person.id):
            order.append(f"{label} in")
            inside.set()
            time.sleep(0.3)
            order.append(f"{label} out")

    holder = threading.Thread(target=decide, args=(first, ann, "a1"))
    holder.start()
    inside.wait()
    same = threading.Thread(target=decide, args=(second, ann, "a2"))
    same.start()
    same.join()
    holder.join()
    assert order == ["a1 in", "a1 out", "a2 in", "a2 out"]
    if first.database.dialect == "postgresql":
        order.clear()
        inside.clear()
        holder = threading.Thread(target=decide, args=(first, ann, "a"))
        holder.start()
        inside.wait()
        decide(second, eve, "e")
        holder.join()
        assert order.index("e in") < order.index("a out")  # ran beside ann's


def test_a_data_directory_migration_adds_the_columns_a_table_lacks_once(tmp_path):
    """SQLite's migrations (a PostgreSQL database's are Alembic revisions)."""
    store = PeopleStore(tmp_path / "data")
    with store.database.transaction() as connection:
        assert "lease_owner" in table_columns(connection, "jobs")
        assert add_columns(connection, "jobs", {"extra_ms": "INTEGER", "lease_owner": "TEXT"}) == [
            "extra_ms"
        ]
        assert add_columns(connection, "jobs", {"extra_ms": "INTEGER"}) == []
        names = [row[1] for row in connection.execute("PRAGMA table_info(jobs)").fetchall()]
        assert names[0] == "id" and names[-1] == "extra_ms"


def test_a_tables_columns_and_big_integers_read_alike(store):
    with store.database.transaction() as connection:
        names = [row[1] for row in connection.execute("PRAGMA table_info(jobs)").fetchall()]
        assert names[0] == "id" and "lease_owner" in names
        assert connection.execute("PRAGMA table_info(no_such_table)").fetchall() == []
    (row,) = store.database.query("SELECT ? * 1024 AS big, 'x' AS s", (2**40,))
    assert (row["big"], row[1], dict(row)) == (2**50, "x", {"big": 2**50, "s": "x"})


def at_once(n: int, work) -> list:
    """Run `work(k)` in `n` threads released together; their results (or exceptions)."""
    results, start = [None] * n, threading.Barrier(n)

    def run(k: int) -> None:
        start.wait()
        try:
            results[k] = work(k)
        except Exception as error:  # the test reads it
            results[k] = error

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_one_reading_uploaded_by_two_processes_at_once_is_stored_once(store_location):
    """Two uploads of the same reading at the same moment (an uploader retrying on
    another connection): one stores it, the other finds it (never a duplicate, never a
    unique-key error), on PostgreSQL because the person's row lock orders them."""
    stores = [PeopleStore(store_location) for _ in range(4)]
    ann = patient(stores[0])
    results = at_once(
        4, lambda k: stores[k].add_entries(ann.id, [Write(1_000, "k", b"x", "c")], "t")
    )
    assert sorted(r[0].outcome for r in results) == ["new", "same", "same", "same"]
    assert len(stores[0].entries(ann.id)) == 1


def test_two_requests_for_one_persons_personalization_make_one_job(store_location):
    stores = [PeopleStore(store_location) for _ in range(3)]
    ann = patient(stores[0])
    results = at_once(3, lambda k: stores[k].add_job(ann.id, "t"))
    jobs = [r for r in results if not isinstance(r, Exception)]
    assert len(jobs) == 1 and len(stores[0].jobs(ann.id)) == 1
    assert all("already under way" in str(r) for r in results if isinstance(r, Exception))


def test_a_data_directory_from_before_leases_and_per_person_clocks_is_brought_up_to_date(
    tmp_path,
):
    """An older data directory (a jobs table without the lease columns, no per-person
    clocks): opening the store adds what is missing, and the job left running without a
    lease is taken up again once. (A PostgreSQL database's upgrades are its revisions:
    tests/test_schema_versions.py.)"""
    store_location = tmp_path / "data"
    store = PeopleStore(store_location)
    ann = patient(store)
    job = store.add_job(ann.id, "t")
    with store.database.transaction() as connection:
        connection.execute("DROP TABLE srv_clocks")
        for column in ("lease_owner", "lease_expires_s", "expired_leases"):
            connection.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
        connection.execute("UPDATE jobs SET status = 'running', started = 'yesterday'")
    store.database.close()
    again = PeopleStore(store_location)  # opening migrates
    with again.database.transaction() as connection:
        assert {"lease_owner", "expired_leases"} <= table_columns(connection, "jobs")
        assert table_columns(connection, "srv_clocks") == {"person_id", "last_ms"}
    taken = again.claim_job("new", lease_seconds=30)
    assert (taken.id, taken.lease_owner, taken.expired_leases) == (job.id, "new", 1)
    (stamp,) = again.add_entries(ann.id, [Write(1, "k", b"x", "c")], "ann")
    assert stamp.srv_modified > 0


def test_each_backend_measures_its_tables_and_indexes(store):
    ann = patient(store)
    store.add_entries(ann.id, [Write(k, f"k{k}", b"s" * 100, "c") for k in range(200)], "ann")
    sizes = store.database.table_bytes()
    # PostgreSQL's partitions count in their table's and index's name
    assert {"entries", "people", "audit_log", "entries_by_modified"} <= set(sizes)
    assert sizes["entries"] >= 200 * 100  # the sealed bytes are in it
    assert list(sizes.values()) == sorted(sizes.values(), reverse=True)


def test_on_postgresql_a_threads_connection_closes_when_the_thread_is_gone(postgres_url):
    import gc

    store = PeopleStore(postgres_url)

    def connections() -> int:
        (row,) = store.database.query(
            "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
        )
        return int(row["n"])

    before = connections()
    threads = [threading.Thread(target=store.people) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    del threads, thread
    gc.collect()
    deadline = time.monotonic() + 5
    while connections() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert connections() == before
