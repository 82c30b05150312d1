"""Nightscout API v3 as AndroidAPS' NSClient v3 uses it: each test replays the requests of its
source against the service in-process (ASGI).

Sources (nightscout/AndroidAPS, read for the request shapes; cited again per test):
- core/nssdk/.../networking/NightscoutRemoteService.kt: the paths and queries (`v3/status`,
  `v3/lastModified`, `v3/entries?sort$desc=date&type=sgv`, `v3/entries?sort=date&date$gt=
  &limit=`, `v3/entries/history/{from}?limit=`, `v3/treatments?sort=created_at&created_at$gt=
  &limit=`, `v3/treatments/history/{from}`, `v3/devicestatus/history/{from}`, `v3/profile?
  sort$desc=date&limit=1`, POST `v3/{collection}`, PATCH and DELETE `v3/{collection}/{id}`);
- networking/NightscoutAuthRefreshService.kt and NSAuthInterceptor.kt: `GET
  /api/v2/authorization/request/{token}` answers `{token, iat, exp}`; every request carries
  `Authorization: Bearer <jwt>` (empty before the first exchange) and a `Date` header; a 401
  or 403 makes it exchange again;
- NSAndroidClientImpl.kt: a create's `identifier`, `isDeduplication`, `lastModified` at the
  top of the answer, 200 or 201; a history's next `from` read from `ETag: W/"<ms>"`; an
  update is PATCH without `date` and `utcOffset` (immutable), a deletion is DELETE;
- remotemodel/RemoteEntry.kt, RemoteTreatment.kt, RemoteDeviceStatus.kt,
  RemoteStatusResponse.kt (apiPermissions of six collections, `isFull()` = all "crud":
  NSClientV3Plugin.hasWritePermission, without which DataSyncWorker uploads nothing);
- plugins/main/.../profile/ProfilePlugin.kt: a profile store's `date`, `created_at` and
  `startDate` (DateUtil.toISOAsUTC: seven fraction digits).
Nightscout's side: nightscout/cgm-remote-monitor lib/api3/ (generic/create/operation.js:
dedup by identifier or `dedupFallbackFields`; generic/update/validate.js: immutable fields;
generic/history/operation.js: ETag; generic/delete/operation.js; specific/status.js), and
lib/authorization/index.js (the JWT: HS256, one hour).
"""

from __future__ import annotations

import sqlite3
import time

import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import make_service_data

from tailorml.registry.people import PeopleStore
from tailorml.service.app import create_app
from tailorml.service.auth import issue_jwt, rotate_token
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey

FIVE_MINUTES = 300_000
COLLECTIONS = {"devicestatus", "entries", "food", "profile", "settings", "treatments"}


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained):
    return make_service_data(tmp_path_factory.mktemp("v3"), trained)


@pytest.fixture(scope="module")
def app(made):
    service = Service(made.data, ServerKey.load(made.key_file, made.data), database=made.database)
    with TestClient(create_app(service, run_jobs=False), raise_server_exceptions=False) as client:
        yield client, service


def jwt_of(client, account) -> dict:
    """NSAuthInterceptor: the token exchange, then `Authorization: Bearer` and `Date`."""
    answer = client.get(f"/api/v2/authorization/request/{account.token}")
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}", "Date": str(now_ms())}


def now_ms() -> int:
    return int(time.time() * 1000)


def aaps_sgv(date: int, sgv: float) -> dict:
    """NSSgvV3.toRemoteEntry (GlucoseValueExtension.toNSSvgV3), as Gson writes it: nulls
    left out, numbers as doubles, app set by createSgv."""
    return {
        "type": "sgv",
        "date": date,
        "device": "AndroidAPS-DexcomG6",
        "utcOffset": 60,
        "direction": "Flat",
        "sgv": sgv,
        "isReadOnly": False,
        "isValid": True,
        "noise": 1.0,
        "filtered": sgv,
        "unfiltered": sgv,
        "units": "mg/dl",
        "app": "AAPS",
    }


def aaps_bolus(date: int, insulin: float, identifier: str | None = None) -> dict:
    """NSBolus.toRemoteTreatment: no created_at, the time as `date`."""
    bolus = {
        "date": date,
        "device": "AndroidAPS",
        "units": "mg/dl",
        "utcOffset": 60,
        "isReadOnly": False,
        "isValid": True,
        "eventType": "Correction Bolus",
        "pumpId": 4148,
        "pumpType": "ACCU_CHEK_INSIGHT_BLUETOOTH",
        "pumpSerial": "33013206",
        "insulin": insulin,
        "type": "SMB",
        "isBasalInsulin": False,
        "app": "AAPS",
    }
    return bolus | ({"identifier": identifier} if identifier else {})


