"""tailorml's decisions as devicestatus records for follower apps (issue 36, item 2).

Replayed request shapes:
- Nightguard, nightscout/nightguard nightguard/NightscoutService.swift `readDeviceStatus`:
  `GET api/v1/devicestatus.json?count=5` (the token of the base URI as `?token=`), then the
  first record holding `pump` is the pump's status ("the last 5 entries should contain the
  entry with the extended pump entries").
- Nightscout's own client, nightscout/cgm-remote-monitor lib/plugins/upbat.js, loop.js,
  openaps.js, pump.js: each takes the newest status holding its key (`'uploader' in
  status`, `'loop' in status`, …).
- Loop / Trio, LoopKit/NightscoutKit NightscoutClient.swift `fetchDeviceStatus`:
  `find[created_at][$gte]` and `[$lte]` (ISO 8601) with `count`.
The composed records are checked against `GET /api/v1/alerts/current`, field by field.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import make_service_data
from tests.service.test_nightscout_compat import LOOP_STATUS, _stamp, secret, xdrip_entries

from tailorml.service.app import create_app
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey

FIVE_MINUTES = 300_000
LOOP_KEYS = {"loop", "openaps", "pump", "uploader", "uploaderBattery", "override"}


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained):
    return make_service_data(tmp_path_factory.mktemp("followers"), trained)


@pytest.fixture(scope="module")
def app(made):
    service = Service(made.data, ServerKey.load(made.key_file, made.data), database=made.database)
    with TestClient(create_app(service, run_jobs=False), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def uploaded(app, made):
    """alice: 26 readings as xDrip+ sends them, the newest 30 s ago, and a Loop status 20 s
    after each of the last three (Loop uploads after each reading)."""
    alice = made.people["alice"]
    now = int(time.time() * 1000)
    entries = xdrip_entries([150 - 3 * i for i in range(26)], now - 30_000)
    assert app.post("/api/v1/entries", json=entries, headers=secret(alice)).status_code == 200
    loops = [_stamp(LOOP_STATUS, e["date"] + 20_000) for e in entries[-3:]]
    for loop in loops:
        assert app.post("/api/v1/devicestatus", json=loop, headers=secret(alice)).status_code == 200
    return entries


def loop_ms(reading: dict) -> int:
    """The time of the Loop status posted 20 s after `reading` (its created_at has whole
    seconds)."""
    return (reading["date"] + 20_000) // 1000 * 1000


def iso(ms: int) -> str:
    """By hand: what a follower reads as `created_at` (UTC, milliseconds, Z)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def test_nightguard_reads_tailormls_decision_and_still_finds_the_pump(app, made, uploaded):
    alice = made.people["alice"]
    answer = app.get(f"/api/v1/devicestatus.json?count=5&token={alice.token}")
    assert answer.status_code == 200
    statuses = answer.json()
    assert len(statuses) == 5
    mills = [s["mills"] for s in statuses]
    assert mills == sorted(mills, reverse=True)
    # merged by time: Loop's status (20 s after a reading) before that reading's decision
    assert [s["device"] for s in statuses] == [
        "loop://iPhone",
        "tailorml://predefined",
        "loop://iPhone",
        "tailorml://predefined",
        "loop://iPhone",
    ]
    # Nightguard: the first record with `pump` is the newest pump status
    pump = next(s for s in statuses if "pump" in s)
    assert pump["mills"] == loop_ms(uploaded[-1]) and pump["pump"]["reservoir"] == 120.5

    ours = statuses[1]
    current = app.get("/api/v1/alerts/current", headers=secret(alice)).json()
    newest = uploaded[-1]["date"]
    assert current["reading_ms"] == newest
    assert ours["created_at"] == iso(newest) and ours["mills"] == newest
    assert ours["device"] == "tailorml://" + current["model_kind"]
    shown = ours["tailorml"]
    assert shown["decision"] == current["decision"]
    assert shown["kind"] == current["kind"]
    assert shown["p_hypo"] == current["probabilities"]["hypo"]
    assert shown["p_hyper"] == current["probabilities"]["hyper"]
    assert shown["threshold"] == current["threshold"]
    assert shown["cgm"] == current["cgm"] == 75  # 150 - 3 * 25, the newest reading
    assert shown["reason"] == current["reason"]
    assert shown["model"] == {
        "id": current["model_id"],
        "sha256": current["model_sha256"],
        "kind": current["model_kind"],
    }
    # the probability of the kind it alerts for (hypo when none), as /api/v2/properties
    kind = current["kind"] or "hypo"
    assert shown["probability"] == current["probabilities"][kind]
    prop = app.get("/api/v2/properties/tailorml", headers=secret(alice)).json()["tailorml"]
    assert shown["display"] == prop["display"] and shown["level"] == prop["level"]
    # the id: the reading's time, then "tailor" in hex; the same at every read
    assert ours["_id"] == f"{newest // 1000:08x}{newest % 1000:04x}7461696c6f72"
    again = app.get(f"/api/v1/devicestatus.json?count=5&token={alice.token}").json()
    assert again == statuses


