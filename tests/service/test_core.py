"""The service's rules called directly (no HTTP): paging through sealed filters, and a model
that cannot run."""

from __future__ import annotations

import pytest
from tests.service.conftest import make_service_data

from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey


@pytest.fixture
def service(tmp_path, trained):
    made = make_service_data(tmp_path, trained)
    return Service(made.data, ServerKey.load(made.key_file, made.data)), made


def test_a_type_filter_pages_through_sealed_records(service):
    core, _ = service
    alice = core.store.by_name("alice")
    start = 1_600_000_000_000
    entries = [
        {"type": "sgv" if i % 3 == 0 else "mbg", "sgv": 40 + i // 3, "mbg": 90, "date": start + i}
        for i in range(1500)
    ]
    core.upload_entries(alice, entries)
    found = core.entries(alice, None, 400, None, None, "sgv")
    # sgv are the 500 entries with i % 3 == 0 (sgv 40 + i // 3); the newest 400 are
    # i = 1497, 1494, ..., 300
    assert [e["sgv"] for e in found] == [40 + i // 3 for i in range(1497, 299, -3)]
    # inside a date range: i from 10 to 20 with i % 3 == 0, newest first
    within = core.entries(alice, None, 10, start + 10, start + 20, "sgv")
    assert [e["sgv"] for e in within] == [46, 45, 44]


def test_a_model_that_cannot_run_stores_the_reading_and_says_so(service, monkeypatch):
    core, _ = service
    carol = core.store.by_name("carol")

    def broken(person_id):
        raise RuntimeError("onnxruntime crashed")

    monkeypatch.setattr(core.runtimes, "for_person", broken)
    stored, decisions = core.upload_entries(
        carol, [{"type": "sgv", "sgv": 99, "date": 1_600_000_000_000}]
    )
    assert len(stored) == 1 and len(core.entries(carol, None, 10, None, None, None)) == 1
    assert [d.decision for d in decisions] == ["no_decision"]
    current = core.alerts(carol, None, 1, None, None)[0]
    assert current["decision"] == "no_decision" and current["threshold"] is None
    assert "the model could not run (RuntimeError)" in current["reason"]
