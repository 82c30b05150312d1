"""Glucose no sensor reads, and many values for one reading (or treatment) in one
batch, refused at the boundary with a one-line reason naming the record and field; the
sensor's own codes and a retry stay accepted (bad input round 3)."""

from __future__ import annotations

import json
import time

import pytest

FIVE_MINUTES = 300_000


def hours_ago(hours: float) -> int:
    return int(time.time() * 1000) - int(hours * 3_600_000)


def refused(answer) -> dict:
    return json.loads(answer.headers["X-Refused-Records"])


def test_one_batch_stores_the_last_of_many_values_for_one_reading(app, made):
    client, service = app
    alice = made.people["alice"]
    at = hours_ago(30)
    batch = [{"type": "sgv", "sgv": 100 + i / 2, "date": at} for i in range(900)]
    history_before = len(service.store.replaced(alice.id, "entries"))
    answer = client.post("/api/v1/entries", json=batch, headers=alice.secret)
    assert answer.status_code == 200, answer.text
    assert [e["sgv"] for e in answer.json()] == [549.5]  # 100 + 899 / 2, the last value
    header = refused(answer)
    assert header["refused"] == 899
    assert [r["index"] for r in header["records"]] == list(range(20))
    assert header["records"][0]["message"] == (
        "entries[0]: entries[899] of this batch is another value for the same record; only "
        "the last one is stored"
    )
    stored = client.get(
        f"/api/v1/entries?find[date][$gte]={at}&find[date][$lte]={at}", headers=alice.secret
    ).json()
    assert [e["sgv"] for e in stored] == [549.5]
    # nothing went to the record's history: the 899 were never stored
    assert len(service.store.replaced(alice.id, "entries")) == history_before


def test_a_repeat_of_the_same_value_in_one_batch_is_still_a_retry(app, made):
    client, _ = app
    alice = made.people["alice"]
    entry = {"type": "sgv", "sgv": 120, "date": hours_ago(29)}
    answer = client.post("/api/v1/entries", json=[entry, entry], headers=alice.secret)
    assert answer.status_code == 200 and "X-Refused-Records" not in answer.headers
    first, second = answer.json()
    assert first["_id"] == second["_id"] and first["sgv"] == second["sgv"] == 120


def test_one_batch_stores_the_last_of_many_versions_of_one_treatment(app, made):
    client, _ = app
    alice = made.people["alice"]
    at = "2025-11-02T10:00:00Z"
    batch = [{"eventType": "Meal Bolus", "created_at": at, "carbs": c} for c in (10, 20, 30)]
    answer = client.post("/api/v1/treatments", json=batch, headers=alice.secret)
    assert answer.status_code == 200, answer.text
    assert [t["carbs"] for t in answer.json()] == [30]
    assert refused(answer) == {
        "refused": 2,
        "records": [
            {
                "index": i,
                "message": f"treatments[{i}]: treatments[2] of this batch is another value for "
                "the same record; only the last one is stored",
            }
            for i in (0, 1)
        ],
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"sgv": 1000},
            "entries[0].sgv: 1000 mg/dL is above 600, more than any sensor or meter reads "
            "(send mg/dL; a sensor's HIGH is 401)",
        ),
        (
            {"sgv": 600.5},
            "entries[0].sgv: 600.5 mg/dL is above 600, more than any sensor or meter reads "
            "(send mg/dL; a sensor's HIGH is 401)",
        ),
        (
            {"type": "mbg", "mbg": 601},
            "entries[0].mbg: 601 mg/dL is above 600, more than any sensor or meter reads "
            "(send mg/dL; a sensor's HIGH is 401)",
        ),
        (
            {"sgv": 5.5},
            "entries[0].sgv: 5.5 is no mg/dL reading (below 20 only a sensor's whole-number "
            "error codes are stored); send mg/dL, not mmol/L",
        ),
        ({"sgv": -1}, "entries[0].sgv: -1 is outside 0..600"),
    ],
)
def test_glucose_no_sensor_reads_is_refused_naming_the_field(app, made, entry, message):
    client, _ = app
    record = {"type": "sgv", "date": hours_ago(28)} | entry
    answer = client.post("/api/v1/entries", json=[record], headers=made.people["carol"].secret)
    assert answer.status_code == 422
    assert answer.json() == {"status": 422, "message": message}


def test_sensor_codes_and_the_range_ends_are_stored(app, made):
    """39 and 401 are Dexcom's LOW and HIGH (real cohorts hold them), 5 an error code
    (stored, never decided), 20 and 600 the ends of the range."""
    client, _ = app
    start = hours_ago(27)
    values = [39, 401, 5, 20, 600, 600.0, 19.0]
    batch = [
        {"type": "sgv", "sgv": v, "date": start + i * FIVE_MINUTES} for i, v in enumerate(values)
    ]
    answer = client.post("/api/v1/entries", json=batch, headers=made.people["carol"].secret)
    assert answer.status_code == 200 and "X-Refused-Records" not in answer.headers
    assert [e["sgv"] for e in answer.json()] == values
