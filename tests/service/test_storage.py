"""What is stored, and how: sealed records, wrapped keys, the grid of live windows, and the
rules of Nightscout payloads (no server needed)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from tailorml.errors import TailormlError
from tailorml.service import nightscout
from tailorml.service.crypto import (
    KEY_ENV,
    DataCipher,
    DecryptionError,
    ServerKey,
    new_data_key,
    write_key_file,
)
from tailorml.service.live import on_grid, summed_on_grid

MIN = 60_000


def test_readings_are_not_stored_in_the_clear(service_data, server):
    carol = service_data.people["carol"]
    with server.client(carol.secret) as client:
        client.post(
            "/api/v1/entries",
            json=[{"type": "sgv", "sgv": 313, "date": 1_610_000_000_000, "device": "Pump-XYZ-42"}],
        )
    raw = (service_data.data / "registry.sqlite").read_bytes()
    wal = service_data.data / "registry.sqlite-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert b"Pump-XYZ-42" not in raw and b'"sgv":313' not in raw
    connection = sqlite3.connect(service_data.data / "registry.sqlite")
    wrapped = connection.execute("SELECT wrapped_key FROM people WHERE id = ?", (carol.id,))
    assert len(wrapped.fetchone()[0]) == 12 + 32 + 16  # nonce + AES-256 key + GCM tag


def test_a_sealed_record_opens_only_for_its_owner_and_purpose():
    key = new_data_key()
    mine, other = DataCipher(key, "p-aaaaaaaaaaaa"), DataCipher(new_data_key(), "p-aaaaaaaaaaaa")
    moved = DataCipher(key, "p-bbbbbbbbbbbb")  # same key, another owner (a copied row)
    sealed = mine.seal(b'{"sgv": 100}', "entry")
    assert mine.open(sealed, "entry") == b'{"sgv": 100}'
    for attempt in (
        lambda: other.open(sealed, "entry"),
        lambda: moved.open(sealed, "entry"),
        lambda: mine.open(sealed, "alert"),
        lambda: mine.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), "entry"),
    ):
        with pytest.raises(DecryptionError):
            attempt()
    assert mine.seal(b"x", "entry") != mine.seal(b"x", "entry")  # fresh nonce every time
    assert mine.fingerprint("a", "b") == mine.fingerprint("a", "b") != other.fingerprint("a", "b")


def test_a_data_key_unwraps_only_with_its_server_key(tmp_path):
    first = ServerKey.load(write_key_file(tmp_path / "one.key"), tmp_path / "data")
    second = ServerKey.load(write_key_file(tmp_path / "two.key"), tmp_path / "data")
    data_key = new_data_key()
    wrapped = first.wrap(data_key, "p-aaaaaaaaaaaa")
    assert first.unwrap(wrapped, "p-aaaaaaaaaaaa") == data_key
    with pytest.raises(DecryptionError, match="start the service with the key"):
        second.unwrap(wrapped, "p-aaaaaaaaaaaa")


def test_the_server_key_is_never_read_from_beside_the_data(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    inside = write_key_file(data / "server.key")
    with pytest.raises(TailormlError, match="inside the data directory"):
        ServerKey.load(inside, data)
    with pytest.raises(TailormlError, match="never overwritten"):
        write_key_file(inside)
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(TailormlError, match="no server key"):
        ServerKey.load(None, data)
    monkeypatch.setenv(KEY_ENV, "dG9vIHNob3J0")  # base64 of 9 bytes
    with pytest.raises(TailormlError, match="32-byte key"):
        ServerKey.load(None, data)


def test_readings_snap_to_the_nearest_slot_within_half_an_interval():
    step = 5 * MIN
    slots = np.array([0, 5, 10, 15]) * MIN
    times = np.array([-2.5 * MIN, 6 * MIN, 7.4 * MIN, 12.6 * MIN, 15 * MIN]).astype(np.int64)
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    got = on_grid(times, values, slots, step)
    # slot 0: -2.5 is exactly half an interval away (kept); slot 5: 6 beats 7.4;
    # slot 10: 7.4 and 12.6 are both 2.6 min away, more than 2.5: empty; slot 15: exact
    np.testing.assert_array_equal(got, [1.0, 2.0, np.nan, 5.0])


def test_treatments_sum_into_the_interval_ending_at_each_slot():
    step = 5 * MIN
    slots = np.array([0, 5, 10]) * MIN
    times = np.array([-1 * MIN, 0, 1 * MIN, 5 * MIN, 9 * MIN, 11 * MIN]).astype(np.int64)
    amounts = np.array([100.0, 1.0, 2.0, 4.0, 8.0, 1000.0])
    # (-5, 0] gets 1 (the -1 min dose belongs to the slot before the window: dropped);
    # (0, 5] gets 2 + 4; (5, 10] gets 8; 11 min lies after the window
    np.testing.assert_array_equal(summed_on_grid(times, amounts, slots, step), [101.0, 6.0, 8.0])


def test_entry_fields_are_checked_and_unknown_ones_dropped():
    clean = nightscout.entries_from(
        {
            "type": "sgv",
            "sgv": 120,
            "dateString": "2024-05-01T10:00:00+02:00",
            "direction": "Flat",
            "_id": "client-id",
            "evil": {"$where": "1"},
        }
    )
    assert clean == [
        {
            "type": "sgv",
            "date": 1_714_550_400_000,
            "dateString": "2024-05-01T10:00:00+02:00",
            "sgv": 120.0,
            "direction": "Flat",
        }
    ]
    with pytest.raises(nightscout.PayloadError, match=r"entries\[0\]\.sgv: required"):
        nightscout.entries_from([{"type": "sgv", "date": 1_714_550_400_000}])
    with pytest.raises(nightscout.PayloadError, match=r"entries\[0\]\.sgv: must be a number"):
        nightscout.entries_from([{"type": "sgv", "sgv": True, "date": 1_714_550_400_000}])
    with pytest.raises(nightscout.PayloadError, match="more than a day in the future"):
        nightscout.entries_from([{"type": "sgv", "sgv": 100, "date": 4_102_444_800_000}])


def test_find_filters_become_inclusive_bounds():
    since, until, equal = nightscout.time_filter(
        {"find[date][$gt]": "1000", "find[date][$lte]": "5000", "find[type]": "sgv", "count": "3"},
        ("date",),
        ("type",),
    )
    assert (since, until, equal) == (1001, 5000, {"type": "sgv"})
    since, until, _ = nightscout.time_filter(
        {"find[date][$gte]": "1970-01-01T00:00:01Z", "find[date][$lt]": "2000"}, ("date",)
    )
    assert (since, until) == (1000, 1999)
    with pytest.raises(nightscout.PayloadError, match="unsupported filter"):
        nightscout.time_filter({"find[sgv][$gte]": "100"}, ("date",))
