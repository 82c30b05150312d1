"""`tailorml serve --workers 2`: two API processes on one data directory lose no
acknowledged upload and decide every one of them, even when one process is killed in the
middle of the uploads (uvicorn starts another in its place)."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from pathlib import Path

import httpx
from tests.service.conftest import Server, make_service_data

FIVE_MINUTES = 300_000


def children_of(pid: int) -> set[int]:
    """The API worker processes uvicorn started (not its resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == pid and b"spawn_main" in command:
                found.add(int(entry.name))
    return found


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_two_api_processes_keep_and_decide_every_acknowledged_upload(tmp_path, trained):
    uploads_survive_a_killed_process(tmp_path, trained)


def uploads_survive_a_killed_process(tmp_path, trained, database: str | None = None) -> None:
    """`serve --workers 2` (on `database`, a PostgreSQL URL, if given), one API process
    killed a second into 120 uploads from 8 uploaders: every acknowledged one is stored
    and decided."""
    service = make_service_data(tmp_path, trained, database)
    server = Server(service, extra=["--workers", "2", "--no-jobs"]).start()
    try:
        wait_for(lambda: len(children_of(server.process.pid)) == 2)
        alice = service.people["alice"]
        end = int(time.time() * 1000) - 121 * FIVE_MINUTES
        acknowledged: list[int] = []
        victim = min(children_of(server.process.pid))

        def upload(k: int) -> None:
            date = end + k * FIVE_MINUTES
            try:
                with server.client(alice.secret) as client:
                    answer = client.post(
                        "/api/v1/entries", json=[{"type": "sgv", "sgv": 100 + k % 7, "date": date}]
                    )
            except httpx.TransportError:
                return  # the killed process's connection: not acknowledged, the uploader retries
            if answer.status_code == 200:
                acknowledged.append(date)

        threading.Timer(1.0, os.kill, (victim, signal.SIGKILL)).start()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(upload, range(120)))
        wait_for(lambda: len(children_of(server.process.pid) - {victim}) == 2)  # replaced
        with server.client(alice.secret) as client:
            window = {"count": 10_000, "find[date][$gte]": end}
            stored = {e["date"] for e in client.get("/api/v1/entries.json", params=window).json()}
            decided = {
                a["reading_ms"] for a in client.get("/api/v1/alerts.json", params=window).json()
            }
        assert len(acknowledged) >= 100  # most went through while one process was down
        assert set(acknowledged) <= stored
        assert set(acknowledged) <= decided
    finally:
        server.kill(signal.SIGTERM)
