"""Nightscout compatibility as a tested contract: each test replays the requests an app sends,
shaped as in its public source, against the service in-process (ASGI).

Sources (read for the request shapes; cited again per test):
- Nightscout itself, nightscout/cgm-remote-monitor: lib/api/experiments/index.js,
  lib/api/verifyauth.js, lib/api/status.js, lib/server/entries.js (create: upsert by sysTime
  and type), lib/server/treatments.js (create: upsert by identifier, _id, or created_at and
  eventType), lib/plugins/bgnow.js (bgnow and delta properties), lib/server/pebble.js.
- Loop / Trio: LoopKit/NightscoutKit Sources/NightscoutKit/NightscoutClient.swift (checkAuth
  at /api/v1/experiments/test; POST answers must hold as many objects as sent; PUT
  /api/v1/treatments with _id; DELETE /api/v1/treatments/<id>; POST /api/v1/profile; GET
  /api/v1/profile/current; devicestatus read with find[created_at]; treatments read with
  find[timestamp]).
- xDrip+: NightscoutFoundation/xDrip app/src/main/java/com/eveningoutpost/dexdrip/
  utilitymodels/NightscoutUploader.java (base URL `https://SECRET@host/api/v1/`, entries with
  sgv/date/dateString/direction/device/filtered/unfiltered/rssi/noise, devicestatus with
  `uploaderBattery`, treatments with `uuid`); xdrip/xdrip_docs docs/use/cloud.md.
- AndroidAPS NSClient (API v1 uploads): nightscout/AndroidAPS plugins/sync/.../nsclient
  (treatments with isSMB, pumpId, pumpType, pumpSerial; temp targets with targetTop and
  targetBottom; profile switches with profileJson; devicestatus with openaps.iob,
  openaps.suggested/enacted, pump.battery, uploaderBattery).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import make_service_data

from tailorml.registry.people import PeopleStore
from tailorml.service.app import create_app
from tailorml.service.auth import add_person
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey

FIVE_MINUTES = 300_000


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained):
    return make_service_data(tmp_path_factory.mktemp("compat"), trained)


@pytest.fixture(scope="module")
def app(made):
    service = Service(made.data, ServerKey.load(made.key_file, made.data))
    with TestClient(create_app(service, run_jobs=False), raise_server_exceptions=False) as client:
        yield client, service


def secret(account) -> dict:
    """What Loop, Trio, xDrip+ and AndroidAPS send: the SHA-1 of the API secret."""
    return {"api-secret": hashlib.sha1(account.token.encode()).hexdigest()}


def xdrip_entries(values, end_ms) -> list[dict]:
    """Entries as xDrip+'s NightscoutUploader posts them (one object per reading)."""
    out = []
    for i, value in enumerate(values):
        date = end_ms - (len(values) - 1 - i) * FIVE_MINUTES
        out.append(
            {
                "device": "xDrip-DexcomG6",
                "date": date,
                "dateString": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(date / 1000)),
                "sgv": value,
                "delta": 1.5,
                "direction": "Flat",
                "type": "sgv",
                "filtered": 175000,
                "unfiltered": 176000,
                "rssi": 100,
                "noise": 1,
                "sysTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(date / 1000)),
            }
        )
    return out


# -- the secret check, verifyauth and status --------------------------------------------------


def test_loop_trio_and_xdrip4ios_pass_their_secret_check(app, made):
    """LoopKit/NightscoutKit NightscoutClient.swift checkAuth: GET /api/v1/experiments/test
    with the api-secret header; 200 is success, 401 is "unauthorized" (Nightscout:
    lib/api/experiments/index.js answers {"status": "ok"})."""
    client, _ = app
    alice = made.people["alice"]
    headers = secret(alice) | {"Content-Type": "application/json", "Accept": "application/json"}
    ok = client.get("/api/v1/experiments/test", headers=headers)
    assert ok.status_code == 200 and ok.json() == {"status": "ok"}
    wrong = client.get("/api/v1/experiments/test", headers={"api-secret": "0" * 40})
    assert wrong.status_code == 401


