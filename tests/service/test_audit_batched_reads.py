"""Reads are audited in batches: one line per reader, person, kind of read and minute, with
how many reads it stands for and what they returned in all (a follower polling every
minute wrote 1,440 lines a day, each in its own transaction); the person's audit view and
export show them; denials are still written at once."""

from __future__ import annotations

from tailorml.registry import people


def _log(service, person_id: str) -> list:
    return service.store.database.query(
        "SELECT action, actor, details_json FROM audit_log WHERE individual = ? ORDER BY id",
        (person_id,),
    )


def test_a_followers_reads_are_one_audit_line_per_minute(app, made, monkeypatch):
    client, service = app
    alice, bob = made.people["alice"], made.people["bob"]
    minute = [1_000_000]
    monkeypatch.setattr(people.time, "time", lambda: minute[0] * 60.0 + 5)
    service.store.flush_reads()
    before = len(_log(service, alice.id))
    for _ in range(7):
        answer = client.get(f"/api/v1/entries.json?count=5&patient={alice.id}", headers=bob.secret)
        assert answer.status_code == 200
    client.get(f"/api/v1/alerts/current?patient={alice.id}", headers=bob.secret)
    assert len(_log(service, alice.id)) == before  # nothing written per read
    minute[0] += 1  # the next minute's first read writes the last minute's lines
    client.get(f"/api/v1/entries.json?count=5&patient={alice.id}", headers=bob.secret)
    lines = _log(service, alice.id)[before:]
    assert [(line["action"], line["actor"]) for line in lines] == [
        ("read_alerts", "bob (clinician)"),
        ("read_entries", "bob (clinician)"),
    ]
    import json

    entries = json.loads(lines[1]["details_json"])
    assert entries["reads"] == 7 and set(entries) == {"reads", "returned", "first", "last"}
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
