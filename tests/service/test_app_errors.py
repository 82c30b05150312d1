"""Failures of the server's own storage, and large bodies, answered in the API's error
shape (in-process: the failure is injected into the running service)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import sqlite3
import time

import pytest
from fastapi.testclient import TestClient
from tests.privacy.conftest import he_model
from tests.service.conftest import make_service_data

from tailorml.models.cnn import save_model
from tailorml.service import app as app_module
from tailorml.service.app import create_app
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey


@pytest.fixture(scope="module")
def app_and_people(tmp_path_factory, trained):
    root = tmp_path_factory.mktemp("errors")
    data = make_service_data(root, trained)
    save_model(he_model(), root / "he.pt")
    service = Service(data.data, ServerKey.load(data.key_file, data.data), he_model=root / "he.pt")
    with TestClient(create_app(service, run_jobs=False), raise_server_exceptions=False) as client:
        yield client, service, data.people


def _disk_full(*_args):
    raise OSError(errno.ENOSPC, "No space left on device")


def _database_full(*_args):
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorcode = sqlite3.SQLITE_FULL
    raise error


@pytest.mark.parametrize("failure", [_disk_full, _database_full], ids=["disk", "database"])
def test_full_storage_is_a_507_that_says_so(app_and_people, monkeypatch, failure):
    client, service, people = app_and_people
    monkeypatch.setattr(service, "register_context", failure)
    answer = client.put(
        "/api/v1/encrypted/context", content=b"keys", headers=people["alice"].bearer
    )
    assert answer.status_code == 507
    assert answer.json() == {
        "status": 507,
        "message": "the server's storage is full; retry later",
    }


def test_another_os_error_stays_an_internal_error(app_and_people, monkeypatch):
    client, service, people = app_and_people

    def denied(*_args):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(service, "register_context", denied)
    answer = client.put(
        "/api/v1/encrypted/context", content=b"keys", headers=people["alice"].bearer
    )
    assert answer.status_code == 500 and "internal error" in answer.json()["message"]


# -- context uploads that hold a slot: raw ASGI calls, so the body can arrive as slowly as a
# test needs (a test client sends it all at once)


async def _put_context(app, account, body_parts, gap: float = 0.0, release=None) -> dict:
    """One PUT of a public context whose body parts arrive `gap` seconds apart, or after
    `release` is set; returns the status and the JSON answer."""
    parts = list(body_parts)
    first = len(parts)
    sent: list[dict] = []

    async def receive() -> dict:
        if release is not None and len(parts) == 1:
            await release.wait()
        elif len(parts) < first:
            await asyncio.sleep(gap)
        part = parts.pop(0)
        return {"type": "http.request", "body": part, "more_body": bool(parts)}

    async def send(message: dict) -> None:
        sent.append(message)

    name, value = next(iter(account.bearer.items()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": "/api/v1/encrypted/context",
        "raw_path": b"/api/v1/encrypted/context",
        "query_string": b"",
        "headers": [(name.lower().encode(), value.encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return {"status": start["status"], "json": json.loads(body)}


@pytest.fixture()
def upload_app(app_and_people, monkeypatch):
    _, service, people = app_and_people
    registered: list[tuple[str, bytes]] = []

    def register(caller, body):
        registered.append((caller.id, body))
        return {"context_sha256": "0" * 64, "bytes": len(body), "replaced": []}

    monkeypatch.setattr(service, "register_context", register)
    monkeypatch.setattr(service.encrypted, "context_limit", lambda: 1000)  # bytes per upload
    return create_app(service, run_jobs=False), people, registered


def test_a_context_sent_too_slowly_is_a_408_and_frees_its_slot(upload_app, monkeypatch):
    app, people, registered = upload_app
    monkeypatch.setattr(app_module, "CONTEXT_GRACE_SECONDS", 0.3)
    monkeypatch.setattr(app_module, "CONTEXT_MIN_BYTES_PER_SECOND", 2048)
    started = time.monotonic()
    # 10 bytes every 0.2 s: the second part is due by 0.3 s + 10 / 2048 s ≈ 0.305 s and
    # comes at 0.2 s, the third is due by 0.3 s + 20 / 2048 s ≈ 0.31 s and would come at 0.4 s
    parts = [b"x" * 10] * 3 + [b"y"]
    answer = asyncio.run(_put_context(app, people["alice"], parts, gap=0.2))
    assert time.monotonic() - started < 2.0
    assert answer == {
        "status": 408,
        "json": {
            "status": 408,
            "message": "the public context arrived slower than 2 KiB/s after the first 0 s "
            "(20 bytes in 0 s); send it over a faster connection",
        },
    }
    assert registered == []
    # the slot and the account's upload are free again: a prompt body goes through
    answer = asyncio.run(_put_context(app, people["alice"], [b"ab", b"cd"], gap=0.01))
    assert answer["status"] == 200 and registered == [(people["alice"].id, b"abcd")]


def test_a_stalled_context_upload_ends_after_the_idle_time(upload_app, monkeypatch, caplog):
    app, people, registered = upload_app
    caplog.set_level(logging.INFO, logger="tailorml.service")
    monkeypatch.setattr(app_module, "CONTEXT_GRACE_SECONDS", 100.0)  # far from the rate floor
    monkeypatch.setattr(app_module, "CONTEXT_IDLE_SECONDS", 1.0)
    started = time.monotonic()
    answer = asyncio.run(_put_context(app, people["alice"], [b"x" * 10, b"y"], gap=5.0))
    assert 1.0 <= time.monotonic() - started < 3.0
    assert answer["status"] == 408
    assert answer["json"]["message"] == (
        "no byte of the public context came for 1 s (10 bytes in 1 s); check the connection "
        "and send it again"
    )
    assert registered == []
    # the operator's log says whose upload it was
    assert f"PUT /api/v1/encrypted/context by {people['alice'].id}: 408, no byte" in caplog.text


def test_one_context_upload_per_account_and_a_memory_budget(upload_app, monkeypatch):
    app, people, registered = upload_app
    alice, carol = people["alice"], people["carol"]
    monkeypatch.setattr(app_module, "CONTEXT_UPLOAD_BYTES", 2500)  # two uploads of 1,000

    async def scenario() -> list[dict]:
        release = asyncio.Event()
        slow = asyncio.create_task(_put_context(app, alice, [b"ke", b"ys"], release=release))
        await asyncio.sleep(0.1)  # alice's first upload now waits for its last part
        second = await _put_context(app, alice, [b"again"])
        other = await _put_context(app, carol, [b"carol"])
        monkeypatch.setattr(app_module, "CONTEXT_UPLOAD_BYTES", 1500)  # room for one
        full = await _put_context(app, carol, [b"carol again"])
        release.set()
        return [await slow, second, other, full]

    first, second, other, full = asyncio.run(scenario())
    assert second["status"] == 429
    assert second["json"]["message"] == (
        "a public context of this account is already being uploaded (another device, or a "
        "broken attempt: it ends within 30 s of its last byte); retry then"
    )
    assert full["status"] == 503 and "too many public contexts" in full["json"]["message"]
    assert other["status"] == 200 and first["status"] == 200
    assert registered == [(carol.id, b"carol"), (alice.id, b"keys")]