def test_the_token_is_exchanged_for_a_jwt_that_opens_api_v3(app, made):
    """NSAuthInterceptor sends `Bearer ` (empty) first, exchanges its token on the 401 and
    retries with the JWT; LoadStatusWorker reads v3/status, whose apiPermissions must all be
    "crud" for AndroidAPS to upload anything (ApiPermissions.isFull)."""
    client, _ = app
    alice = made.people["alice"]
    first = client.get("/api/v3/status", headers={"Authorization": "Bearer ", "Date": "1"})
    assert first.status_code == 401 and first.json()["status"] == 401
    exchanged = client.get(f"/api/v2/authorization/request/{alice.token}")
    assert exchanged.status_code == 200
    body = exchanged.json()
    assert body["exp"] - body["iat"] == 3600 and body["sub"] == "alice"
    assert abs(body["iat"] - time.time()) < 5
    assert alice.token not in body["token"]  # the JWT names the account, never the token
    status = client.get("/api/v3/status", headers=jwt_of(client, alice))
    assert status.status_code == 200
    result = status.json()["result"]
    assert result["apiPermissions"] == dict.fromkeys(COLLECTIONS, "crud")
    assert result["apiVersion"] == "3.0.5" and abs(result["srvDate"] - now_ms()) < 5_000
    wrong = client.get("/api/v2/authorization/request/tm_not-a-token")
    assert wrong.status_code == 401 and wrong.json()["message"]


def test_a_forged_expired_or_superseded_jwt_is_refused(app, made):
    """401 for each: AndroidAPS then exchanges its token again (NSAuthInterceptor)."""
    client, service = app
    carol = made.people["carol"]
    good = jwt_of(client, carol)["Authorization"]
    header, claims, signature = good.removeprefix("Bearer ").split(".")
    forged = f"Bearer {header}.{claims}.{'A' * 43}"
    answer = client.get("/api/v3/lastModified", headers={"Authorization": forged})
    assert answer.status_code == 401 and "not one this service signed" in answer.json()["message"]
    # another account's claims under carol's signature: the signature no longer matches
    alice_claims = jwt_of(client, made.people["alice"])["Authorization"].split(".")[1]
    swapped = f"Bearer {header}.{alice_claims}.{signature}"
    assert client.get("/api/v3/lastModified", headers={"Authorization": swapped}).status_code == 401
    store = service.store
    old = issue_jwt(service.jwt_key(), carol.id, store.token_hash(carol.id), time.time() - 3601)
    expired = client.get(
        "/api/v3/lastModified", headers={"Authorization": f"Bearer {old['token']}"}
    )
    assert expired.status_code == 401 and "expired" in expired.json()["message"]
    # a rotated token ends the JWTs exchanged for the old one
    new_token = rotate_token(store, store.person(carol.id), "test")
    after = client.get("/api/v3/lastModified", headers={"Authorization": good})
    assert after.status_code == 401 and "no longer valid" in after.json()["message"]
    carol.token = new_token
    assert client.get("/api/v3/lastModified", headers=jwt_of(client, carol)).status_code == 200


def test_a_v3_reading_is_stored_and_decided_as_a_v1_upload_is(app, made):
    """AndroidAPS' createSgv (POST v3/entries, one reading per request) and xDrip+'s v1 batch
    of the same readings: the same stored values and the same live decision of the newest
    (one code path, service.core._upload_entries)."""
    client, _ = app
    alice, carol = made.people["alice"], made.people["carol"]
    end = now_ms() - 60_000
    values = [160 - 3 * i for i in range(25)]  # two hours, falling 3 mg/dL per 5 min
    dates = [end - (24 - i) * FIVE_MINUTES for i in range(25)]
    headers = jwt_of(client, alice)
    for date, value in zip(dates, values, strict=True):
        created = client.post("/api/v3/entries", json=aaps_sgv(date, float(value)), headers=headers)
        assert created.status_code == 201, created.text
        assert set(created.json()) == {"status", "identifier", "lastModified"}
    pairs = zip(dates, values, strict=True)
    v1 = [{"type": "sgv", "date": d, "sgv": v, "device": "xDrip"} for d, v in pairs]
    sent = client.post("/api/v1/entries", json=v1, headers=jwt_of(client, carol))
    assert sent.status_code == 200
    stored = client.get(
        f"/api/v3/entries?sort=date&date$gt={dates[0] - 1}&limit=500", headers=headers
    ).json()["result"]
    assert [e["sgv"] for e in stored] == values  # ascending, as getSgvsNewerThan asks
    assert stored[-1]["app"] == "AAPS" and stored[-1]["units"] == "mg/dl"
    assert all(e["srvModified"] >= e["srvCreated"] > 0 for e in stored)
    mine = client.get("/api/v1/alerts/current", headers=headers).json()
    theirs = client.get("/api/v1/alerts/current", headers=jwt_of(client, carol)).json()
    assert mine["reading_ms"] == theirs["reading_ms"] == dates[-1]
    assert mine["cgm"] == theirs["cgm"] == values[-1] == 88
    assert mine["decision"] == theirs["decision"] is not None
    assert mine["probabilities"] == theirs["probabilities"]
    # the same reading again: Nightscout's deduplication (date and type), 200
    again = client.post("/api/v3/entries", json=aaps_sgv(dates[-1], 88.0), headers=headers)
    assert again.status_code == 200
    assert again.json()["isDeduplication"] is True
    assert again.json()["identifier"] == stored[-1]["identifier"]
    newest = client.get("/api/v3/entries?sort$desc=date&type=sgv&limit=1", headers=headers)
    assert [e["date"] for e in newest.json()["result"]] == [dates[-1]]