def test_verifyauth_answers_in_nightscouts_shape(app, made):
    """nightscout lib/api/verifyauth.js: canRead, canWrite, isAdmin, message, rolefound,
    permissions (Nightguard and xDrip4iOS read message == "OK")."""
    client, _ = app
    answer = client.get("/api/v1/verifyauth", headers=secret(made.people["alice"])).json()
    assert answer["message"] == "OK" and answer["canRead"] and answer["canWrite"]
    assert answer["rolefound"] == "FOUND" and answer["permissions"] == "ROLE"
    assert answer["isAdmin"] is False and answer["role"] == "patient"


def test_status_json_has_the_servers_clock_thresholds_and_settings(app):
    """nightscout lib/api/status.js: serverTime, serverTimeEpoch, settings (units,
    thresholds bgHigh/bgTargetTop/bgTargetBottom/bgLow); public, no personal data."""
    client, _ = app
    before = int(time.time() * 1000)
    status = client.get("/api/v1/status.json").json()
    assert before - 1000 <= status["serverTimeEpoch"] <= int(time.time() * 1000) + 1000
    assert status["serverTime"].endswith("Z")
    assert status["settings"]["units"] == "mg/dl"
    assert status["settings"]["thresholds"] == {
        "bgHigh": 250.0,
        "bgTargetTop": 180,
        "bgTargetBottom": 70.0,
        "bgLow": 55.0,
    }
    assert status["apiEnabled"] is True and "alice" not in json.dumps(status)


# -- entries ---------------------------------------------------------------------------------


def test_xdrip_posts_to_entries_with_a_trailing_slash(app, made):
    """xDrip+ (docs/use/cloud.md): base URL `https://SECRET@host/api/v1/`; its uploader
    posts the entries to `entries` under it. A 307 redirect loses the body on some
    clients: /api/v1/entries/ answers as /api/v1/entries."""
    client, _ = app
    carol = made.people["carol"]
    end = int(time.time() * 1000) - 3 * 3_600_000
    answer = client.post(
        "/api/v1/entries/", json=xdrip_entries([120, 122], end), headers=secret(carol)
    )
    assert answer.status_code == 200, answer.text
    stored = answer.json()
    assert [e["sgv"] for e in stored] == [120, 122] and all(len(e["_id"]) == 24 for e in stored)
    got = client.get(
        f"/api/v1/entries/?find[date][$gte]={end - FIVE_MINUTES}", headers=secret(carol)
    )
    assert got.status_code == 200 and [e["sgv"] for e in got.json()] == [122, 120]


def test_a_corrected_reading_replaces_the_stored_one_and_is_decided_again(app, made):
    """nightscout lib/server/entries.js create: an entry of the same sysTime and type
    updates the stored one (upsert). Here the old value stays in the record's history
    (export `replaced`, audit `replaced: 1`), and the reading is decided again, as is
    every stored reading whose window holds it."""
    client, _ = app
    alice = made.people["alice"]
    end = int(time.time() * 1000) - 4 * 3_600_000
    values = [150 - i for i in range(30)]
    first = client.post("/api/v1/entries", json=xdrip_entries(values, end), headers=secret(alice))
    assert first.status_code == 200
    target = first.json()[-5]  # 20 minutes before the newest
    corrected = dict(xdrip_entries(values, end)[-5], sgv=40)
    again = client.post("/api/v1/entries", json=[corrected], headers=secret(alice))
    assert again.status_code == 200
    assert again.json()[0]["sgv"] == 40 and again.json()[0]["_id"] == target["_id"]
    at = target["date"]
    stored = client.get(
        f"/api/v1/entries?find[date][$gte]={at}&find[date][$lte]={at}", headers=secret(alice)
    ).json()
    assert [e["sgv"] for e in stored] == [40]
    # decided again with the corrected value (a CGM of 40 is an urgent low whatever the model)
    decided = client.get(
        f"/api/v1/alerts?find[date][$gte]={at}&find[date][$lte]={at}&count=1",
        headers=secret(alice),
    ).json()
    assert decided[0]["cgm"] == 40 and decided[0]["decision"] == "urgent"
    # the readings after it, whose windows held it, were decided again too
    after = client.get(
        f"/api/v1/alerts?find[date][$gt]={at}&count=50", headers=secret(alice)
    ).json()
    assert len({a["reading_ms"] for a in after}) == 4
    assert len(after) >= 8  # each of the 4 decided twice: first upload and correction
    exported = client.get("/api/v1/people/me/export", headers=secret(alice)).json()
    old = [r for r in exported["replaced"] if r["public_id"] == target["_id"]]
    assert old and old[0]["record"]["sgv"] == target["sgv"] and old[0]["change"] == "replaced"
    uploads = [e for e in exported["audit"] if e["action"] == "upload_entries"]
    assert uploads[-1]["details"]["replaced"] == 1
    # the same content again is a retry: stored once, not a correction
    retry = client.post("/api/v1/entries", json=[corrected], headers=secret(alice))
    assert retry.status_code == 200
    exported = client.get("/api/v1/people/me/export", headers=secret(alice)).json()
    assert len([r for r in exported["replaced"] if r["public_id"] == target["_id"]]) == 1


