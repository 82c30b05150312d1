"""Safe alerts in the service, on hand-made traces: a reading from the future hides nothing,
an old decision says it is stale, a gap never alerts, a low that is happening alarms
whatever the model says, the alert does not flicker, a backfill re-decides the newest
reading, and deciding one reading at a time gives what one batch gives.

The model is replaced by a scripted one whose P(hypo) is a function of the window's last
reading, so every expected decision below is worked out by hand from the rules in
docs/alerts.md (threshold 0.9, hysteresis 0.05, snooze 30 min, re-alert after 10 mg/dL).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
from tests.service.conftest import make_service_data

from tailorml.policy import AlertPolicy
from tailorml.service.auth import add_person
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey

NOW_S = 1_700_000_000.0
NOW_MS = int(NOW_S * 1000)
MINUTE_MS = 60_000


@dataclass(frozen=True)
class ScriptedRuntime:
    """Stands in for the ONNX model: P(hypo) = `hypo_of(last reading)`."""

    policy: AlertPolicy
    hypo_of: dict[float, float]
    model_id: int = 1
    sha256: str = "scripted"
    kind: str = "predefined"
    candidate_id: int | None = None

    def proba(self, windows: np.ndarray) -> np.ndarray:
        hypo = np.array([self.hypo_of.get(float(w[0, -1]), 0.01) for w in windows])
        return np.stack([(1 - hypo) * 0.9, hypo, (1 - hypo) * 0.1], axis=1)


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained):
    return make_service_data(tmp_path_factory.mktemp("safe"), trained)


@pytest.fixture
def clock():
    return {"now": NOW_S}


@pytest.fixture
def core(made, clock, monkeypatch):
    service = Service(
        made.data,
        ServerKey.load(made.key_file, made.data),
        database=made.database,
        clock=lambda: clock["now"],
    )
    policy = replace(AlertPolicy(), threshold=0.9)
    service.scripted = {}

    def scripted(person_id):
        return ScriptedRuntime(policy, service.scripted)

    monkeypatch.setattr(service.runtimes, "for_person", scripted)
    return service


def fresh_person(core, name):
    """Each test its own person: no readings or decisions from another test."""
    person, _ = add_person(core.store, name, "patient", "test")
    return person


def trace(values, end_ms=NOW_MS):
    """Readings every 5 minutes ending at `end_ms` (None: a dropped reading)."""
    times = [end_ms - (len(values) - 1 - i) * 5 * MINUTE_MS for i in range(len(values))]
    return [
        {"type": "sgv", "sgv": v, "date": t}
        for t, v in zip(times, values, strict=True)
        if v is not None
    ]


def decisions_of(core, person, readings):
    """Upload one reading at a time; each decision as (decision, kind)."""
    out = []
    for reading in readings:
        _, decided = core.upload_entries(person, [reading])
        out.extend((d.decision, d.kind) for d in decided)
    return out


def test_a_reading_two_hours_ahead_hides_no_urgent_low(core):
    person = fresh_person(core, "future1")
    batch = trace([120] * 20 + [90, 75, 62, 50])
    batch.append({"type": "sgv", "sgv": 180, "date": NOW_MS + 120 * MINUTE_MS})
    stored, decisions = core.upload_entries(person, batch)
    # the future reading is stored and said so; it is never decided
    assert "warning" in stored[-1] and "120 min after the server's clock" in stored[-1]["warning"]
    assert all("warning" not in e for e in stored[:-1])
    assert NOW_MS + 120 * MINUTE_MS not in [d.reading_ms for d in decisions]
    current = core.current_alert(person, None)
    assert current["reading_ms"] == NOW_MS and current["cgm"] == 50
    assert current["decision"] == "urgent" and current["urgent"] is True
    assert current["stale"] is False and current["age_minutes"] == 0
    assert core.current_entry(person, None)[0]["sgv"] == 50
    # the full history still has the future reading: nothing is lost
    assert core.entries(person, None, 1, None, None, "sgv")[0]["sgv"] == 180


def test_a_reading_a_few_minutes_ahead_is_current(core):
    person = fresh_person(core, "future2")
    batch = trace([120] * 24, end_ms=NOW_MS + 4 * MINUTE_MS)  # a phone 4 min fast
    stored, decisions = core.upload_entries(person, batch)
    assert all("warning" not in e for e in stored)
    assert decisions[-1].reading_ms == NOW_MS + 4 * MINUTE_MS
    assert core.current_alert(person, None)["age_minutes"] == 0


def test_a_45_minute_old_decision_is_stale_and_alarms(core, clock):
    person = fresh_person(core, "stale")
    core.upload_entries(person, trace([120] * 24))
    assert core.current_alert(person, None)["stale"] is False
    clock["now"] = NOW_S + 45 * 60
    current = core.current_alert(person, None)
    assert current["decision"] == "none" and current["age_minutes"] == 45.0
    assert current["stale"] is True and current["stale_alarm"] is True
    clock["now"] = NOW_S + 20 * 60  # stale (> 15 min), not yet an alarm (<= 30 min)
    current = core.current_alert(person, None)
    assert (current["stale"], current["stale_alarm"]) == (True, False)


def test_a_window_with_one_missing_reading_never_alerts(core):
    person = fresh_person(core, "gap")
    core.scripted.update({100.0: 0.99})  # the model would say hypo for sure
    values = [100] * 24
    values[10] = None
    _, decisions = core.upload_entries(person, trace(values))
    newest = decisions[-1]
    assert newest.decision == "no_decision" and newest.kind is None
    assert newest.reason.startswith("1 of 24 readings missing")
    assert not any(d.decision in ("alert", "urgent") for d in decisions)


def test_falling_through_64_alarms_whatever_the_model_says(core):
    person = fresh_person(core, "falling")
    # the model never predicts a low here (P(hypo) = 0.01 everywhere)
    got = decisions_of(core, person, trace([100] * 24 + [80, 72, 68, 64]))
    assert got[-4:] == [("none", None), ("none", None), ("urgent", "hypo"), ("urgent", "hypo")]
    current = core.current_alert(person, None)
    assert current["urgent"] is True and "below 70 mg/dL and falling" in current["reason"]


def test_an_urgent_low_sounds_inside_the_snooze_and_a_fall_re_alerts(core):
    person = fresh_person(core, "snooze")
    core.scripted.update({95.0: 0.95, 90.0: 0.95, 84.0: 0.95, 78.0: 0.95})
    got = decisions_of(core, person, trace([100] * 24 + [95, 90, 84, 78, 71, 66]))
    # 95 alerts; 90 and 84 are snoozed (5 and 11 mg/dL below 95: 11 >= 10 re-alerts at
    # 84); 78 is snoozed (6 below 84); 71 gets P(hypo) 0.01: in range; 66 < 70 and falling
    assert got[-6:] == [
        ("alert", "hypo"),
        ("snoozed", "hypo"),
        ("alert", "hypo"),
        ("snoozed", "hypo"),
        ("none", None),
        ("urgent", "hypo"),
    ]


def test_an_alert_does_not_flicker_around_its_threshold(core):
    person = fresh_person(core, "hover")
    # P(hypo) hovers around the 0.9 threshold: 0.92, 0.88, 0.92, 0.88, ... then 0.80
    core.scripted.update({101.0: 0.92, 102.0: 0.88, 103.0: 0.80})
    hovering = [101, 102] * 3 + [103]
    got = decisions_of(core, person, trace([110] * 24 + hovering))
    # without hysteresis 102 would say "in range" every other reading; with it the alert
    # stays on (snoozed, within 30 min of the alert) until P(hypo) falls below 0.85
    assert got[-7:] == [("alert", "hypo")] + [("snoozed", "hypo")] * 5 + [("none", None)]


def test_a_backfill_re_decides_the_newest_reading(core):
    person = fresh_person(core, "backfill")
    values = trace([120] * 24)
    missing = values.pop(12)
    _, first = core.upload_entries(person, values)
    assert first[-1].decision == "no_decision"
    assert core.current_alert(person, None)["decision"] == "no_decision"
    _, second = core.upload_entries(person, [missing])  # the phone backfills the gap
    # decided again: the backfilled reading and the 11 after it whose window had the gap
    # (all undecided until now), the newest among them
    assert [d.reading_ms for d in second] == [v["date"] for v in trace([120] * 24)[12:]]
    current = core.current_alert(person, None)
    assert current["reading_ms"] == NOW_MS and current["decision"] == "none"


def test_one_reading_at_a_time_decides_as_one_batch(core):
    one, batch = fresh_person(core, "onebyone"), fresh_person(core, "batch")
    core.scripted.update({95.0: 0.95, 90.0: 0.88, 84.0: 0.95, 101.0: 0.92})
    readings = trace([100] * 24 + [95, 90, 84, 101, 101, 66, 60, 80, 100])
    alone = decisions_of(core, one, readings)
    _, together = core.upload_entries(batch, readings)
    assert alone == [(d.decision, d.kind) for d in together]


def test_readings_uploaded_out_of_order_are_all_decided_once_their_window_fills(core):
    # as concurrent requests deliver them: the newest first, one before it last
    person = fresh_person(core, "outoforder")
    readings = trace([120] * 28)
    core.upload_entries(person, readings[:24])
    late, newer = readings[24], readings[25:]
    for reading in newer:
        core.upload_entries(person, [reading])  # each has a gap where `late` belongs
    assert all(d["decision"] == "no_decision" for d in core.live.history(person.id, limit=3))
    core.upload_entries(person, [late])
    latest: dict[int, str] = {}
    for decision in core.live.history(person.id, limit=100):  # newest decision first
        latest.setdefault(decision["reading_ms"], decision["decision"])
    assert [latest[r["date"]] for r in readings[24:]] == ["none"] * 4


def test_an_upload_that_races_an_erasure_stores_nothing(core):
    from tailorml.errors import TailormlError

    person = fresh_person(core, "erased")
    core.upload_entries(person, trace([120] * 5))
    in_flight = core.keyring.cipher(person.id)  # a request already past its checks holds it
    core.erase(person, "test")
    core.keyring._ciphers[person.id] = in_flight
    with pytest.raises(TailormlError, match="has been erased"):
        core.upload_entries(person, trace([130] * 5, end_ms=NOW_MS + 600_000))
    assert core.store.entries(person.id, None, None, 100) == []
