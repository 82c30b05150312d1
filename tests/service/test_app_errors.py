"""Failures of the server's own storage, and large bodies, answered in the API's error
shape (in-process: the failure is injected into the running service)."""

from __future__ import annotations

import errno
import sqlite3

import pytest
from fastapi.testclient import TestClient
from tests.privacy.conftest import he_model
from tests.service.conftest import make_service_data

from tailorml.models.cnn import save_model
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
