"""What the fifth hostile pass and the leftovers of the third found in the service, each
refused or answered at the boundary: contradictory times in devicestatus and treatments,
HEAD on the GET routes, numbers a client did not mean (-0.0, underflow), the audit
log's `count`."""

from __future__ import annotations

import time

import pytest

HOUR_AGO_MS = int(time.time() * 1000) - 3_600_000


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


@pytest.mark.parametrize("field", ["mills", "date"])
def test_a_devicestatus_whose_mills_or_date_contradicts_created_at_is_refused(app, made, field):
    client, _ = app
    alice = made.people["alice"]
    status = {"created_at": iso(HOUR_AGO_MS), field: HOUR_AGO_MS - 86_400_000, "device": "x"}
    answer = client.post("/api/v1/devicestatus", json=[status], headers=alice.secret)
    assert answer.status_code == 422
    assert f"[0]: {field} (" in answer.json()["message"] and "1,440 min" in answer.json()["message"]


def test_a_devicestatus_whose_mills_agrees_is_stored_with_that_instant(app, made):
    client, _ = app
    alice = made.people["alice"]
    when = HOUR_AGO_MS - 7_000
    status = {"created_at": iso(when), "mills": when, "device": "agrees"}
    stored = client.post("/api/v1/devicestatus", json=status, headers=alice.secret).json()[0]
    assert stored["mills"] == when and stored["created_at"] == iso(when)
    back = client.get("/api/v1/devicestatus.json?count=50", headers=alice.secret).json()
    assert [s["mills"] for s in back if s.get("device") == "agrees"] == [when]


def test_a_profile_may_start_at_another_time_than_it_was_created(app, made):
    client, _ = app
    alice = made.people["alice"]
    profile = {"created_at": iso(HOUR_AGO_MS), "startDate": iso(HOUR_AGO_MS - 86_400_000)}
    answer = client.post("/api/v1/profile", json=profile | {"store": {}}, headers=alice.secret)
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("timestamp", "said"),
    [
        (iso(HOUR_AGO_MS - 3_600_000), "timestamp ("),  # an hour from created_at
        ("not a time", "timestamp: 'not a time' is not an ISO 8601"),
        (True, "timestamp: must be epoch milliseconds or ISO 8601, not a boolean"),
    ],
)
def test_a_treatments_timestamp_is_checked_like_created_at(app, made, timestamp, said):
    client, _ = app
    alice = made.people["alice"]
    treatment = {"eventType": "Note", "created_at": iso(HOUR_AGO_MS), "timestamp": timestamp}
    answer = client.post("/api/v1/treatments", json=[treatment], headers=alice.secret)
    assert answer.status_code == 422 and said in answer.json()["message"]


def test_a_treatment_with_only_a_timestamp_is_stored_at_it(app, made):
    client, _ = app
    alice = made.people["alice"]
    treatment = {"eventType": "Note", "timestamp": iso(HOUR_AGO_MS - 60_000), "notes": "ts"}
    stored = client.post("/api/v1/treatments", json=treatment, headers=alice.secret).json()[0]
    assert stored["date"] == HOUR_AGO_MS - 60_000
    assert stored["created_at"] == iso(HOUR_AGO_MS - 60_000)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/entries.json",
        "/api/v1/entries/current.json",
        "/api/v1/treatments",
        "/api/v1/devicestatus.json",
        "/api/v1/verifyauth",
        "/api/v2/properties",
        "/pebble",
        "/api/v1/alerts/current",
        "/api/v1/status.json",
        "/api/v1/entries/",  # a trailing slash, as xDrip+ writes it
    ],
)
def test_head_answers_wherever_get_does_without_a_body(app, made, path):
    client, _ = app
    alice = made.people["alice"]
    get = client.get(path, headers=alice.secret)
    head = client.head(path, headers=alice.secret)
    assert head.status_code == get.status_code == 200
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["cache-control"] == "no-store"


def test_head_is_refused_like_get_without_credentials_and_on_a_post_only_path(app):
    client, _ = app
    assert client.head("/api/v1/entries.json").status_code == 401
    answer = client.head("/api/v1/model/rollback")  # POST only: 405 as GET is
    assert answer.status_code == 405 and answer.content == b""
