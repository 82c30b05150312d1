"""tests/service/test_nightscout_v3.py run on PostgreSQL: the same tests (API v3's tokens,
history by server time, deduplication, PATCH and DELETE, devicestatus and profile, access)
on a service whose tables are in a PostgreSQL database (`made.database`); only the SQLite
file migration test stays SQLite's."""

from __future__ import annotations

import pytest
from tests.service import test_nightscout_v3 as suite
from tests.service.conftest import make_service_data
from tests.service.test_nightscout_v3 import (  # noqa: F401 (the suite, collected here)
    test_a_bad_record_is_a_400_as_nightscout_answers,
    test_a_forged_expired_or_superseded_jwt_is_refused,
    test_a_v3_reading_is_stored_and_decided_as_a_v1_upload_is,
    test_another_patients_records_stay_out_of_reach,
    test_devicestatus_and_profile_store_as_androidaps_sends_them,
    test_the_token_is_exchanged_for_a_jwt_that_opens_api_v3,
    test_treatments_deduplicate_patch_and_delete_as_nightscout,
    test_v1_uploads_are_in_the_v3_history_androidaps_reads,
)

app = suite.app  # its fixture, on this module's `made`


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained, postgres_module_url):
    return make_service_data(tmp_path_factory.mktemp("v3pg"), trained, postgres_module_url)


def test_the_service_runs_on_postgresql(app, made):
    _, service = app
    assert service.store.database.dialect == "postgresql"
    assert service.registry.database is service.store.database  # one connection per thread
