"""A real PostgreSQL server for the store's tests, started once per test session.

`pgserver` (PyPI) runs a PostgreSQL 16 from its wheel in a temporary directory, root
included, so the suite stays PyPI-only; where it is not installed, Debian's `postgresql`
package (`/usr/lib/postgresql/*/bin/initdb`) is used; where neither is, the PostgreSQL
cases skip and say why (TAILORML_TEST_POSTGRES=debian picks Debian's even with pgserver
installed, to test that path). Each test gets a fresh database made from a template that already
holds the people store's schema (CREATE DATABASE ... TEMPLATE copies files: ~0.1 s),
dropped after the test (WITH (FORCE): the test's store may still hold connections).

`store_location` is what a `PeopleStore` opens: a data directory, or a PostgreSQL URL;
tests that take it run once per backend (`[sqlite]`, `[postgresql]`).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

TEMPLATE = "tailorml_template"
_numbers = itertools.count()


class _Debian:
    """Debian's PostgreSQL binaries as a throwaway server on a Unix socket (as pgserver)."""

    def __init__(self, bin_dir: str, root: Path) -> None:
        self.bin, self.data, self.socket = Path(bin_dir), root / "data", root
        user = ["-U", "postgres"]
        run_as = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(root, "postgres")
            run_as = ["runuser", "-u", "postgres", "--"]
        self.run_as = run_as
        subprocess.run(
            [*run_as, self.bin / "initdb", "-D", self.data, *user, "-A", "trust"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *run_as,
                self.bin / "pg_ctl",
                "-D",
                self.data,
                "-l",  # the server's output to a file: not to our pipe, which it would hold open
                root / "server.log",
                "-w",
                "-o",
                f"-k {self.socket} -c listen_addresses=''",
                "start",
            ],
            check=True,
            capture_output=True,
        )

    def get_uri(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket}"

    def cleanup(self) -> None:
        subprocess.run(
            [*self.run_as, self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "stop"],
            capture_output=True,
        )


def _url(base: str, database: str) -> str:
    """`base` (a postgresql:// URL) naming `database` instead."""
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[dict]:
    """{'url': the server's maintenance database, 'start_s': seconds it took to start}."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[dev]')")
    root = Path(tempfile.mkdtemp(prefix="tailorml-pg-"))
    started = time.perf_counter()
    server = None
    try:
        if os.environ.get("TAILORML_TEST_POSTGRES") == "debian":
            raise ImportError("the Debian server asked for")
        with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR (a container)
            warnings.simplefilter("ignore")
            import pgserver

            server = pgserver.get_server(root, cleanup_mode="stop")
        base = server.get_uri()
    except ImportError:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip(
                "no PostgreSQL server to test against: neither pgserver (pip install -e"
                " '.[dev]') nor Debian's postgresql (apt-get install postgresql) is installed"
            )
        server = _Debian(str(Path(found[-1]).parent), root)
        base = server.get_uri()
    start_s = time.perf_counter() - started
    try:
        _make_template(base)
        yield {"url": base, "start_s": start_s}
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _make_template(base: str) -> None:
    """A database holding the people store's schema, copied for each test."""
    import psycopg

    from tailorml.registry.people import PeopleStore

    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        admin.execute(f"CREATE DATABASE {TEMPLATE} TEMPLATE template0")
    store = PeopleStore(_url(base, TEMPLATE))
    store.database.close()


def _fresh_database(postgres_server, template: str = TEMPLATE) -> Iterator[str]:
    """A new database copied from `template` (the schema's; template0: nothing), dropped
    after."""
    import psycopg

    base = postgres_server["url"]
    name = f"tailorml_test_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    try:
        yield _url(base, name)
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def postgres_url(postgres_server) -> Iterator[str]:
    """A fresh database with the people store's schema, dropped after the test."""
    yield from _fresh_database(postgres_server)


@pytest.fixture(scope="module")
def postgres_module_url(postgres_server) -> Iterator[str]:
    """A fresh database for a test module (a service's `made` data), dropped after it."""
    yield from _fresh_database(postgres_server)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path) -> str | Path:
    """Where a `PeopleStore` lives: a data directory, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "data"
    return request.getfixturevalue("postgres_url")


def collect_suite(module, namespace: dict, skip: tuple[str, ...] = ()) -> None:
    """Put `module`'s test functions into `namespace` (a test module's globals), in their
    order: pytest collects them there again, with that module's fixtures (a `made` or a
    `service_data` on PostgreSQL) and the suite's own other fixtures, those `namespace`
    does not define. `skip`: tests that open SQLite's file themselves.

    The copies are marked `postgres_suites`: `make test` leaves them out (they double the
    service suites' time, about 7 minutes on 2 cores) and `make test-postgres` runs them;
    the store's own contract and the multi-process tests run on both backends in both."""
    marks = namespace.get("pytestmark", [])
    marks = marks if isinstance(marks, list) else [marks]
    namespace["pytestmark"] = [*marks, pytest.mark.postgres_suites]
    for name, value in vars(module).items():
        fixture = type(value).__name__ == "FixtureFunctionDefinition" or hasattr(
            value, "_pytestfixturefunction"
        )
        test = name.startswith("test_") and callable(value) and name not in skip
        if test or (fixture and name not in namespace):
            namespace[name] = value


@pytest.fixture
def empty_postgres_url(postgres_server) -> Iterator[str]:
    """A fresh database with no schema at all (what an operator creates for the service),
    dropped after the test."""
    yield from _fresh_database(postgres_server, "template0")
