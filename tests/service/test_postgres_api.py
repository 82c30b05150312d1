"""tests/service/test_api.py run on PostgreSQL: the same tests, in their order (uploads in
Nightscout's shape, decisions by the active model, approval and rollback, access between
people, credentials, revocation, bad payloads, the audit of reads, export) against a real
`tailorml serve --database URL`."""

from __future__ import annotations

import signal

import pytest
from tests.postgres_fixtures import collect_suite
from tests.service import test_api
from tests.service.conftest import Server, make_service_data

collect_suite(test_api, globals())


@pytest.fixture(scope="module")
def service_data(tmp_path_factory, trained, postgres_module_url):
    return make_service_data(tmp_path_factory.mktemp("apipg"), trained, postgres_module_url)


@pytest.fixture(scope="module")
def server(service_data):
    running = Server(service_data).start()
    yield running
    running.kill(signal.SIGTERM)
