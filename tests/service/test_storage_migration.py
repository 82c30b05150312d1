"""A data directory written before "less per reading" (entries and decisions sealed as
padded JSON, 64-hex fingerprints, the full index on v3 identifiers) opens with this
version: every record reads back the same with the same id, a repeat of an old reading is
still recognised (no duplicate), and new rows are compact beside the old ones."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from fastapi.testclient import TestClient

from tailorml.service import crypto
from tailorml.service.app import create_app
from tailorml.service.core import Service
from tailorml.service.crypto import ENTRY_SEALED_BYTES, DataCipher, ServerKey

FIVE_MINUTES = 300_000


def _yesterdays_seal(self, plaintext: bytes, purpose: str) -> bytes:
    """`DataCipher.seal` as the version before: JSON, padded to 512 bytes for records."""
    if purpose in crypto.PADDED_PURPOSES:
        plaintext += b" " * (-len(plaintext) % crypto.RECORD_PAD_BYTES)
    nonce = secrets.token_bytes(crypto.NONCE_BYTES)
    return nonce + self._aead.encrypt(nonce, plaintext, self._associated(purpose))


def _yesterdays_fingerprint(self, *parts: str) -> str:
    message = "\x1f".join(parts).encode()
    return hmac.new(self._mac_key, message, hashlib.sha256).hexdigest()


def _client(made):
    service = Service(made.data, ServerKey.load(made.key_file, made.data))
    return TestClient(create_app(service, run_jobs=False), raise_server_exceptions=False), service


def _everything(client, account) -> dict:
    answer = client.get("/api/v1/people/me/export", headers=account.secret)
    assert answer.status_code == 200, answer.text
    found = answer.json()
    return {k: found[k] for k in ("entries", "treatments", "alerts", "devicestatus", "replaced")}


def _ids(client, account) -> dict[int, str]:
    """Each stored reading's id, by its time."""
    answer = client.get("/api/v1/entries.json?count=1000", headers=account.secret)
    return {e["date"]: e["_id"] for e in answer.json()}


def test_yesterdays_directory_opens_reads_back_every_record_and_keeps_ids(made, monkeypatch):
    carol = made.people["carol"]
    start = int(time.time() * 1000) - 30 * 3_600_000
    batch = [
        {"type": "sgv", "sgv": 120 + i, "date": start + i * FIVE_MINUTES, "direction": "Flat"}
        for i in range(30)
    ]
    with monkeypatch.context() as patch:
        patch.setattr(DataCipher, "seal", _yesterdays_seal)
        patch.setattr(DataCipher, "fingerprint", _yesterdays_fingerprint)
        client, service = _client(made)
        with client:
            assert client.post("/api/v1/entries", json=batch, headers=carol.secret).is_success
            corrected = batch[3] | {"sgv": 99}  # a correction: the previous value is kept
            assert client.post("/api/v1/entries", json=[corrected], headers=carol.secret)
            treatment = {"eventType": "Meal Bolus", "carbs": 40, "date": start + 60_000}
            assert client.post("/api/v1/treatments", json=[treatment], headers=carol.secret)
            status = {"device": "phone", "created_at": "2026-01-01T00:00:00Z"}
            assert client.post("/api/v1/devicestatus", json=[status], headers=carol.secret)
            before = _everything(client, carol)
            ids = _ids(client, carol)
        connection = service.store.database.reader()
        # as the version before made the index (all rows, with or without an identifier)
        connection.execute("DROP INDEX entries_by_identifier")
        connection.execute("CREATE INDEX entries_by_identifier ON entries(person_id, identifier)")
        prints = connection.execute("SELECT length(fingerprint) AS n FROM entries").fetchall()
        assert {row["n"] for row in prints} == {64}
        assert len(before["entries"]) == 30 and len(before["alerts"]) >= 30
        assert len(before["replaced"]) == 1

    client, service = _client(made)  # today's version: the migration runs on opening
    with client:
        after = _everything(client, carol)
        assert after == before  # every record, opened the same
        assert _ids(client, carol) == ids and len(ids) == 30  # with its id
        rows = service.store.database.query(
            "SELECT length(fingerprint) AS f, length(content) AS c, length(sealed) AS s"
            " FROM entries WHERE person_id = ?",
            (carol.id,),
        )
        assert {(r["f"], r["c"]) for r in rows} == {(32, 32)}
        assert all(r["s"] > ENTRY_SEALED_BYTES for r in rows)  # old rows keep their bytes
        index = service.store.database.query(
            "SELECT sql FROM sqlite_master WHERE name = 'entries_by_identifier'"
        )
        assert "WHERE identifier IS NOT NULL" in index[0]["sql"]
        # a repeat of an old reading is found (the same record, not a second one)
        repeat = [*batch[:3], corrected, batch[4]]
        again = client.post("/api/v1/entries", json=repeat, headers=carol.secret)
        assert [e["_id"] for e in again.json()] == [ids[e["date"]] for e in batch[:5]]
        assert _everything(client, carol) == after  # a retry: nothing stored, nothing replaced
        newer = {"type": "sgv", "sgv": 140, "date": start + 30 * FIVE_MINUTES}
        assert client.post("/api/v1/entries", json=[newer], headers=carol.secret).is_success
        assert len(_everything(client, carol)["entries"]) == 31
        (stored,) = service.store.database.query(
            "SELECT length(sealed) AS s FROM entries WHERE person_id = ? AND date_ms = ?",
            (carol.id, newer["date"]),
        )
        assert stored["s"] == ENTRY_SEALED_BYTES
        # opening again changes nothing (the migration runs at every start)
        _client(made)
        assert _everything(client, carol)["entries"][1:] == after["entries"]


