"""`tailorml serve --database postgresql://...`: the service's tables in PostgreSQL, its
files in --data. Real server processes (tests/service/conftest.py's `Server`, as
test_api_processes.py starts them on SQLite): uploads are stored, decided and read back,
and two API processes on one database lose no acknowledged upload and decide each reading
once. The database comes from tests/postgres_fixtures.py (a fresh one per test)."""

from __future__ import annotations

import collections
import concurrent.futures
import os
import signal
import subprocess
import sys
import time

import pytest
from tests.service.conftest import Server, make_service_data
from tests.service.test_api_processes import (
    FIVE_MINUTES,
    children_of,
    uploads_survive_a_killed_process,
    wait_for,
)
from tests.service.test_nightscout_v3 import jwt_of

from tailorml.service.crypto import write_key_file


def test_two_api_processes_on_one_postgresql_database(tmp_path, trained, postgres_url):
    service = make_service_data(tmp_path, trained, database=postgres_url)
    server = Server(
        service, extra=["--database", postgres_url, "--workers", "2", "--no-jobs"]
    ).start()
    try:
        wait_for(lambda: len(children_of(server.process.pid)) == 2)
        alice, carol = service.people["alice"], service.people["carol"]
        end = int(time.time() * 1000) - 71 * FIVE_MINUTES
        sent: dict[str, set[int]] = {"alice": set(), "carol": set()}

        def upload(person, k: int) -> int:
            date = end + k * FIVE_MINUTES
            with server.client(person.secret) as client:  # a new connection: either process
                answer = client.post(
                    "/api/v1/entries", json=[{"type": "sgv", "sgv": 100 + k % 7, "date": date}]
                )
            if answer.status_code == 200:
                sent[person.name].add(date)
            return answer.status_code

        def in_order(person) -> list[int]:
            return [upload(person, k) for k in range(30)]

        # two people at once, each one's readings in time order: each decided exactly once
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            codes = [c for done in pool.map(in_order, (alice, carol)) for c in done]
        # then one person's readings out of order from 8 uploaders: all kept and decided
        # (a reading that fills an earlier one's gap decides that one again, by design)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes += list(pool.map(lambda k: upload(alice, k), range(30, 70)))
        assert set(codes) == {200}
        window = {"count": 10_000, "find[date][$gte]": end}
        for person in (alice, carol):
            with server.client(person.secret) as client:
                entries = client.get("/api/v1/entries.json", params=window).json()
                alerts = client.get("/api/v1/alerts.json", params=window).json()
                status = client.get("/api/v3/status", headers=jwt_of(client, person)).json()
            assert sorted(e["date"] for e in entries) == sorted(sent[person.name])  # once each
            decided = collections.Counter(a["reading_ms"] for a in alerts)
            assert set(decided) == sent[person.name]
            first = {end + k * FIVE_MINUTES for k in range(30)}
            assert {decided[date] for date in first} == {1}  # in order: decided once
        assert status["result"]["storage"]["storage"] == "postgresql"
    finally:
        server.kill(signal.SIGTERM)


def test_an_api_process_killed_mid_upload_loses_no_acknowledged_upload(
    tmp_path, trained, postgres_url
):
    """test_api_processes.py's kill test on PostgreSQL: uvicorn replaces the killed process,
    whose transactions the server rolled back; what was acknowledged is stored and decided."""
    uploads_survive_a_killed_process(tmp_path, trained, postgres_url)


def test_an_unreachable_database_is_one_line_naming_the_option(tmp_path):
    url = "postgresql://tailorml:s3cret-word@127.0.0.1:1/service"
    key = write_key_file(tmp_path / "server.key")
    more = ["--database", url, "--key-file", str(key)]
    done = subprocess.run(
        [sys.executable, "-m", "tailorml", "serve", "--data", str(tmp_path / "data"), *more],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"COLUMNS": "200"},
    )
    assert done.returncode != 0
    said = done.stderr.strip() + done.stdout.strip()
    assert "s3cret" not in said
    assert len(said.splitlines()) == 1, said
    assert "--database" in said and "postgresql://tailorml@127.0.0.1:1/service" in said


def test_serve_refuses_more_connections_than_the_server_allows(postgres_url):
    from tailorml.cli_service import check_connection_budget
    from tailorml.errors import TailormlError

    check_connection_budget(postgres_url, workers=2, threads=16)  # 44: fits any default
    with pytest.raises(TailormlError, match=r"--workers 8 x \(--threads 40 \+ 6\) = 368"):
        check_connection_budget(postgres_url, workers=8, threads=40)


