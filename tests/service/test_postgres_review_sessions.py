"""tests/service/test_review_sessions.py run on PostgreSQL: the same tests, in their order, on a
service whose tables are in a PostgreSQL database (tests/service/postgres_suite.py); the
tests that open SQLite's file themselves stay SQLite's."""

from tests.postgres_fixtures import collect_suite
from tests.service import test_review_sessions
from tests.service.postgres_suite import made, server, service_data  # noqa: F401

collect_suite(
    test_review_sessions,
    globals(),
    skip=(
        "test_the_cookie_is_a_stored_session_not_the_token",
        "test_a_data_directory_without_the_sessions_table_still_opens",
    ),
)