def test_treatments_deduplicate_patch_and_delete_as_nightscout(app, made):
    """createTreatment, then its retry (dedup by created_at and eventType), an update
    (PATCH without date and utcOffset), a refused change of an immutable field, a DELETE and
    the history AndroidAPS reads next (`isValid: false`, ETag)."""
    client, _ = app
    alice = made.people["alice"]
    headers = jwt_of(client, alice)
    at = now_ms() - 10 * 60_000
    created = client.post("/api/v3/treatments", json=aaps_bolus(at, 0.25), headers=headers)
    assert created.status_code == 201, created.text
    identifier = created.json()["identifier"]
    assert len(identifier) == 24  # opaque, the service's own
    retry = client.post("/api/v3/treatments", json=aaps_bolus(at, 0.25), headers=headers)
    assert retry.status_code == 200 and retry.json()["identifier"] == identifier
    assert retry.json()["isDeduplication"] is True
    # another client's identifier for the same bolus: deduplicated onto it, the old one named
    other = client.post(
        "/api/v3/treatments", json=aaps_bolus(at, 0.25, "uuid-from-another-app"), headers=headers
    )
    assert other.status_code == 200
    assert other.json()["identifier"] == "uuid-from-another-app"
    assert other.json()["deduplicatedIdentifier"] == identifier
    identifier = "uuid-from-another-app"
    read = client.get(f"/api/v3/treatments/{identifier}", headers=headers)
    assert read.status_code == 200 and read.json()["result"]["insulin"] == 0.25
    # updateTreatment: PATCH, without the immutable date and utcOffset
    change = {k: v for k, v in aaps_bolus(at, 0.5, identifier).items() if k != "date"}
    del change["utcOffset"]
    patched = client.patch(f"/api/v3/treatments/{identifier}", json=change, headers=headers)
    assert patched.status_code == 200, patched.text
    after = client.get(f"/api/v3/treatments/{identifier}", headers=headers).json()["result"]
    assert after["insulin"] == 0.5 and after["date"] == at
    assert after["srvModified"] > read.json()["result"]["srvModified"]
    v1 = client.get(f"/api/v1/treatments?find[date][$gte]={at}", headers=headers).json()
    assert [t["insulin"] for t in v1] == [0.5]  # one record, whichever API reads it
    moved = client.patch(f"/api/v3/treatments/{identifier}", json={"date": at + 1}, headers=headers)
    assert moved.status_code == 400
    assert moved.json()["message"] == "Field date cannot be modified by the client"
    last = client.get("/api/v3/lastModified", headers=headers).json()["result"]
    assert last["collections"]["treatments"] == after["srvModified"]
    deleted = client.delete(f"/api/v3/treatments/{identifier}", headers=headers)
    assert deleted.status_code == 200 and deleted.json() == {"status": 200}
    assert client.get(f"/api/v3/treatments/{identifier}", headers=headers).status_code == 410
    since = last["collections"]["treatments"]
    history = client.get(f"/api/v3/treatments/history/{since}?limit=500", headers=headers)
    assert history.status_code == 200
    (tombstone,) = history.json()["result"]
    assert tombstone["identifier"] == identifier and tombstone["isValid"] is False
    assert tombstone["eventType"] == "Correction Bolus" and tombstone["insulin"] == 0.5
    assert history.headers["ETag"] == f'W/"{tombstone["srvModified"]}"'
    assert tombstone["srvModified"] > since
    # from the ETag on, nothing new: AndroidAPS stops loading
    following = client.get(
        f"/api/v3/treatments/history/{tombstone['srvModified']}", headers=headers
    )
    assert following.json()["result"] == [] and "ETag" not in following.headers
    assert client.delete(f"/api/v3/treatments/{identifier}", headers=headers).status_code == 404


