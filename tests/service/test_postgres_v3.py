"""tests/service/test_nightscout_v3.py run on PostgreSQL: the same tests (API v3's tokens,
history by server time, deduplication, PATCH and DELETE, devicestatus and profile, access)
on a service whose tables are in a PostgreSQL database (`made.database`); only the SQLite
file migration test stays SQLite's."""

from __future__ import annotations

import pytest
from tests.postgres_fixtures import collect_suite
from tests.service import test_nightscout_v3 as suite
from tests.service.conftest import make_service_data

collect_suite(suite, globals(), skip=("test_an_existing_data_directory_opens_and_keeps_its_ids",))
app = suite.app  # its fixture, on this module's `made`


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained, postgres_module_url):
    return make_service_data(tmp_path_factory.mktemp("v3pg"), trained, postgres_module_url)


def test_the_service_runs_on_postgresql(app, made):
    _, service = app
    assert service.store.database.dialect == "postgresql"
    assert service.registry.database is service.store.database  # one connection per thread
