"""tests/service/test_consent_candidates.py run on PostgreSQL: a withdrawal of consent
closes the proposals awaiting review, refuses a session registered after it, and stops a
job running at it, when the people store and the registry share a PostgreSQL database."""

from __future__ import annotations

import pytest
from tests.postgres_fixtures import collect_suite
from tests.service import test_consent_candidates
from tests.service.conftest import make_service_data

collect_suite(test_consent_candidates, globals())


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained, postgres_module_url):
    return make_service_data(tmp_path_factory.mktemp("consentpg"), trained, postgres_module_url)