def test_one_bad_record_does_not_refuse_the_batch(app, made):
    """An uploader's queue (xDrip+, AndroidAPS) retries a refused batch forever; Nightscout
    stores what it can. The valid records are stored and answered (200), the refused ones
    named by index in X-Refused-Records; a batch with no valid record is a 422."""
    client, _ = app
    carol = made.people["carol"]
    end = int(time.time() * 1000) - 5 * 3_600_000
    good = xdrip_entries([101, 102], end)
    batch = [good[0], 7, {"type": "sgv", "sgv": "high", "date": end}, good[1]]
    answer = client.post("/api/v1/entries", json=batch, headers=secret(carol))
    assert answer.status_code == 200, answer.text
    assert [e["sgv"] for e in answer.json()] == [101, 102]
    refused = json.loads(answer.headers["X-Refused-Records"])
    assert refused["refused"] == 2
    assert [r["index"] for r in refused["records"]] == [1, 2]
    assert "entries[2].sgv" in refused["records"][1]["message"]
    none_good = client.post("/api/v1/entries", json=[7, {"sgv": 1}], headers=secret(carol))
    assert none_good.status_code == 422
    assert "entries[0]" in none_good.json()["message"] and "1 more" in none_good.json()["message"]


def test_ids_are_opaque_and_per_account(app, made):
    """A row counter as _id let any patient watch how much everyone else uploads. Ids are
    random, and another account's id names nothing of yours (Loop's DELETE by id)."""
    client, _ = app
    alice, carol = made.people["alice"], made.people["carol"]
    end = int(time.time() * 1000) - 7 * 3_600_000
    ids = []
    for who in (alice, carol, alice):
        answer = client.post("/api/v1/entries", json=xdrip_entries([111], end), headers=secret(who))
        ids.append(int(answer.json()[0]["_id"], 16))
        end += FIVE_MINUTES
    assert abs(ids[2] - ids[0]) > 1_000_000  # not a counter
    treatment = {"eventType": "Carb Correction", "created_at": "2025-12-01T10:00:00Z", "carbs": 12}
    mine = client.post("/api/v1/treatments", json=[treatment], headers=secret(alice)).json()[0]
    theirs = client.delete(f"/api/v1/treatments/{mine['_id']}", headers=secret(carol))
    assert theirs.status_code == 200 and theirs.json() == {"n": 0, "ok": 1}
    kept = client.get(
        "/api/v1/treatments?find[created_at][$gte]=2025-12-01T10:00:00Z", headers=secret(alice)
    )
    assert mine["_id"] in [t["_id"] for t in kept.json()]


# -- treatments -------------------------------------------------------------------------------

