"""The compact sealed layouts of an entry and a decision (less per reading): the stored
length does not depend on the values, what was sealed opens the same, rows sealed in an
older layout (JSON, padded or not; even behind a nonce that starts with a compact format's
byte) still read, and a decision does not open with another reading's or model's columns."""

from __future__ import annotations

import json
import time

import pytest

from tailorml.registry import sealed_formats as formats
from tailorml.registry.people import Write
from tailorml.service.crypto import (
    ALERT_SEALED_BYTES,
    ENTRY_SEALED_BYTES,
    DataCipher,
    DecryptionError,
    new_data_key,
    padded_json,
)
from tailorml.service.nightscout import canonical, iso

NOW = int(time.time() * 1000)


def entry(value, at=NOW, **more) -> dict:
    return {"type": "sgv", "sgv": value, "date": at, "dateString": iso(at)} | more


def decision(**changes) -> dict:
    base = {
        "reading_ms": NOW,
        "decision": "alert",
        "kind": "hypo",
        "probabilities": {"in_range": 0.1, "hypo": 0.85, "hyper": 0.05},
        "threshold": 0.7,
        "reason": "hypo predicted within 30 min",
        "model_id": 3,
        "model_sha256": "ab" * 32,
        "model_kind": "personalized",
        "cgm": 81.0,
    }
    return base | changes


@pytest.fixture
def cipher():
    return DataCipher(new_data_key(), "p-aaaaaaaaaaaa")


def test_an_entry_seals_to_one_length_whatever_its_values(cipher):
    shapes = [
        entry(v, direction=d, device="xDrip-DexcomG6", delta=dl, noise=1)
        for v, d, dl in ((45, "DoubleDown", -12.5), (345, "Flat", 0), (123.4, "SingleUp", 3.25))
    ]
    shapes += [
        entry(
            40,
            at=NOW + 7,
            direction="NOT COMPUTABLE",
            device="xDrip-DexcomG6",
            delta=1000.0,
            noise=9,
        )
    ]
    sealed = [cipher.seal(canonical(e), "entry") for e in shapes]
    # the fields an uploader sends decide the length (here two buckets), never the values
    assert {len(s) for s in sealed} == {ENTRY_SEALED_BYTES + formats.ENTRY_BUCKET}
    for record, bytes_ in zip(shapes, sealed, strict=True):
        assert cipher.open(bytes_, "entry") == canonical(record)
    plain = [entry(v, direction="Flat", device="xDrip-DexcomG6") for v in (40, 99, 100, 400.5)]
    assert {len(cipher.seal(canonical(e), "entry")) for e in plain} == {ENTRY_SEALED_BYTES}


def test_a_decision_seals_to_one_length_whatever_it_decided(cipher):
    shapes = [
        decision(),
        decision(decision="none", kind=None, reason="in range predicted"),
        decision(
            decision="no_decision",
            kind=None,
            probabilities=None,
            cgm=None,
            reason="12 of 24 readings missing in the last 120 min; no decision without a full"
            " window",
        ),
        decision(decision="urgent", reason="urgent low: 54 mg/dL, at or below 55 mg/dL", cgm=54.0),
        decision(
            decision="alert",
            reason="hypo predicted within 120 min (P 0.123: held on until it falls below 0.123);"
            " still falling, 12.5 mg/dL below the last alert",
            probabilities={k: 1.2345678901234567e-05 for k in ("in_range", "hypo", "hyper")},
        ),
        decision(
            decision="snoozed",
            kind="hyper",
            reason="hyper predicted within 120 min (P 0.123: held on until it falls below "
            "0.123); an alert was raised less than 120 min ago",
        ),
        decision(
            decision="no_decision",
            kind=None,
            probabilities=None,
            threshold=None,
            cgm=None,
            model_kind="unknown",
            reason="the model could not run (RuntimeError); see the service log",
        ),
    ]
    stored = set()
    for shape in shapes:
        sealed = cipher.seal(padded_json(shape), "alert")
        blob, context = formats.detach(sealed)
        assert context == formats.alert_context(NOW, 3, "ab" * 32, shape["model_kind"])
        stored.add(len(blob))
        assert json.loads(cipher.open(sealed, "alert")) == shape
    assert stored == {ALERT_SEALED_BYTES}


def test_a_decision_does_not_open_with_another_readings_columns(cipher):
    blob, _ = formats.detach(cipher.seal(padded_json(decision()), "alert"))
    moved = formats.attach(blob, formats.alert_context(NOW + 300_000, 3, "ab" * 32, "personalized"))
    with pytest.raises(DecryptionError):
        cipher.open(moved, "alert")
    other = DataCipher(new_data_key(), "p-aaaaaaaaaaaa")
    with pytest.raises(DecryptionError):
        other.open(cipher.seal(canonical(entry(100)), "entry"), "entry")
    with pytest.raises(DecryptionError):
        cipher.open(cipher.seal(canonical(entry(100)), "entry"), "treatment")


