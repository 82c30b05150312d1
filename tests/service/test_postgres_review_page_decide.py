"""tests/service/test_review_page_decide.py run on PostgreSQL: the same tests, in their order, on a
service whose tables are in a PostgreSQL database (tests/service/postgres_suite.py)."""

from tests.postgres_fixtures import collect_suite
from tests.service import test_review_page_decide
from tests.service.postgres_suite import made, server, service_data  # noqa: F401

collect_suite(test_review_page_decide, globals())
