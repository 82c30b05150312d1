"""Reads are audited in batches per reader, person, kind of read and hour: the hour's first
read is written at once (who read whose data is on disk whatever happens to the process),
the further reads as one line with how many they were and what they returned in all (a
follower polling every minute wrote 1,440 lines a day, each in its own transaction); an
upload in the hour does not cut the batch; the person's audit view and export show them;
denials are still written at once."""

from __future__ import annotations

import json

from tailorml.registry import people


def _log(service, person_id: str) -> list:
    return service.store.database.query(
        "SELECT action, actor, details_json FROM audit_log WHERE individual = ? ORDER BY id",
        (person_id,),
    )


def test_a_followers_reads_are_one_audit_line_per_hour(app, made, monkeypatch):
    client, service = app
    alice, bob = made.people["alice"], made.people["bob"]
    hour = [500_000]
    monkeypatch.setattr(people.time, "time", lambda: hour[0] * 3600.0 + 5)
    service.store.flush_reads()
    before = len(_log(service, alice.id))
    for _ in range(7):
        answer = client.get(f"/api/v1/entries.json?count=5&patient={alice.id}", headers=bob.secret)
        assert answer.status_code == 200
    client.get(f"/api/v1/alerts/current?patient={alice.id}", headers=bob.secret)
    reading = {"type": "sgv", "sgv": 120, "date": int(hour[0] * 3600e3), "direction": "Flat"}
    assert client.post("/api/v1/entries", json=[reading], headers=alice.secret).is_success
    lines = _log(service, alice.id)[before:]
    # each kind's first read at once, the six further entries reads wait for the hour's end
    assert [(line["action"], line["details_json"]) for line in lines] == [
        ("read_entries", '{"returned": 0}'),
        ("read_alerts", '{"returned": 0}'),
        ("upload_entries", lines[2]["details_json"]),
    ]
    before += 3
    hour[0] += 1  # the next hour's first read writes the last hour's lines
    client.get(f"/api/v1/entries.json?count=5&patient={alice.id}", headers=bob.secret)
    lines = _log(service, alice.id)[before:]
    # the last hour's further reads (the alerts read had none), then this hour's first
    assert [(line["action"], line["actor"]) for line in lines] == [
        ("read_entries", "bob (clinician)"),
        ("read_entries", "bob (clinician)"),
    ]
    entries = json.loads(lines[0]["details_json"])
    assert entries["reads"] == 6 and set(entries) == {"reads", "returned", "first", "last"}
    assert json.loads(lines[1]["details_json"]) == {"returned": 1}
    # the person's audit view writes what is waiting first, and shows it
    view = client.get("/api/v1/audit", headers=alice.secret).json()
    batched = [v for v in view if v["action"] == "read_entries" and v["actor"] == "bob (clinician)"]
    assert set(batched[-1]["details"]) == {"returned"}  # one read: its line as before
    assert sum(v["details"].get("reads", 1) for v in batched) >= 8


def test_a_denied_read_is_written_at_once(app, made):
    client, service = app
    alice, mallory = made.people["alice"], made.people["mallory"]
    before = len(_log(service, alice.id))
    answer = client.get(f"/api/v1/entries.json?patient={alice.id}", headers=mallory.secret)
    assert answer.status_code == 403
    assert [line["action"] for line in _log(service, alice.id)[before:]] == ["denied:read_entries"]
