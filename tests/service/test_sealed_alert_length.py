"""Sealed alert rows are padded to one length: the length of a stored row no longer
tells "no decision" from a decision; rows sealed before still read (bad input round 3)."""

from __future__ import annotations

import json
import time

from tailorml.service.crypto import ALERT_SEALED_BYTES, PAD_BYTES, padded_json
from tailorml.service.live import ALERT

FIVE_MINUTES = 300_000


def hours_ago(hours: float) -> int:
    return int(time.time() * 1000) - int(hours * 3_600_000)


def test_sealed_alerts_have_one_length_whatever_the_decision(app, made):
    client, service = app
    carol = made.people["carol"]
    person = service.store.by_name("carol")
    start = hours_ago(20)
    # 30 readings: the first 23 have no full window (no decision), the rest are decided
    batch = [{"type": "sgv", "sgv": 150 - i, "date": start + i * FIVE_MINUTES} for i in range(30)]
    assert client.post("/api/v1/entries", json=batch, headers=carol.secret).status_code == 200
    rows = service.store.alerts(person.id, start, start + 30 * FIVE_MINUTES, 100)
    cipher = service.keyring.cipher(person.id)
    plain = [cipher.open(row.sealed, ALERT) for row in rows]
    decisions = {json.loads(text)["decision"] for text in plain}
    assert "no_decision" in decisions and decisions - {"no_decision"}
    assert len({len(text.rstrip()) for text in plain}) > 1  # the JSON itself differs
    # stored: format byte 1 + nonce 12 + one bucket of compact plaintext + GCM tag 16 (the
    # reading time and model are the row's columns, bound as associated data, not stored)
    stored = service.store.database.query(
        "SELECT length(sealed) AS n FROM alerts WHERE person_id = ?", (person.id,)
    )
    assert {row["n"] for row in stored} == {ALERT_SEALED_BYTES}
    assert len(stored) == len(rows) == 30


def test_the_longest_decision_fits_one_bucket():
    longest = {
        "reading_ms": 1_765_000_000_000,
        "decision": "no_decision",
        "kind": "hyper",
        "probabilities": {k: 1.2345678901234567e-05 for k in ("in_range", "hypo", "hyper")},
        "threshold": 0.12345678901234566,
        "reason": "hyper predicted within 120 min (P 0.123: held on until it falls below "
        "0.123); an alert was raised less than 120 min ago",
        "model_id": 123_456,
        "model_sha256": "f" * 64,
        "model_kind": "personalized",
        "cgm": 123.45678901234567,
    }
    assert len(json.dumps(longest)) < PAD_BYTES < 2 * len(json.dumps(longest))
    assert len(padded_json(longest)) == PAD_BYTES
    assert json.loads(padded_json(longest)) == longest


def test_an_alert_sealed_before_padding_still_reads_back(app, made):
    client, service = app
    carol = made.people["carol"]
    person = service.store.by_name("carol")
    at = hours_ago(40)
    old = {
        "reading_ms": at,
        "decision": "none",
        "kind": None,
        "probabilities": {"in_range": 0.9, "hypo": 0.05, "hyper": 0.05},
        "threshold": 0.7,
        "reason": "in range predicted",
        "model_id": 1,
        "model_sha256": "a" * 64,
        "model_kind": "predefined",
        "cgm": 120.0,
    }
    cipher = service.keyring.cipher(person.id)
    nonce = bytes([0xA1]) + b"\x02" * 11  # as an older version sealed it: its JSON alone,
    # behind a nonce that happens to start with the compact format's byte
    sealed = nonce + cipher._aead.encrypt(
        nonce, json.dumps(old).encode(), b"alert|" + person.id.encode()
    )
    assert len(sealed) < 12 + PAD_BYTES + 16
    service.store.add_alerts(person.id, [(at, 1, "a" * 64, "predefined", sealed)])
    answer = client.get(
        f"/api/v1/alerts?find[date][$gte]={at}&find[date][$lte]={at}", headers=carol.secret
    )
    assert answer.status_code == 200
    (shown,) = answer.json()
    assert {k: v for k, v in shown.items() if k not in ("id", "created")} == old