def test_a_lost_database_is_a_503_to_retry_and_a_full_disk_a_507():
    import asyncio

    import psycopg
    from starlette.requests import Request

    from tailorml.service.errors import HANDLERS

    request = Request({"type": "http", "method": "POST", "path": "/x", "headers": []})
    handler = HANDLERS[psycopg.Error]
    lost = asyncio.run(handler(request, psycopg.OperationalError("server closed the connection")))
    assert lost.status_code == 503 and lost.headers["Retry-After"] == "5"
    full = asyncio.run(handler(request, psycopg.errors.DiskFull("could not extend file")))
    assert full.status_code == 507
    other = asyncio.run(handler(request, psycopg.errors.UndefinedTable("no such table")))
    assert other.status_code == 500


PG_WORKER = """
import os, sys
from tailorml.registry.people import PeopleStore
job, owner = int(sys.argv[2]), sys.argv[sys.argv.index("--lease-owner") + 1]
if "postgresql" in " ".join(sys.argv):
    sys.exit("the database URL was on the command line")
PeopleStore(os.environ["TAILORML_DATABASE"]).finish_job(job, "done", owner, session_id=None)
"""


def test_a_job_process_finds_the_database_in_its_environment(tmp_path, postgres_url, monkeypatch):
    """The job runner of `serve/worker --database` hands its job's process the URL in
    $TAILORML_DATABASE (a command line is readable by every user), and the job is recorded
    in the database."""
    from tests.service.test_job_leases import store_with_jobs

    from tailorml.service.crypto import ServerKey
    from tailorml.service.jobs import JobRunner

    (tmp_path / "pg_worker.py").write_text(PG_WORKER)
    paths = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.delenv("TAILORML_DATABASE", raising=False)
    store, (job,) = store_with_jobs(postgres_url, 1)
    data = tmp_path / "data"
    data.mkdir()
    key = ServerKey.load(write_key_file(tmp_path / "server.key"), data)
    runner = JobRunner(data, key, None, 5.0, poll_seconds=0.1, database=postgres_url)
    runner.worker_module = "pg_worker"
    runner.start()
    try:
        wait_for(lambda: store.job(job).status not in ("queued", "running"), timeout=60)
    finally:
        runner.stop()
    assert store.job(job).status == "done", (data / "jobs" / f"{job}.log").read_text()


def test_the_users_commands_work_on_the_database(tmp_path, postgres_url):
    """`tailorml users ... --database URL`: accounts, assignments and consent in
    PostgreSQL (a data directory is named but gets no registry file)."""
    from typer.testing import CliRunner

    from tailorml.cli import app
    from tailorml.registry.people import PeopleStore

    before = os.umask(0o022)
    os.umask(before)
    where = ["--data", str(tmp_path / "data"), "--database", postgres_url]
    try:

        def run(*args):
            return CliRunner().invoke(app, ["users", *args, *where])

        assert run("add", "ann", "--role", "patient").exit_code == 0
        assert run("add", "doc", "--role", "clinician").exit_code == 0
        assert run("assign", "doc", "ann").exit_code == 0
        withdrawn = run("consent", "ann", "--withdraw")
        assert withdrawn.exit_code == 0, withdrawn.output
        listed = run("list")
        assert "ann" in listed.output and "doc" in listed.output
    finally:
        os.umask(before)
    store = PeopleStore(postgres_url)
    ann = store.by_name("ann")
    assert store.patients_of(store.by_name("doc").id) == [ann.id]
    assert store.consented(ann.id) is False
    assert not (tmp_path / "data" / "registry.sqlite").exists()


def test_a_store_dropped_without_close_closes_its_connections(postgres_url):
    """A PostgresDatabase no store uses any more closes its connections (a thread's
    connection otherwise lived as long as its thread: the main thread's, for ever)."""
    import gc

    import psycopg

    from tailorml.registry.people import PeopleStore

    def connections() -> int:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            (count,) = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            ).fetchone()
        return count

    before = connections()
    store = PeopleStore(postgres_url)
    store.people()
    assert connections() == before + 1
    del store
    gc.collect()
    wait_for(lambda: connections() == before, timeout=10)