AAPS_SMB = {
    "eventType": "Correction Bolus",
    "created_at": "2025-12-02T08:00:00.000Z",
    "date": 1_764_662_400_000,
    "insulin": 0.35,
    "type": "SMB",
    "isSMB": True,
    "isValid": True,
    "pumpId": 4_148_223_100,
    "pumpType": "OMNIPOD_DASH",
    "pumpSerial": "4241",
    "enteredBy": "openaps://AndroidAPS",
    "identifier": "a1b2c3d4-0000-4000-8000-000000000001",
}
AAPS_TEMP_TARGET = {
    "eventType": "Temporary Target",
    "created_at": "2025-12-02T09:00:00.000Z",
    "duration": 60,
    "reason": "Eating Soon",
    "targetBottom": 80,
    "targetTop": 80,
    "units": "mg/dl",
    "enteredBy": "openaps://AndroidAPS",
}
AAPS_PROFILE_SWITCH = {
    "eventType": "Profile Switch",
    "created_at": "2025-12-02T10:00:00.000Z",
    "profile": "Weekday",
    "originalProfileName": "Weekday",
    "percentage": 110,
    "timeshift": 0,
    "duration": 0,
    "profileJson": json.dumps({"dia": 5, "basal": [{"time": "00:00", "value": 0.8}]}),
}
LOOP_BOLUS = {
    "eventType": "Correction Bolus",
    "created_at": "2025-12-02T11:00:00.000Z",
    "timestamp": "2025-12-02T11:00:00.000Z",
    "enteredBy": "loop://iPhone",
    "insulin": 1.2,
    "programmed": 1.2,
    "unabsorbed": 0,
    "duration": 0,
    "type": "normal",
    "automatic": True,
    "syncIdentifier": "6c6f6f702d626f6c75732d31",
    "insulinType": "Humalog",
}
LOOP_TEMP_BASAL = {
    "eventType": "Temp Basal",
    "created_at": "2025-12-02T11:05:00.000Z",
    "timestamp": "2025-12-02T11:05:00.000Z",
    "enteredBy": "loop://iPhone",
    "temp": "absolute",
    "rate": 0.4,
    "absolute": 0.4,
    "duration": 30,
    "amount": 0.2,
    "automatic": True,
    "syncIdentifier": "6c6f6f702d74656d702d31",
}
XDRIP_NOTE = {
    "eventType": "Note",
    "created_at": "2025-12-02T12:00:00.000Z",
    "notes": "sensor warm-up",
    "enteredBy": "xdrip",
    "uuid": "8f0c1e6a-2f7e-4c7b-9a55-7f3b1c0d2e11",
}


def test_treatments_keep_every_field_the_uploaders_send(app, made):
    """AndroidAPS (SMB with isSMB/pumpId/pumpType/pumpSerial/identifier, temp target,
    profile switch with profileJson), Loop (syncIdentifier, automatic, insulinType, temp
    basal) and xDrip+ (uuid) read these fields back to sync; a whitelist dropped them.
    Loop (NightscoutClient.swift postToNS) requires as many answers as records sent."""
    client, _ = app
    carol = made.people["carol"]
    sent = [
        AAPS_SMB,
        AAPS_TEMP_TARGET,
        AAPS_PROFILE_SWITCH,
        LOOP_BOLUS,
        LOOP_TEMP_BASAL,
        XDRIP_NOTE,
    ]
    answer = client.post("/api/v1/treatments", json=sent, headers=secret(carol))
    assert answer.status_code == 200, answer.text
    assert len(answer.json()) == len(sent) and all(len(t["_id"]) == 24 for t in answer.json())
    # Loop reads treatments back with find[timestamp]
    back = client.get(
        "/api/v1/treatments?find[timestamp][$gte]=2025-12-02T00:00:00Z"
        "&find[timestamp][$lte]=2025-12-02T23:59:59Z&count=50",
        headers=secret(carol),
    ).json()
    by_time = {t["created_at"][:19]: t for t in back}
    for record in sent:
        stored = by_time[record["created_at"][:19]]
        for key, value in record.items():
            if key not in ("created_at", "date"):
                assert stored[key] == value, (record["eventType"], key)


