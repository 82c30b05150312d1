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


def test_a_round_runs_when_due_and_a_failed_one_is_logged_and_tried_next_time(caplog):
    store, now = FlakyStore(), [1000.0]
    keeper = Housekeeper(store, every_seconds=3600, clock=lambda: now[0])  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="tailorml.service.housekeeping"):
        assert keeper.run_if_due() is None  # the first round, failed
    assert "housekeeping failed" in caplog.text and "restarting" in caplog.text
    now[0] += 3599
    assert keeper.run_if_due() is None and store.rounds == 1  # not due yet
    now[0] += 1
    assert keeper.run_if_due() == {"partitions": {}, "retention": {}} and store.rounds == 2


def test_the_job_runner_keeps_house_between_jobs(tmp_path):
    """The runner's loop runs the rounds (no thread of their own): at start, then hourly."""
    from tailorml.service.crypto import ServerKey, write_key_file
    from tailorml.service.jobs import JobRunner

    data = tmp_path / "data"
    data.mkdir()
    key = ServerKey.load(write_key_file(tmp_path / "server.key"), data)
    runner = JobRunner(data, key, None, poll_seconds=0.05, retention_days=30)
    rounds = []
    runner.housekeeper.run_once = lambda: rounds.append(1) or {}  # type: ignore[method-assign]
    runner.start()
    deadline = time.monotonic() + 10
    while not rounds and time.monotonic() < deadline:
        time.sleep(0.02)
    runner.stop()
    assert rounds == [1]  # one round at start; the next one an hour later
    assert runner.housekeeper.retention_days == 30