def test_what_no_layout_reproduces_is_sealed_as_padded_json(cipher):
    for text in (b'{"sgv": 100}', canonical({"type": "sgv", "date": "yesterday"})):
        sealed = cipher.seal(text, "entry")
        assert len(sealed) == 12 + 512 + 16
        assert cipher.open(sealed, "entry") == text
    odd = decision(extra_field=1)
    sealed = cipher.seal(json.dumps(odd).encode(), "alert")
    assert formats.detach(sealed) is None or sealed[0] != formats.ALERT_FORMAT
    assert json.loads(cipher.open(sealed, "alert")) == odd


@pytest.mark.parametrize("first", [formats.ENTRY_FORMAT, 0x00])
def test_an_older_entry_row_reads_even_when_its_nonce_starts_as_a_compact_one(cipher, first):
    old = canonical(entry(77))
    for plaintext in (old, old + b" " * (512 - len(old))):
        nonce = bytes([first]) + b"\x05" * 11
        sealed = nonce + cipher._aead.encrypt(nonce, plaintext, cipher._associated("entry"))
        assert cipher.open(sealed, "entry") == old


def test_the_store_keeps_a_decision_without_its_columns_and_reads_it_back(app, made):
    client, service = app
    carol = made.people["carol"]
    person = service.store.by_name("carol")
    cipher = service.keyring.cipher(person.id)
    at = NOW - 30 * 3_600_000
    matching = decision(reading_ms=at)
    mismatched = decision(reading_ms=at + 300_000)  # columns say another model: kept whole
    service.store.add_alerts(
        person.id,
        [
            (at, 3, "ab" * 32, "personalized", cipher.seal(padded_json(matching), "alert")),
            (
                at + 300_000,
                4,
                "cd" * 32,
                "predefined",
                cipher.seal(padded_json(mismatched), "alert"),
            ),
        ],
    )
    lengths = service.store.database.query(
        "SELECT length(sealed) AS n FROM alerts WHERE person_id = ? ORDER BY date_ms", (person.id,)
    )
    assert lengths[0]["n"] == ALERT_SEALED_BYTES and lengths[1]["n"] > ALERT_SEALED_BYTES
    answer = client.get(
        f"/api/v1/alerts?find[date][$gte]={at}&find[date][$lte]={at + 300_000}",
        headers=carol.secret,
    )
    shown = sorted(answer.json(), key=lambda d: d["reading_ms"])
    assert [{k: v for k, v in d.items() if k not in ("id", "created")} for d in shown] == [
        matching,
        mismatched,
    ]


def test_stored_entries_have_one_length_and_read_back(app, made):
    client, service = app
    carol = made.people["carol"]
    person = service.store.by_name("carol")
    at = NOW - 50 * 3_600_000
    sent = [
        {"type": "sgv", "sgv": v, "date": at + i * 300_000, "direction": "Flat", "device": "G6"}
        for i, v in enumerate((45, 345, 99))
    ]
    assert client.post("/api/v1/entries", json=sent, headers=carol.secret).status_code == 200
    lengths = service.store.database.query(
        "SELECT length(sealed) AS n FROM entries WHERE person_id = ? AND date_ms >= ? AND"
        " date_ms <= ?",
        (person.id, at, at + 600_000),
    )
    assert [row["n"] for row in lengths] == [ENTRY_SEALED_BYTES] * 3
    got = client.get(
        f"/api/v1/entries.json?find[date][$gte]={at}&find[date][$lte]={at + 600_000}",
        headers=carol.secret,
    ).json()
    assert sorted((g["sgv"], g["dateString"]) for g in got) == sorted(
        (s["sgv"], iso(s["date"])) for s in sent
    )
    # an entry stored before, sealed as padded JSON, reads back beside them
    old = entry(77, at=at + 900_000)
    nonce = bytes([formats.ENTRY_FORMAT]) + b"\x09" * 11
    text = canonical(old)
    sealed = nonce + service.keyring.cipher(person.id)._aead.encrypt(
        nonce, text + b" " * (512 - len(text)), b"entry|" + person.id.encode()
    )
    key = service.keyring.cipher(person.id).fingerprint("entry", "sgv", str(old["date"]))
    service.store.add_entries(person.id, [Write(old["date"], key, sealed)], "test")
    (shown,) = client.get(
        f"/api/v1/entries.json?find[date][$gte]={old['date']}&find[date][$lte]={old['date']}",
        headers=carol.secret,
    ).json()
    assert {k: v for k, v in shown.items() if k != "_id"} == old
