"""The service's housekeeping (`service.housekeeping.Housekeeper`): a round removes what a
retention puts past the cut, a failed round is logged and tried again, and it runs with the
job runner."""

from __future__ import annotations

import logging
import time

from tailorml.registry.people import PeopleStore, Write
from tailorml.registry.retention import removed
from tailorml.service.auth import add_person
from tailorml.service.housekeeping import Housekeeper

DAY_MS = 86_400_000


def test_a_round_removes_the_months_past_the_retention(store_location):
    store = PeopleStore(store_location)
    ann, _ = add_person(store, "ann", "patient", "test")
    now = int(time.time() * 1000)
    store.add_entries(
        ann.id, [Write(now - 400 * DAY_MS, "old", b"o", "c"), Write(now, "new", b"n", "c")], "ann"
    )
    done = Housekeeper(store, retention_days=90).run_once()
    assert removed(done["retention"])["entries"] == 1
    assert [r.date_ms for r in store.entries(ann.id)] == [now]
    assert Housekeeper(store, retention_days=None).run_once()["retention"] == {}


class FlakyStore:
    """A store whose database is away for the first round."""

    def __init__(self) -> None:
        self.rounds = 0

    def maintain(self):
        self.rounds += 1
        if self.rounds == 1:
            raise OSError("the database is restarting")
        return {}


def test_a_failed_round_is_logged_and_the_next_one_runs(caplog):
    store = FlakyStore()
    keeper = Housekeeper(store, every_seconds=0.05)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="tailorml.service.housekeeping"):
        keeper.start()
        deadline = time.monotonic() + 10
        while store.rounds < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        keeper.stop()
    assert store.rounds >= 3
    assert "housekeeping failed" in caplog.text and "restarting" in caplog.text
    stopped_at = store.rounds
    time.sleep(0.2)
    assert store.rounds == stopped_at  # stopped means stopped
