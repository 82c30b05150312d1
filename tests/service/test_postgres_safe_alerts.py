"""tests/service/test_safe_alerts.py run on PostgreSQL: the same tests, in their order, on a
service whose tables are in a PostgreSQL database (tests/service/postgres_suite.py)."""

from tests.postgres_fixtures import collect_suite
from tests.service import test_safe_alerts
from tests.service.postgres_suite import made, server, service_data  # noqa: F401

collect_suite(test_safe_alerts, globals())
