"""Current and proposed side by side, in words with the numbers beside them, computed from
the session's held-out figures of the predefined model and of the proposal."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import make_service_data
from tests.service.review_helpers import CURRENT, PROPOSED, register, signed_in

from tailorml.service.app import create_app
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey
from tailorml.service.pages import compare, headline


def test_the_words_are_computed_from_the_figures():
    # 10 lows in 7 held-out days: caught 9 -> 10, warned early 6 -> 8 (6.0 -> 8.0 a week)
    changes = {c.key: c for c in compare(PROPOSED, CURRENT, 7.0)}
    assert changes["lows"].current == "9 (missed 1)" and changes["lows"].proposed == "10 (missed 0)"
    assert changes["lows"].words == "1 more low caught, no missed low"
    assert changes["lows"].worse is False
    assert (changes["early"].current, changes["early"].proposed) == (
        "6.0 a week (6)",
        "8.0 a week (8)",
    )
    assert (
        changes["early"].words == "+2.0 early warnings a week" and changes["early"].worse is False
    )
    assert (changes["false"].current, changes["false"].proposed) == ("0.84", "1.68")
    assert changes["false"].words == "+0.84 false alarms a day (×2.0)"
    assert changes["false"].worse is True
    assert changes["lead"].words == "+5 min earlier" and changes["lead"].worse is False
    assert headline(list(changes.values())) == (
        "+2.0 early warnings a week, +0.84 false alarms a day (×2.0), no missed low"
    )


def test_worse_detection_and_unknown_days():
    worse = CURRENT | {"hypo_sensitivity": 0.7, "hypo_sensitivity_early": 0.5}
    changes = {c.key: c for c in compare(worse, CURRENT, None)}
    assert changes["lows"].words == "2 more lows missed, 3 of 10 missed"
    assert changes["lows"].worse is True
    assert changes["early"].words == "-1 early warning held out"  # no length: a count
    assert changes["false"].words == "the same false alarms" and changes["false"].worse is None


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained):
    return make_service_data(tmp_path_factory.mktemp("review-compare"), trained)


def test_the_candidate_page_shows_the_side_by_side(made, trained):
    service = Service(made.data, ServerKey.load(made.key_file, made.data), database=made.database)
    candidate = register(service, made.people["alice"].id, trained)
    assert service.held_out_days(service.store.person(made.people["bob"].id), candidate) == 7.0
    with TestClient(create_app(service, run_jobs=False)) as client:
        page = signed_in(client, made.people["bob"].token).get(f"/review/candidates/{candidate}")
    text = page.text
    assert "+2.0 early warnings a week, +0.84 false alarms a day (×2.0), no missed low" in text
    assert '<td class="worse">+0.84 false alarms a day (×2.0) (worse)</td>' in text
    figures = 'data-label="predefined model">0.84</td><td class="num" data-label="proposed">1.68'
    assert figures in text
