"""tests/service/test_follower_status.py run on PostgreSQL: the same tests, in their order, on a
service whose tables are in a PostgreSQL database (tests/service/postgres_suite.py)."""

from tests.postgres_fixtures import collect_suite
from tests.service import test_follower_status
from tests.service.postgres_suite import made, server, service_data  # noqa: F401

collect_suite(test_follower_status, globals())
