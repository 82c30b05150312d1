"""The pages' default time zone is the patient's phone's offset from their uploads (issue 36,
item 2): the newest reading's `utcOffset` (or the offset of its `dateString`), else a
treatment's, else UTC; a zone chosen on the page (remembered in a cookie) wins, and the page
says which zone it shows and why. Times computed by hand from NOW_MS."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import make_service_data
from tests.service.review_helpers import signed_in

from tailorml.service.app import create_app
from tailorml.service.auth import add_person
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey
from tailorml.service.pages import offset_of, offset_zone, when

NOW_MS = 1_780_000_000_000  # Thu 28 May 2026 20:26:40 UTC
STEP = 5 * 60_000


def test_offsets_read_from_uploads():
    assert offset_of({"utcOffset": 120}) == 120
    assert offset_of({"utcOffset": 60.0, "dateString": "2026-05-28T20:26:40+0530"}) == 60
    assert offset_of({"dateString": "2026-05-28T15:26:40.000-0500"}) == -300
    assert offset_of({"sysTime": "2026-05-28T23:56:40+03:30"}) == 210
    assert offset_of({"created_at": "2026-05-28T20:26:40.000Z"}) is None  # a Z says nothing
    assert offset_of({"dateString": "2026-05-28"}) is None
    assert offset_of({"utcOffset": True}) is None and offset_of({"utcOffset": 5000}) is None
    assert [offset_zone(m) for m in (120, -300, 330, 0)] == [
        "UTC+02:00",
        "UTC-05:00",
        "UTC+05:30",
        "UTC+00:00",
    ]
    # 20:26 UTC is 22:26 at +2 h, 15:26 at -5 h, 01:56 the next day at +5:30
    assert when(NOW_MS, "UTC+02:00") == "Thu 28 May 22:26"
    assert when(NOW_MS, "UTC-05:00") == "Thu 28 May 15:26"
    assert when(NOW_MS, "UTC+05:30") == "Fri 29 May 01:56"


def _entries(count: int, **fields) -> list[dict]:
    times = NOW_MS - np.arange(count)[::-1] * STEP
    return [{"type": "sgv", "date": int(t), "sgv": 120, "device": "test"} | fields for t in times]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, trained):
    made = make_service_data(tmp_path_factory.mktemp("page-zone"), trained)
    service = Service(
        made.data, ServerKey.load(made.key_file, made.data), clock=lambda: NOW_MS / 1000
    )
    return made, service


def test_the_patients_offset_is_the_default_and_a_choice_wins(setup):
    made, service = setup
    alice = service.store.person(made.people["alice"].id)
    # an hour of readings at +1 h (winter), then the newest hour at +2 h (the phone moved on)
    older = _entries(24, utcOffset=60)
    for entry in older:
        entry["date"] -= 12 * STEP
    service.upload_entries(alice, older)
    service.upload_entries(alice, _entries(12, utcOffset=120))
    with TestClient(create_app(service, run_jobs=False)) as client:
        bob = signed_in(client, made.people["bob"].token)
        page = bob.get(f"/review/patients/{alice.id}").text
        assert (
            'id="zone-line">Times in <b>UTC+02:00</b>: the patient&#39;s phone&#39;s offset, '
            "from their last upload that carries one (a reading)."
        ) in page
        assert "newest Thu 28 May 22:26 (UTC+02:00)" in page
        assert '<option value="phone" selected>the patient\'s phone (UTC+02:00)' in page
        chosen = bob.get(f"/review/patients/{alice.id}", params={"tz": "Asia/Tokyo"}).text
        assert "newest Fri 29 May 05:26 (Asia/Tokyo)" in chosen
        assert "Times in <b>Asia/Tokyo</b>: chosen on this page" in chosen
        assert "<option selected>Asia/Tokyo</option>" in chosen
        assert "Asia/Tokyo" in bob.get(f"/review/patients/{alice.id}").text  # the cookie
        back = bob.get(f"/review/patients/{alice.id}", params={"tz": "phone"})
        assert "newest Thu 28 May 22:26 (UTC+02:00)" in back.text
        assert "tailorml_tz" not in bob.cookies  # forgotten: the phone's offset from now on
        assert "(UTC+02:00)" in bob.get(f"/review/patients/{alice.id}").text


def test_an_offset_in_the_date_string_or_a_treatment_or_none(setup):
    made, service = setup
    carol = service.store.person(made.people["carol"].id)
    # xDrip+ writes dateString in the phone's zone: 15:26:40-0500 is 20:26:40 UTC
    entries = _entries(6)
    for entry in entries:
        local_ms = entry["date"] - 5 * 3_600_000
        hours, rest = divmod(local_ms // 1000 % 86_400, 3600)
        entry["dateString"] = f"2026-05-28T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}-0500"
    service.upload_entries(carol, entries)
    dave, dave_token = add_person(service.store, "dave", "patient", "test")
    service.upload_entries(dave, _entries(6, dateString=None))
    with TestClient(create_app(service, run_jobs=False)) as client:
        page = signed_in(client, made.people["carol"].token).get("/me").text
        assert "Times in <b>UTC-05:00</b>" in page and "(a reading)" in page
        assert "newest Thu 28 May 15:26 (UTC-05:00)" in page
    with TestClient(create_app(service, run_jobs=False)) as client:
        me = signed_in(client, dave_token)
        page = me.get("/me").text
        assert "Times in <b>UTC</b>: no upload of the patient carries their phone" in page
        assert "newest Thu 28 May 20:26 (UTC)" in page
        note = {"eventType": "Note", "created_at": "2026-05-28T20:00:00Z", "utcOffset": 330}
        service.upload_treatments(dave, [note])
        page = me.get("/me").text
        assert "Times in <b>UTC+05:30</b>" in page and "(a treatment)" in page
        assert "newest Fri 29 May 01:56 (UTC+05:30)" in page
