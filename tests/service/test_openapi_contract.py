"""Contract: schemathesis reads /openapi.json and sends what it describes — valid requests and
invalid ones (negative mode) — to the service in-process (ASGI), with a patient's api-secret.
Every answer must be one the schema declares: no 5xx, a documented status code, content type
and headers, a body that matches its schema; and a route that declares credentials must refuse
a request without them or with wrong ones (401/403).

Not run here, and why:
- the review page (/login, /review…): HTML forms for a browser, not in the schema
  (tests/service/test_review_page.py drives it);
- the 200 answers of the encrypted-alert routes: they need an HE-friendly model and a public
  context of about 50 MB (tests/service/test_encrypted.py); this service runs without
  --he-model, so past their credential and role checks they answer 400, which is checked;
- schemathesis' coverage phase: its ~3,700 boundary cases for these 35 operations took 40 s to
  build at collection alone, and the run 4 minutes on 2 cores (it found nothing more), far
  past this file's budget (~60 s); the examples and fuzzing phases run, with hostile values
  for the query parameters the service reads itself;
- its stateful phase: the schema declares no links between operations to follow.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.service.conftest import make_service_data

from tailorml.registry.people import PeopleStore
from tailorml.service.app import create_app
from tailorml.service.auth import secret_sha1, token_sha256
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]
# alice's token: fixed, because schemathesis makes its tests (and sets their credentials) at
# collection, before the fixture that creates her account; the fixture gives her this one
TOKEN = "tm_contract-test-token-of-alice-000000000000"
# what random text rarely is, given to the query parameters the service parses itself: digits
# int() refuses ("²" — these found a 500), more digits than it converts, a control character,
# a non-ASCII decimal digit, numbers past any range
HOSTILE = ["²", "-¹²", "1" * 5_000, "\u0000", "٣", "9" * 40, "1e400", "NaN", "-0"]
HAND_PARSED = [
    "count",
    "patient",
    "confirm",
    *(f"find[{f}][${op}]" for f in ("date", "dateString", "created_at") for op in ("gte", "lt")),
]
SERVICE: dict[str, object] = {}  # the app, once the fixture made it


async def service_app(scope, receive, send):
    """The service of the `app` fixture (it needs the trained model). schemathesis makes its
    tests at collection, before any fixture, so they call this stand-in, which passes each
    request on. (schemathesis.pytest.from_fixture would load the schema from a fixture, but its
    tests fail on pytest 9.2, whose nodes have no `_nodeid` any more.)"""
    await SERVICE["app"](scope, receive, send)


# The schema is the routes' own: an app built without a service (never called) serves it.
schema = schemathesis.openapi.from_dict(
    create_app(None, run_jobs=False).openapi(),  # type: ignore[arg-type]
    config=SchemathesisConfig.from_dict(
        {
            # the patient's api-secret, as a Nightscout uploader sends it
            "auth": {"openapi": {"apiSecret": {"api_key": secret_sha1(TOKEN)}}},
            "dictionaries": {"hostile": {"values": HOSTILE}},
            "parameters": {
                f"query.{name}": {"dictionary": "hostile", "probability": 0.25}
                for name in HAND_PARSED
            },
            "generation": {"mode": "all", "deterministic": True},
            "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        }
    ),
)
schema.app = service_app  # as from_asgi loads it: every call, and every probe, in-process


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained):
    made = make_service_data(tmp_path_factory.mktemp("contract"), trained)
    store = PeopleStore(made.data)
    store.rotate(made.people["alice"].id, token_sha256(TOKEN), secret_sha1(TOKEN), "test")
    return made


@pytest.fixture(scope="module")
def app(made):
    service = Service(made.data, ServerKey.load(made.key_file, made.data))
    SERVICE["app"] = create_app(service, run_jobs=False)
    return SERVICE["app"]


@schema.parametrize()
@settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_is_one_the_schema_declares(case, app):
    answer = case.call_and_validate(checks=CHECKS)
    if case.meta is not None and case.meta.generation.mode.is_positive:
        # a valid request with her valid credentials: the calls reached the service
        assert answer.status_code != 401, answer.text


def test_the_schema_describes_bodies_parameters_errors_and_credentials(app):
    described = app.openapi()
    assert described == schema.raw_schema  # what the contract test ran on
    json.dumps(described)  # plain JSON
    assert set(described["components"]["securitySchemes"]) >= {"apiSecret", "bearer", "token"}
    assert "HTTPValidationError" not in described["components"]["schemas"]
    ids = [
        o["operationId"] for operations in described["paths"].values() for o in operations.values()
    ]
    assert len(ids) == len(set(ids)) == 72
    for path, operations in described["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            public = path.startswith("/api/v1/status")
            assert ("security" in operation) != public, where
            assert public or "401" in operation["responses"], where
            if method in ("post", "put"):
                assert "requestBody" in operation, where
            for code, answer in operation["responses"].items():
                assert answer["headers"]["Cache-Control"], where
                if code[0] in "45":
                    shape = answer["content"]["application/json"]["schema"]["$ref"]
                    assert shape.rsplit("/", 1)[1] in ("Error", "Conflict"), (where, code)
    entries = described["paths"]["/api/v1/entries"]["get"]
    named = {p["name"] for p in entries["parameters"]}
    assert {"count", "patient", "find[date][$gte]", "find[dateString][$lt]", "find[type]"} <= named


@pytest.mark.parametrize(
    "query",
    [
        "count=²",
        "count=" + "1" * 5_000,
        "find[date][$gte]=²",
        "find[date][$lt]=-¹²",
        "find[created_at][$gte]=³",
    ],
)
def test_digits_int_cannot_read_are_a_422_not_a_500(app, query):
    """What schemathesis found with the hostile values: a superscript digit passes isdigit()
    but int() refuses it, and int() converts at most 4,300 digits (both were 500s)."""
    client = TestClient(app, raise_server_exceptions=False)
    route = "treatments" if "created_at" in query else "entries"
    answer = client.get(f"/api/v1/{route}?{query}", headers={"api-secret": secret_sha1(TOKEN)})
    assert answer.status_code == 422, answer.text
    assert answer.json()["message"].startswith(query.split("=")[0])