def test_a_treatment_with_the_same_identifier_replaces_the_stored_one(app, made):
    """nightscout lib/server/treatments.js upsertQueryFor: identifier first (AndroidAPS),
    else created_at and eventType."""
    client, _ = app
    carol = made.people["carol"]
    first = client.post("/api/v1/treatments", json=[AAPS_SMB], headers=secret(carol)).json()[0]
    changed = dict(AAPS_SMB, insulin=0.4, isValid=False)
    second = client.post("/api/v1/treatments", json=[changed], headers=secret(carol)).json()[0]
    assert second["_id"] == first["_id"] and second["insulin"] == 0.4
    found = client.get(
        "/api/v1/treatments?find[created_at][$gte]=2025-12-02T08:00:00Z"
        "&find[created_at][$lte]=2025-12-02T08:00:00Z",
        headers=secret(carol),
    ).json()
    assert [(t["insulin"], t["isValid"]) for t in found] == [(0.4, False)]


def test_loop_edits_and_deletes_treatments_by_id(app, made):
    """LoopKit/NightscoutKit NightscoutClient.swift: modifyTreatments PUTs each treatment
    with its `_id` to /api/v1/treatments; deleteTreatmentsById DELETEs
    /api/v1/treatments/<id>; both expect 200. The previous content stays in the history."""
    client, _ = app
    carol = made.people["carol"]
    carbs = {
        "eventType": "Carb Correction",
        "created_at": "2025-12-03T12:00:00.000Z",
        "timestamp": "2025-12-03T12:00:00.000Z",
        "enteredBy": "loop://iPhone",
        "carbs": 30,
        "absorptionTime": 180,
        "foodType": "🍕",
        "syncIdentifier": "carb-1",
    }
    stored = client.post("/api/v1/treatments", json=[carbs], headers=secret(carol)).json()[0]
    edit = dict(carbs, carbs=45, _id=stored["_id"])
    put = client.put("/api/v1/treatments", json=edit, headers=secret(carol))
    assert (
        put.status_code == 200 and put.json()["carbs"] == 45 and put.json()["_id"] == stored["_id"]
    )
    window = (
        "/api/v1/treatments?find[created_at][$gte]=2025-12-03T12:00:00Z"
        "&find[created_at][$lte]=2025-12-03T12:00:00Z"
    )
    assert [t["carbs"] for t in client.get(window, headers=secret(carol)).json()] == [45]
    gone = client.delete(f"/api/v1/treatments/{stored['_id']}", headers=secret(carol))
    assert gone.status_code == 200 and gone.json() == {"n": 1, "ok": 1}
    assert client.get(window, headers=secret(carol)).json() == []
    history = client.get("/api/v1/people/me/export", headers=secret(carol)).json()["replaced"]
    changes = [
        (r["change"], r["record"]["carbs"]) for r in history if r["public_id"] == stored["_id"]
    ]
    assert changes == [("replaced", 30), ("deleted", 45)]
    no_id = client.put("/api/v1/treatments", json=carbs, headers=secret(carol))
    assert no_id.status_code == 422 and "_id" in no_id.json()["message"]


def test_a_treatment_too_large_or_with_operator_names_is_refused(app, made):
    client, _ = app
    carol = made.people["carol"]
    big = dict(XDRIP_NOTE, blob="x" * 70_000)
    mongo = dict(XDRIP_NOTE, created_at="2025-12-04T00:00:00Z", **{"$where": "1"})
    answer = client.post("/api/v1/treatments", json=[big, mongo], headers=secret(carol))
    assert answer.status_code == 422
    assert "bytes of JSON" in answer.json()["message"]


# -- devicestatus, profile, properties, pebble --------------------------------------------------