def test_devicestatus_and_profile_store_as_androidaps_sends_them(app, made):
    """createDeviceStatus, then LoadDeviceStatusWorker's `devicestatus/history/{now - 7 min}`;
    createProfileStore (ProfilePlugin's store: date, created_at and startDate as toISOAsUTC
    writes them), then getLastProfile (`profile?sort$desc=date&limit=1`)."""
    client, _ = app
    alice = made.people["alice"]
    headers = jwt_of(client, alice)
    at = now_ms() - 60_000
    status = {
        "app": "AAPS",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at / 1000)),
        "date": at // 1000 * 1000,
        "uploaderBattery": 71,
        "isCharging": False,
        "device": "openaps://samsung SM-G970F",
        "pump": {"reservoir": 120.5, "battery": {"percent": 80}, "status": {"status": "normal"}},
        "openaps": {"iob": {"iob": 1.25, "time": "x"}, "suggested": {"bg": 120, "COB": 12}},
        "configuration": {"pump": "Virtual", "version": "3.3.0"},
    }
    created = client.post("/api/v3/devicestatus", json=status, headers=headers)
    assert created.status_code == 201, created.text
    again = client.post("/api/v3/devicestatus", json=status, headers=headers)  # a retry
    assert again.status_code == 200 and again.json()["isDeduplication"] is True
    since = now_ms() - 7 * 60_000
    loaded = client.get(f"/api/v3/devicestatus/history/{since}", headers=headers).json()
    assert [d["uploaderBattery"] for d in loaded["result"]] == [71]
    assert loaded["result"][0]["openaps"]["iob"]["iob"] == 1.25
    # what follower apps read over v1 comes from the same record
    upbat = client.get("/api/v2/properties/upbat", headers=headers).json()["upbat"]
    assert upbat["level"] == 71
    start = at - 3_600_000
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start / 1000)) + ".0000000Z"
    profile = {
        "defaultProfile": "Default",
        "date": start // 1000 * 1000,
        "created_at": iso,
        "startDate": iso,
        "store": {"Default": {"dia": 5.0, "carbratio": [{"time": "00:00", "value": 10.0}]}},
        "app": "AAPS",
    }
    stored = client.post("/api/v3/profile", json=profile, headers=headers)
    assert stored.status_code == 201, stored.text
    last = client.get("/api/v3/profile?sort$desc=date&limit=1", headers=headers).json()
    assert last["result"][0]["defaultProfile"] == "Default"
    assert last["result"][0]["identifier"] == stored.json()["identifier"]
    foods = client.get("/api/v3/food?limit=1000", headers=headers)  # LoadFoodsWorker
    assert foods.status_code == 200 and foods.json() == {"status": 200, "result": []}


def test_v1_uploads_are_in_the_v3_history_androidaps_reads(app, made):
    """xDrip+ uploads over v1, AndroidAPS (NSClient as BG source) reads over v3: the v1
    readings have server times, so `entries/history/{from}` and lastModified show them."""
    client, _ = app
    carol = made.people["carol"]
    headers = jwt_of(client, carol)
    before = client.get("/api/v3/lastModified", headers=headers).json()["result"]["collections"]
    start = before.get("entries", 0)
    date = now_ms() - 2 * 3_600_000
    sent = client.post(
        "/api/v1/entries", json=[{"type": "sgv", "date": date, "sgv": 140}], headers=headers
    )
    assert sent.status_code == 200
    history = client.get(f"/api/v3/entries/history/{start}?limit=500", headers=headers)
    assert [e["sgv"] for e in history.json()["result"]] == [140]
    assert history.json()["result"][0]["identifier"] == sent.json()[0]["_id"]


