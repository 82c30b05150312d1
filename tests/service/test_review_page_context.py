"""The patient's last 14 days on the review pages: consensus metrics of a known trace (GMI,
TIR, TBR, TAR, CV), the unit switch (mg/dL ↔ mmol/L, remembered in a cookie), the time zone,
and the recent alerts."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import make_service_data
from tests.service.review_helpers import register, signed_in

from tailorml.service.app import create_app
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey
from tailorml.service.pages import consensus

NOW_MS = 1_780_000_000_000  # 2026-05-28 20:26:40 UTC, Fri 29 May 05:26:40 in Tokyo
STEP = 5 * 60_000


def test_the_consensus_metrics_of_a_known_trace():
    # 10 readings 5 min apart: 50, 60, 100 ×5, 200, 260, 300 mg/dL
    values = np.array([50, 60, 100, 100, 100, 100, 100, 200, 260, 300], dtype=float)
    found = consensus(np.arange(10) * STEP, values, 5)
    assert found["mean_mgdl"] == pytest.approx(137.0)
    assert found["gmi_percent"] == pytest.approx(3.31 + 0.02392 * 137.0)  # 6.58704
    assert found["time_in_range"] == pytest.approx(0.5)
    assert found["time_below_70"] == pytest.approx(0.2)
    assert found["time_below_54"] == pytest.approx(0.1)
    assert found["time_above_180"] == pytest.approx(0.3)
    assert found["time_above_250"] == pytest.approx(0.2)
    assert found["cv"] == pytest.approx(np.std(values, ddof=1) / 137.0)
    gap = consensus(np.array([0, 2 * STEP]), np.array([100.0, 120.0]), 5)
    assert gap["data_sufficiency"] == pytest.approx(2 / 3)  # the missing slot counts


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained):
    return make_service_data(tmp_path_factory.mktemp("review-context"), trained)


def test_the_patients_page_in_both_units_and_local_time(made, trained):
    service = Service(
        made.data,
        ServerKey.load(made.key_file, made.data),
        database=made.database,
        clock=lambda: NOW_MS / 1000,
    )
    alice = made.people["alice"]
    # two days of readings ending now: 90 mg/dL then 180 mg/dL (mean 135)
    times = NOW_MS - np.arange(576)[::-1] * STEP
    values = np.where(np.arange(576) < 288, 90, 180)
    entries = [
        {"type": "sgv", "date": int(t), "sgv": int(v), "device": "test"}
        for t, v in zip(times, values, strict=True)
    ]
    service.upload_entries(service.store.person(alice.id), entries)
    register(service, alice.id, trained)
    with TestClient(create_app(service, run_jobs=False)) as client:
        bob = signed_in(client, made.people["bob"].token)
        page = bob.get(f"/review/patients/{alice.id}")
        assert 'id="mean">135</span> <span class="unit">mg/dL' in page.text
        assert 'id="gmi">6.5 %' in page.text  # 3.31 + 0.02392 × 135 = 6.5392
        assert 'id="tir" class="">100.0 %' in page.text
        assert "576 readings" in page.text and 'id="trace"' in page.text
        assert "readings in 14.3 % of the 14 days" in page.text  # 576 of 14 × 288 slots
        mmol = bob.get(f"/review/patients/{alice.id}", params={"unit": "mmol", "tz": "Asia/Tokyo"})
        assert 'id="mean">7.5</span> <span class="unit">mmol/L' in mmol.text  # 135 / 18.016
        assert "3.9–10.0 mmol/L" in mmol.text
        assert "newest Fri 29 May 05:26 (Asia/Tokyo)" in mmol.text
        remembered = bob.get(f"/review/patients/{alice.id}")  # the cookie keeps the choice
        assert 'id="mean">7.5</span>' in remembered.text
        assert (
            bob.get(f"/review/patients/{alice.id}", params={"tz": "Mars/Base"}).status_code == 200
        )