LOOP_STATUS = {
    "device": "loop://iPhone",
    "created_at": None,  # set per test
    "uploader": {"name": "iPhone", "timestamp": None, "battery": 76},
    "pump": {
        "clock": None,
        "pumpID": "1234",
        "manufacturer": "Insulet",
        "model": "Dash",
        "reservoir": 120.5,
        "battery": {"percent": 90},
        "suspended": False,
        "bolusing": False,
    },
    "loop": {
        "name": "Loop",
        "version": "3.4.0",
        "timestamp": None,
        "iob": {"timestamp": None, "iob": 1.25},
        "cob": {"timestamp": None, "cob": 18.4},
        "predicted": {"startDate": None, "values": [120, 118, 115, 112, 110]},
        "enacted": {"timestamp": None, "rate": 0.5, "duration": 30, "received": True},
        "recommendedBolus": 0,
    },
}
AAPS_STATUS = {
    "device": "openaps://samsung SM-G991B",
    "created_at": None,
    "pump": {
        "clock": None,
        "reservoir": 80,
        "battery": {"percent": 75},
        "status": {"status": "normal", "timestamp": None},
        "extended": {"Version": "3.2.0", "ActiveProfile": "Weekday"},
    },
    "openaps": {
        "iob": {"iob": 2.1, "basaliob": 0.4, "bolusiob": 1.7, "time": None},
        "suggested": {
            "bg": 140,
            "COB": 22,
            "IOB": 2.1,
            "eventualBG": 120,
            "predBGs": {"IOB": [140, 138, 135], "ZT": [140, 136, 131]},
            "reason": "COB: 22, Dev: 5",
        },
        "enacted": {"rate": 0.9, "duration": 30, "received": True},
    },
    "uploaderBattery": 64,
    "isCharging": False,
}
XDRIP_STATUS = {"device": "xDrip-DexcomG6", "uploaderBattery": 55}


def _stamp(status: dict, when_ms: int) -> dict:
    text = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(when_ms / 1000))
    out = json.loads(json.dumps(status))
    out["created_at"] = text
    for part in out.values():
        if isinstance(part, dict):
            for key in ("timestamp", "clock"):
                if key in part:
                    part[key] = text
    return out


def test_devicestatus_of_loop_androidaps_and_xdrip_is_kept_whole(app, made):
    """Loop (NightscoutKit DeviceStatus: uploader, pump, loop.iob/cob/predicted/enacted),
    AndroidAPS (openaps.iob/suggested/enacted with predBGs, pump, uploaderBattery) and
    xDrip+ (uploaderBattery) POST to /api/v1/devicestatus; Loop reads it back with
    find[created_at][$gte|$lte] and count (fetchDeviceStatus)."""
    client, _ = app
    carol = made.people["carol"]
    now = int(time.time() * 1000)
    sent = [_stamp(AAPS_STATUS, now - 600_000), _stamp(LOOP_STATUS, now - 300_000)]
    answer = client.post("/api/v1/devicestatus.json", json=sent, headers=secret(carol))
    assert answer.status_code == 200 and len(answer.json()) == 2
    xdrip = client.post("/api/v1/devicestatus", json=XDRIP_STATUS, headers=secret(carol))
    assert xdrip.status_code == 200 and xdrip.json()[0]["uploaderBattery"] == 55
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((now - 3_600_000) / 1000))
    back = client.get(
        f"/api/v1/devicestatus.json?find[created_at][$gte]={since}&count=10",
        headers=secret(carol),
    ).json()
    assert [s["device"] for s in back] == [
        "xDrip-DexcomG6",
        "loop://iPhone",
        "openaps://samsung SM-G991B",
    ]
    assert back[1]["loop"] == sent[1]["loop"] and back[2]["openaps"] == sent[0]["openaps"]


