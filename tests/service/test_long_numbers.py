"""A number longer than Python converts (4,300 digits) is refused in one line naming
the record and field, not with Python's own int-limit text (bad input round 3)."""

from __future__ import annotations

import json

import pytest


def refused(answer) -> dict:
    return json.loads(answer.headers["X-Refused-Records"])


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/api/v1/treatments",
            '[{"eventType": "Bolus", "created_at": "2025-11-03T10:00:00Z", "insulin": '
            + "9" * 5_000
            + "}]",
            "treatments[0].insulin: a number of 5,000 digits is too long for any field",
        ),
        (
            "/api/v1/treatments",
            '{"eventType": "Bolus", "created_at": "2025-11-03T10:00:00Z", "pump": {"serial": -'
            + "1" * 6_000
            + "}}",
            "treatments[0].pump.serial: a number of 6,000 digits is too long for any field",
        ),
        (
            "/api/v1/entries",
            '[{"type": "sgv", "sgv": 1' + "0" * 5_000 + ', "date": 1765000000000}]',
            "entries[0].sgv: a number of 5,001 digits is too long for any field",
        ),
        (
            "/api/v1/entries",
            '[{"type": "sgv", "sgv": 100, "date": ' + "7" * 4_500 + "}]",
            "entries[0].date: a number of 4,500 digits is too long for any field",
        ),
        (
            "/api/v1/devicestatus",
            '[{"device": "x", "uploader": {"battery": ' + "5" * 5_000 + "}}]",
            "devicestatus[0].uploader.battery: a number of 5,000 digits is too long for any field",
        ),
    ],
)
def test_a_number_too_long_for_python_is_one_line_naming_the_field(app, made, path, body, message):
    client, _ = app
    answer = client.post(path, content=body.encode(), headers=made.people["carol"].secret)
    assert answer.status_code == 422
    assert answer.json() == {"status": 422, "message": message}


def test_a_long_number_beside_good_records_refuses_only_its_own(app, made):
    client, _ = app
    good = '{"eventType": "Note", "created_at": "2025-11-04T10:00:00Z", "notes": "ok"}'
    bad = '{"eventType": "Bolus", "created_at": "2025-11-04T11:00:00Z", "insulin": ' + "9" * 5_000
    body = f"[{good}, {bad}}}]"
    answer = client.post(
        "/api/v1/treatments", content=body.encode(), headers=made.people["carol"].secret
    )
    assert answer.status_code == 200 and [t["notes"] for t in answer.json()] == ["ok"]
    assert refused(answer)["records"] == [
        {
            "index": 1,
            "message": "treatments[1].insulin: a number of 5,000 digits is too long for any field",
        }
    ]
