"""A decision's reason in the page's unit (issue 36, item 3): the reasons are written in
mg/dL; the pages show their numbers in mmol/L when that is the chosen unit (÷ 18.016, one
decimal, as every other glucose value of the pages). Hand-computed values."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient
from tests.service.conftest import make_service_data
from tests.service.review_helpers import signed_in

from tailorml.service.app import create_app
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey
from tailorml.service.pages import in_unit

NOW_MS = 1_780_000_000_000
STEP = 5 * 60_000


def test_the_numbers_of_a_reason_in_mmol():
    # 52 / 18.016 = 2.886, 55 / 18.016 = 3.053, 70 / 18.016 = 3.885, 12 / 18.016 = 0.666
    assert (
        in_unit("urgent low: 52 mg/dL, at or below 55 mg/dL", "mmol/L")
        == "urgent low: 2.9 mmol/L, at or below 3.1 mmol/L"
    )
    assert (
        in_unit("urgent low: 64 mg/dL, below 70 mg/dL and falling", "mmol/L")
        == "urgent low: 3.6 mmol/L, below 3.9 mmol/L and falling"
    )
    assert (
        in_unit(
            "hypo predicted within 30 min; still falling, 12 mg/dL below the last alert", "mmol/L"
        )
        == "hypo predicted within 30 min; still falling, 0.7 mmol/L below the last alert"
    )
    assert in_unit("urgent low: 52.5 mg/dl", "mmol/L") == "urgent low: 2.9 mmol/L"
    unchanged = "3 of 24 readings missing in the last 120 min"
    assert in_unit(unchanged, "mmol/L") == unchanged
    assert in_unit("urgent low: 52 mg/dL", "mg/dL") == "urgent low: 52 mg/dL"


def test_the_recent_alerts_reason_in_the_chosen_unit(tmp_path, trained):
    made = make_service_data(tmp_path, trained)
    service = Service(
        made.data, ServerKey.load(made.key_file, made.data), clock=lambda: NOW_MS / 1000
    )
    alice = service.store.person(made.people["alice"].id)
    times = NOW_MS - np.arange(30)[::-1] * STEP
    values = [120] * 29 + [52]  # the newest reading is an urgent low
    entries = [
        {"type": "sgv", "date": int(t), "sgv": v, "device": "test"}
        for t, v in zip(times, values, strict=True)
    ]
    service.upload_entries(alice, entries)
    assert service.live.history(alice.id, None, None, 1)[0]["reason"] == (
        "urgent low: 52 mg/dL, at or below 55 mg/dL"
    )
    with TestClient(create_app(service, run_jobs=False)) as client:
        bob = signed_in(client, made.people["bob"].token)
        mgdl = bob.get(f"/review/patients/{alice.id}").text
        assert "urgent low: 52 mg/dL, at or below 55 mg/dL" in mgdl
        mmol = bob.get(f"/review/patients/{alice.id}", params={"unit": "mmol"}).text
        assert "urgent low: 2.9 mmol/L, at or below 3.1 mmol/L" in mmol
        assert "mg/dL, at or below" not in mmol
        assert '<td class="num" data-label="CGM (mmol/L)">2.9</td>' in mmol