def test_profiles_are_stored_whole_and_the_newest_is_current(app, made):
    """Loop (NightscoutKit uploadProfile: POST [profileSet] to /api/v1/profile;
    fetchCurrentProfile: GET /api/v1/profile/current)."""
    client, _ = app
    carol = made.people["carol"]
    assert client.get("/api/v1/profile/current", headers=secret(carol)).status_code == 404
    profile = {
        "defaultProfile": "Default",
        "startDate": "2025-12-01T00:00:00.000Z",
        "units": "mg/dL",
        "enteredBy": "Loop",
        "loopSettings": {"dosingEnabled": True, "maximumBolus": 10},
        "store": {
            "Default": {
                "dia": 6,
                "timezone": "Europe/Berlin",
                "basal": [{"time": "00:00", "value": 0.8, "timeAsSeconds": 0}],
                "carbratio": [{"time": "00:00", "value": 10, "timeAsSeconds": 0}],
                "sens": [{"time": "00:00", "value": 45, "timeAsSeconds": 0}],
                "target_low": [{"time": "00:00", "value": 100, "timeAsSeconds": 0}],
                "target_high": [{"time": "00:00", "value": 110, "timeAsSeconds": 0}],
            }
        },
    }
    newer = dict(profile, startDate="2025-12-05T00:00:00.000Z", defaultProfile="Newer")
    assert client.post("/api/v1/profile", json=[profile], headers=secret(carol)).status_code == 200
    assert (
        client.post("/api/v1/profile.json", json=[newer], headers=secret(carol)).status_code == 200
    )
    current = client.get("/api/v1/profile/current", headers=secret(carol)).json()
    assert current["defaultProfile"] == "Newer" and current["store"] == profile["store"]
    every = client.get("/api/v1/profile.json", headers=secret(carol)).json()
    assert [p["defaultProfile"] for p in every] == ["Newer", "Default"]


def test_followers_read_properties_and_pebble(app, made):
    """Nightscout's /api/v2/properties (lib/plugins/bgnow.js: bgnow, delta; direction,
    iob, cob, upbat) and /pebble (Nightguard, watch faces: sgv as text, trend number,
    bgdelta, battery, iob), from the readings and devicestatus; tailorml's decision as the
    `tailorml` property, the way Nightscout's ar2 plugin offers its forecast."""
    client, _ = app
    alice = made.people["alice"]
    now = int(time.time() * 1000)
    entries = xdrip_entries([130 - 2 * i for i in range(26)], now - 30_000)
    entries[-1]["direction"] = "FortyFiveDown"
    client.post("/api/v1/entries", json=entries, headers=secret(alice))
    client.post(
        "/api/v1/devicestatus", json=_stamp(LOOP_STATUS, now - 10_000), headers=secret(alice)
    )
    found = client.get("/api/v2/properties", headers=secret(alice)).json()
    assert found["bgnow"]["last"] == 80 and found["bgnow"]["mills"] == entries[-1]["date"]
    assert found["delta"]["mgdl"] == -2 and found["delta"]["display"] == "-2"
    assert found["direction"]["value"] == "FortyFiveDown" and found["direction"]["label"] == "↘"
    assert found["iob"]["iob"] == 1.25 and found["iob"]["source"] == "Loop"
    assert found["cob"]["cob"] == 18 and found["upbat"]["level"] == 76
    assert found["tailorml"]["mills"] == entries[-1]["date"]
    assert found["tailorml"]["decision"] in ("alert", "snoozed", "none", "urgent")
    some = client.get("/api/v2/properties/bgnow,tailorml", headers=secret(alice)).json()
    assert set(some) == {"bgnow", "tailorml"}
    pebble = client.get("/pebble?count=2", headers=secret(alice)).json()
    assert pebble["bgs"][0] == {
        "sgv": "80",
        "trend": 5,
        "direction": "FortyFiveDown",
        "datetime": entries[-1]["date"],
        "bgdelta": -2,
        "battery": "76",
        "iob": "1.25",
        "cob": 18,
    }
    assert len(pebble["bgs"]) == 2 and pebble["status"][0]["now"] >= now


def test_a_clinician_reads_an_assigned_patients_documents_and_no_one_else_does(app, made):
    """Access control holds on the new routes: bob (assigned to alice) reads her
    devicestatus and properties with ?patient=; mallory and carol get 403 or their own."""
    client, _ = app
    alice, bob, mallory = (made.people[n] for n in ("alice", "bob", "mallory"))
    client.post("/api/v1/devicestatus", json=XDRIP_STATUS, headers=secret(alice))
    mine = client.get(f"/api/v1/devicestatus?patient={alice.id}", headers=secret(bob))
    assert mine.status_code == 200 and mine.json()
    for path in ("/api/v1/devicestatus", "/api/v2/properties", "/pebble", "/api/v1/profile"):
        denied = client.get(f"{path}?patient={alice.id}", headers=secret(mallory))
        assert denied.status_code == 403, path
    carol_sees = client.get("/api/v1/devicestatus?count=100", headers=secret(made.people["carol"]))
    assert all(s["device"] != "xDrip-DexcomG6" or "uploaderBattery" in s for s in carol_sees.json())
    own = client.post(
        f"/api/v1/devicestatus?patient={alice.id}", json=XDRIP_STATUS, headers=secret(bob)
    )
    assert own.status_code == 200  # a clinician uploads for an assigned patient, named