def test_yesterdays_alerts_table_keeps_every_decision_with_its_model_by_reference(made):
    """Alerts written when each row carried its model's id, 64-hex sha256 and kind and an
    ISO `created` read back the same after the table is rebuilt with `alert_models`."""
    carol = made.people["carol"]
    start = int(time.time() * 1000) - 5 * 3_600_000
    batch = [
        {"type": "sgv", "sgv": 150 - 3 * i, "date": start + i * FIVE_MINUTES, "direction": "Flat"}
        for i in range(30)
    ]
    client, service = _client(made)
    with client:
        assert client.post("/api/v1/entries", json=batch, headers=carol.secret).is_success
        before = _everything(client, carol)["alerts"]
    assert before and {a["model_kind"] for a in before} == {"predefined"}
    connection = service.store.database.reader()
    # the layout of the version before: the model and an ISO time on every row
    connection.executescript(
        """
        BEGIN IMMEDIATE;
        CREATE TABLE old AS SELECT a.id, a.person_id, a.date_ms,
            strftime('%Y-%m-%dT%H:%M:%S+00:00', a.created_s, 'unixepoch') AS created,
            m.model_id, m.sha256 AS model_sha256, m.kind AS model_kind, a.sealed
            FROM alerts AS a JOIN alert_models AS m ON m.id = a.model;
        DROP TABLE alerts;
        DROP TABLE alert_models;
        CREATE TABLE alerts (id INTEGER PRIMARY KEY, person_id TEXT NOT NULL, date_ms INTEGER
            NOT NULL, created TEXT NOT NULL, model_id INTEGER NOT NULL, model_sha256 TEXT NOT
            NULL, model_kind TEXT NOT NULL, sealed BLOB NOT NULL);
        INSERT INTO alerts SELECT * FROM old;
        DROP TABLE old;
        COMMIT;
        """
    )
    client, service = _client(made)
    with client:
        assert _everything(client, carol)["alerts"] == before
        models = service.store.database.query("SELECT model_id, kind FROM alert_models")
        assert [(row["model_id"], row["kind"]) for row in models] == [
            (before[0]["model_id"], "predefined")
        ]
        later = {"type": "sgv", "sgv": 60, "date": start + 30 * FIVE_MINUTES, "direction": "Flat"}
        assert client.post("/api/v1/entries", json=[later], headers=carol.secret).is_success
        assert len(_everything(client, carol)["alerts"]) == len(before) + 1
