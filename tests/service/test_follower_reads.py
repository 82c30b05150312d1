"""A follower's `entries.json?count=N` is answered from each record's kept JSON
(`DataCipher.entry_json`, per ciphertext and id): the answer is byte for byte what the
list of opened records renders to, and a correction written by another API process on the
same data directory is seen at the next read (what is kept is keyed by the row's own
ciphertext, never by a person or a time)."""

from __future__ import annotations

import json
import time

from fastapi.testclient import TestClient

from tailorml.service.app import create_app
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey

FIVE_MINUTES = 300_000


def _process(made):
    """An API process of its own (its own Service, keyring and kept JSON) on `made`."""
    service = Service(made.data, ServerKey.load(made.key_file, made.data), database=made.database)
    return TestClient(create_app(service, run_jobs=False), raise_server_exceptions=False), service


def test_the_kept_json_is_the_records_and_never_stale_across_processes(made):
    carol = made.people["carol"]
    start = int(time.time() * 1000) - 4 * 3_600_000
    batch = [
        {"type": "sgv", "sgv": 100 + i, "date": start + i * FIVE_MINUTES, "direction": "Flat"}
        for i in range(24)
    ] + [{"type": "mbg", "mbg": 111, "date": start + 7 * FIVE_MINUTES + 1000}]
    first, service = _process(made)
    second, _ = _process(made)
    with first, second:
        assert first.post("/api/v1/entries", json=batch, headers=carol.secret).is_success
        path = "/api/v1/entries.json?count=20"
        answer = first.get(path, headers=carol.secret)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        person = service.store.person(carol.id)
        opened = service.entries(person, None, 20, None, None, None)
        expected = json.dumps(opened, ensure_ascii=True, allow_nan=False).encode()
        assert answer.content == expected  # the join of kept records is the list's JSON
        assert first.get(path, headers=carol.secret).content == expected  # kept: the same
        # a filter on a sealed field and a time range answer as before
        sgv = first.get("/api/v1/entries/sgv.json?count=30", headers=carol.secret).json()
        assert len(sgv) == 24 and {e["type"] for e in sgv} == {"sgv"}
        ranged = first.get(
            f"/api/v1/entries.json?find[date][$gte]={start + 20 * FIVE_MINUTES}",
            headers=carol.secret,
        ).json()
        assert [e["sgv"] for e in ranged] == [123, 122, 121, 120]
        # another process corrects the newest reading and adds one
        newest = batch[23] | {"sgv": 42}
        added = {"type": "sgv", "sgv": 77, "date": start + 24 * FIVE_MINUTES}
        assert second.post("/api/v1/entries", json=[newest, added], headers=carol.secret)
        again = first.get(path, headers=carol.secret).json()
        assert [e["sgv"] for e in again[:2]] == [77, 42]
        assert again[1]["_id"] == json.loads(expected)[0]["_id"]  # the same record, corrected
        assert len(again) == 20