# -- yesterday's data directory ------------------------------------------------------------------

YESTERDAY = """
CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people(id),
    date_ms INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (person_id, fingerprint)
);
CREATE INDEX entries_by_time ON entries(person_id, date_ms);
CREATE TABLE treatments (
    id INTEGER PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people(id),
    date_ms INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (person_id, fingerprint)
);
CREATE INDEX treatments_by_time ON treatments(person_id, date_ms);
"""


def test_a_data_directory_from_before_opens_and_keeps_its_ids(tmp_path, trained):
    """The tables as they were before ids were per person (no public_id, no content): the
    service opens the directory, an old row answers with the id it was answered with
    before (its row number in 24 hex digits, so an uploader that kept it can still edit
    or delete it), and a new row gets a random id."""
    made = make_service_data(tmp_path, trained)
    alice = made.people["alice"]
    key = ServerKey.load(made.key_file, made.data)
    service = Service(made.data, key)
    cipher = service.keyring.cipher(alice.id)
    reading = {"type": "sgv", "sgv": 99, "date": 1_700_000_000_000, "dateString": "x"}
    treatment = {
        "eventType": "Note",
        "created_at": "2023-11-14T22:13:20.000Z",
        "date": 1_700_000_000_000,
    }
    del service
    path = made.data / "registry.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript("DROP TABLE entries; DROP TABLE treatments;" + YESTERDAY)
        db.execute(
            "INSERT INTO entries VALUES (41, ?, ?, 'fp', ?, '2025-01-01')",
            (alice.id, reading["date"], cipher.seal(json.dumps(reading).encode(), "entry")),
        )
        db.execute(
            "INSERT INTO treatments VALUES (42, ?, ?, 'fp', ?, '2025-01-01')",
            (alice.id, treatment["date"], cipher.seal(json.dumps(treatment).encode(), "treatment")),
        )
    service = Service(made.data, key)
    with TestClient(create_app(service, run_jobs=False)) as client:
        entries = client.get("/api/v1/entries", headers=secret(alice)).json()
        assert [(e["_id"], e["sgv"]) for e in entries] == [(f"{41:024x}", 99)]
        put = client.put(
            "/api/v1/treatments",
            json=dict(treatment, _id=f"{42:024x}", notes="edited"),
            headers=secret(alice),
        )
        assert put.status_code == 200 and put.json()["_id"] == f"{42:024x}"
        new = client.post(
            "/api/v1/entries",
            json=[dict(reading, date=reading["date"] + FIVE_MINUTES, dateString=None)],
            headers=secret(alice),
        ).json()[0]
        assert new["_id"] != f"{43:024x}"
    PeopleStore(made.data)  # opening again: the migration is idempotent
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
    assert {"public_id", "content"} <= columns


def test_a_battery_that_is_no_percentage_is_never_shown_to_followers(app):
    """Documents are stored whole; a battery of 1e308 (or -5) is kept but never shown as
    `upbat` or the pebble's battery (the hostile pass saw a 309-digit percentage)."""
    client, service = app
    _, token = add_person(service.store, "dora", "patient", "test")
    who = {"Authorization": f"Bearer {token}"}
    now = int(time.time() * 1000)
    client.post("/api/v1/entries", json=xdrip_entries([120, 118], now - 30_000), headers=who)
    for battery in (1e308, -5):
        status = {"created_at": now - 5_000, "device": "xDrip", "uploader": {"battery": battery}}
        assert client.post("/api/v1/devicestatus", json=status, headers=who).status_code == 200
        assert "upbat" not in client.get("/api/v2/properties", headers=who).json()
        assert "battery" not in client.get("/pebble", headers=who).json()["bgs"][0]
