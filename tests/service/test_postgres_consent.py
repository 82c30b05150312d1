"""tests/service/test_consent_candidates.py run on PostgreSQL: a withdrawal of consent
closes the proposals awaiting review, refuses a session registered after it, and stops a
job running at it, when the people store and the registry share a PostgreSQL database."""

from __future__ import annotations

import pytest
from tests.service.conftest import make_service_data
from tests.service.test_consent_candidates import (  # noqa: F401 (the suite, collected here)
    test_a_job_running_at_the_withdrawal_registers_nothing,
    test_a_session_registered_after_the_withdrawal_is_refused,
    test_a_withdrawal_closes_the_candidates_awaiting_review,
    test_the_worker_of_a_job_withdrawn_while_recording_exits_without_a_result,
)


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained, postgres_module_url):
    return make_service_data(tmp_path_factory.mktemp("consentpg"), trained, postgres_module_url)
