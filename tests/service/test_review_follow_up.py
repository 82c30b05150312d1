"""The follow-up of an approved model on the patient's page: eight days of readings with two
lows and a false alarm a day, decided by a scripted model, counted by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from tests.service.conftest import make_service_data, propose_candidate
from tests.service.test_safe_alerts import ScriptedRuntime

from tailorml.policy import AlertPolicy
from tailorml.service import pages
from tailorml.service.auth import add_person
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey

NOW_S = 1_700_000_000.0
NOW_MS = int(NOW_S * 1000)
STEP_MS = 5 * 60_000
DAYS = 8


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained):
    return make_service_data(tmp_path_factory.mktemp("followup"), trained)


def replace_created(active, created_ms: int) -> SimpleNamespace:
    created = datetime.fromtimestamp(created_ms / 1000, UTC).isoformat()
    return SimpleNamespace(kind=active.kind, candidate_id=active.candidate_id, created=created)


def eight_days() -> list[float]:
    values = [120.0] * (DAYS * 288)
    for day in range(DAYS):
        values[100 + 288 * day] = 110.0  # P(hypo) 0.95 and no low after: a false alarm a day
    # a low alerted 15 min ahead (at 90), then urgent at 60 (below 70 and falling)
    values[996:1004] = [100.0, 90.0, 80.0, 75.0, 60.0, 60.0, 60.0, 60.0]
    values[2000:2004] = [65.0] * 4  # a low nothing foresaw: urgent only once it is there
    return values


def test_the_follow_up_counts_lows_and_false_alarms_since_approval(made, trained, monkeypatch):
    service = Service(
        made.data,
        ServerKey.load(made.key_file, made.data),
        database=made.database,
        clock=lambda: NOW_S,
    )
    policy = replace(AlertPolicy(), threshold=0.9)
    runtime = ScriptedRuntime(policy, {90.0: 0.95, 110.0: 0.95})
    monkeypatch.setattr(service.runtimes, "for_person", lambda _: runtime)
    monkeypatch.setattr(service.live, "policy_of", lambda _: policy)
    person, _ = add_person(service.store, "followed", "patient", "test")
    values = eight_days()
    start = NOW_MS - (len(values) - 1) * STEP_MS
    readings = [
        {"type": "sgv", "sgv": v, "date": start + k * STEP_MS} for k, v in enumerate(values)
    ]
    for first in range(0, len(readings), 1500):
        service.upload_entries(person, readings[first : first + 1500])
    candidate = propose_candidate(made, person.id, trained)  # held out: 0.5/day, 80 %
    approved = datetime.fromtimestamp((NOW_MS - DAYS * 86_400_000) / 1000, UTC).isoformat()
    active = SimpleNamespace(kind="personalized", candidate_id=candidate, created=approved)

    shown = pages.follow_up(service, person, person, active, NOW_MS)

    assert shown["days"] == pytest.approx(DAYS)
    assert (shown["lows"], shown["caught"], shown["early"], shown["missed"]) == (2, 1, 1, 1)
    # raised: 8 false alarms at 110, the alert at 90 and two urgent lows (60, 65)
    assert shown["alerts_per_day"] == pytest.approx(11 / DAYS)
    assert shown["false_per_day"] == pytest.approx(8 / DAYS)
    assert shown["warnings"] == [
        "1.00 false alarms a day since approval, against 0.50 on held-out data",
        "50.0 % of lows alerted early since approval, against 80.0 % on held-out data",
    ]
    assert shown["whole"] is True
    # approved long ago: judged on its last 28 days only (all eight days of readings here)
    older = replace_created(active, NOW_MS - 90 * 86_400_000)
    later = pages.follow_up(service, person, person, older, NOW_MS)
    assert later["days"] == pytest.approx(28) and later["whole"] is False
    assert later["false_per_day"] == pytest.approx(8 / 28)  # within 1.5 x 0.5: no warning
    assert later["warnings"] == [shown["warnings"][1]]  # the early share still is
    # the predefined model in use: nothing to follow
    predefined = SimpleNamespace(kind="predefined", candidate_id=None, created=approved)
    assert pages.follow_up(service, person, person, predefined, NOW_MS) is None