def test_nightscouts_plugins_pass_over_the_composed_records(app, made, uploaded):
    """upbat.js, loop.js, openaps.js and pump.js take the newest status holding their key:
    a composed record holds none of them, so the phone's battery and the loop stay Loop's."""
    alice = made.people["alice"]
    statuses = app.get("/api/v1/devicestatus.json?count=50", headers=secret(alice)).json()
    ours = [s for s in statuses if s["device"].startswith("tailorml://")]
    assert len(ours) == 26  # one per reading
    assert all(not (LOOP_KEYS & set(s)) for s in ours)
    assert set(ours[0]) == {"_id", "device", "created_at", "mills", "tailorml"}
    uploader = next(s for s in statuses if "uploader" in s)
    assert uploader["device"] == "loop://iPhone" and uploader["uploader"]["battery"] == 76
    found = app.get("/api/v2/properties/upbat,iob", headers=secret(alice)).json()
    assert found["upbat"]["level"] == 76 and found["iob"]["iob"] == 1.25


def test_loops_time_filter_and_count_apply_to_the_merged_records(app, made, uploaded):
    """NightscoutKit's fetchDeviceStatus: find[created_at][$gte|$lte] with ISO times."""
    alice = made.people["alice"]
    since_ms, until_ms = uploaded[-6]["date"], uploaded[-2]["date"]
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since_ms / 1000))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until_ms / 1000))
    path = (
        f"/api/v1/devicestatus.json?find[created_at][$gte]={since}&find[created_at][$lte]={until}"
    )
    within = app.get(path + "&count=100", headers=secret(alice)).json()
    # readings -6 … -2 (whole seconds: the filter's ISO times name them exactly) and the
    # Loop status 20 s after readings -3 and -2 (the one after -2 is past $lte)
    low, high = since_ms // 1000 * 1000, until_ms // 1000 * 1000
    assert all(low <= s["mills"] <= high for s in within)
    ours = [s["mills"] for s in within if s["device"].startswith("tailorml://")]
    assert ours == [e["date"] for e in reversed(uploaded[-6:-1]) if low <= e["date"] <= high]
    loops = [s["mills"] for s in within if s["device"] == "loop://iPhone"]
    assert loops == [loop_ms(uploaded[-3])]
    two = app.get(path + "&count=2", headers=secret(alice)).json()
    assert two == within[:2]


def test_a_corrected_reading_shows_its_latest_decision_once(app, made, uploaded):
    """A corrected value for the newest reading is decided again: the record shows the
    latest decision (as alerts/current does), and the reading has one record, not two."""
    alice = made.people["alice"]
    corrected = dict(uploaded[-1], sgv=52)
    assert app.post("/api/v1/entries", json=[corrected], headers=secret(alice)).status_code == 200
    history = app.get("/api/v1/alerts?count=100", headers=secret(alice)).json()
    assert sum(1 for a in history if a["reading_ms"] == corrected["date"]) == 2
    statuses = app.get("/api/v1/devicestatus.json?count=100", headers=secret(alice)).json()
    same = [s for s in statuses if s["mills"] == corrected["date"]]
    assert len(same) == 1 and same[0]["tailorml"]["cgm"] == 52
    assert same[0]["tailorml"]["decision"] == "urgent"  # 52 mg/dL: at or below 55
    current = app.get("/api/v1/alerts/current", headers=secret(alice)).json()
    assert same[0]["tailorml"]["reason"] == current["reason"]
    app.post("/api/v1/entries", json=[uploaded[-1]], headers=secret(alice))  # back


def test_api_v3_devicestatus_shows_only_what_uploaders_stored(app, made, uploaded):
    """AndroidAPS syncs devicestatus over API v3: no composed record there."""
    alice = made.people["alice"]
    found = app.get("/api/v3/devicestatus?limit=100", headers=secret(alice)).json()["result"]
    assert found and all(r["device"] == "loop://iPhone" for r in found)
    history = app.get("/api/v3/devicestatus/history/0", headers=secret(alice)).json()["result"]
    assert all(not r["device"].startswith("tailorml://") for r in history)


def test_access_and_consent_are_the_decisions_own(app, made, uploaded):
    alice, bob, mallory, carol = (made.people[n] for n in ("alice", "bob", "mallory", "carol"))
    seen = app.get(f"/api/v1/devicestatus.json?patient={alice.id}", headers=secret(bob))
    assert seen.status_code == 200
    assert any(s["device"].startswith("tailorml://") for s in seen.json())
    denied = app.get(f"/api/v1/devicestatus.json?patient={alice.id}", headers=secret(mallory))
    assert denied.status_code == 403
    own = app.get("/api/v1/devicestatus.json?count=100", headers=secret(carol))
    assert own.status_code == 200 and own.json() == []
    assert app.get("/api/v1/devicestatus.json").status_code == 401
    withdrawn = {"clinicians": {bob.id: False}}
    assert app.put("/api/v1/people/me/consent", json=withdrawn, headers=secret(alice)).is_success
    try:
        for path in ("/api/v1/devicestatus.json", "/api/v1/alerts/current"):
            answer = app.get(f"{path}?patient={alice.id}", headers=secret(bob))
            assert answer.status_code == 403, path
    finally:
        granted = {"clinicians": {bob.id: True}}
        app.put("/api/v1/people/me/consent", json=granted, headers=secret(alice))