def test_another_patients_records_stay_out_of_reach(app, made):
    """Access as over v1: a clinician not assigned is refused (403); another patient's
    identifier is not found in one's own records (404, the same as an unknown one); the
    assigned clinician reads the patient's records with ?patient=."""
    client, _ = app
    alice, carol = made.people["alice"], made.people["carol"]
    headers = jwt_of(client, alice)
    mine = client.post(
        "/api/v3/treatments", json=aaps_bolus(now_ms() - 3_600_000, 1.0), headers=headers
    ).json()["identifier"]
    theirs = jwt_of(client, carol)
    assert client.get(f"/api/v3/treatments/{mine}", headers=theirs).status_code == 404
    assert client.delete(f"/api/v3/treatments/{mine}", headers=theirs).status_code == 404
    assert (
        client.patch(
            f"/api/v3/treatments/{mine}", json={"insulin": 9.0}, headers=theirs
        ).status_code
        == 404
    )
    mallory = jwt_of(client, made.people["mallory"])
    refused = client.get(f"/api/v3/treatments?patient={alice.id}", headers=mallory)
    assert refused.status_code == 403
    refused = client.get(f"/api/v3/lastModified?patient={alice.id}", headers=mallory)
    assert refused.status_code == 403
    bob = jwt_of(client, made.people["bob"])
    seen = client.get(f"/api/v3/treatments/{mine}?patient={alice.id}", headers=bob)
    assert seen.status_code == 200 and seen.json()["result"]["insulin"] == 1.0
    assert (
        client.get("/api/v3/status", headers=bob).json()["result"]["apiPermissions"]["entries"]
        == "r"
    )  # a clinician's own account keeps no records
    assert client.get("/api/v3/nothing", headers=headers).status_code == 404


def test_a_bad_record_is_a_400_as_nightscout_answers(app, made):
    """NSClientV3Plugin skips a record answered 400 and stops its queue on other codes:
    the v1 checks apply, answered 400 in v3."""
    client, _ = app
    headers = jwt_of(client, made.people["alice"])
    bad = client.post("/api/v3/entries", json=aaps_sgv(now_ms(), 0.5), headers=headers)
    assert bad.status_code == 400 and "mmol/L" in bad.json()["message"]
    assert client.post("/api/v3/treatments", json={}, headers=headers).status_code == 400
    limit = client.get("/api/v3/entries?limit=5000", headers=headers)
    assert limit.status_code == 400 and limit.json()["message"].startswith("Parameter limit")


def test_an_existing_data_directory_opens_and_keeps_its_ids(tmp_path, made):
    """A data directory from before API v3 (no server times, identifiers or tombstones,
    documents limited to devicestatus and profile) is migrated when it is opened: every
    record keeps its id, and gets its stored time as srvCreated and srvModified."""
    copy = tmp_path / "data"
    copy.mkdir()
    source = sqlite3.connect(made.data / "registry.sqlite")
    target = sqlite3.connect(copy / "registry.sqlite")
    source.backup(target)
    source.close()
    with target:
        target.executescript(
            """
            DROP TABLE tombstones; DROP TABLE srv_clock;
            DROP INDEX entries_by_modified; DROP INDEX entries_by_identifier;
            ALTER TABLE entries DROP COLUMN srv_modified;
            ALTER TABLE entries DROP COLUMN srv_created;
            ALTER TABLE entries DROP COLUMN identifier;
            CREATE TABLE old_documents (id INTEGER PRIMARY KEY, person_id TEXT NOT NULL,
                collection TEXT NOT NULL CHECK (collection IN ('devicestatus', 'profile')),
                public_id TEXT NOT NULL, date_ms INTEGER NOT NULL, sealed BLOB NOT NULL,
                created TEXT NOT NULL, UNIQUE (person_id, public_id));
            INSERT INTO old_documents SELECT id, person_id, collection, public_id, date_ms,
                sealed, created FROM documents;
            DROP TABLE documents; ALTER TABLE old_documents RENAME TO documents;
            """
        )
    before = dict(target.execute("SELECT id, public_id FROM entries").fetchall())
    documents = dict(target.execute("SELECT id, public_id FROM documents").fetchall())
    assert before and documents
    target.close()
    store = PeopleStore(copy)
    rows = store.database.query("SELECT id, public_id, created, srv_modified FROM entries")
    assert {r["id"]: r["public_id"] for r in rows} == before
    first = rows[0]
    stamp = int(time.mktime(time.strptime(first["created"][:19], "%Y-%m-%dT%H:%M:%S")))
    assert first["srv_modified"] == (stamp - time.timezone) * 1000
    moved = store.database.query("SELECT id, public_id, srv_created FROM documents")
    assert {r["id"]: r["public_id"] for r in moved} == documents
    assert all(r["srv_created"] for r in moved)
    store.add_documents(made.people["alice"].id, "food", [(now_ms(), b"sealed")], "test")
    PeopleStore(copy)  # opened again: the migration finds nothing left to do
