"""Fixtures that put a service suite on PostgreSQL: a module imports them with
`collect_suite(test_x, globals())` (tests/postgres_fixtures.py) and its tests get a `made`
(and `service_data`, the same data) whose tables are in a module-scoped PostgreSQL
database, and a real `serve --database` `server` on it; conftest's `app` follows `made`."""

from __future__ import annotations

import signal

import pytest
from tests.service.conftest import Server, make_service_data


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained, postgres_module_url):
    return make_service_data(tmp_path_factory.mktemp("pg"), trained, postgres_module_url)


@pytest.fixture(scope="module")
def service_data(made):
    return made


@pytest.fixture(scope="module")
def server(service_data):
    running = Server(service_data).start()
    yield running
    running.kill(signal.SIGTERM)
