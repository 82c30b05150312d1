"""The service's housekeeping: every hour, the coming months' partitions of readings and
decisions (PostgreSQL, `registry.partitions`) and, when a retention is set, the removal
of the months past it (`PeopleStore.apply_retention`).

It runs in the job runner's loop, between jobs (`service.jobs.JobRunner`): in `tailorml
serve` with jobs, or in each `tailorml worker` when the API processes run `--no-jobs`. In
that loop it needs no thread and no database connection of its own (on PostgreSQL each
thread holds one, and an API process's connections are budgeted: `cli_service`), and a
round waits for a running job to end, which an hourly round can. Several of them at once
are harmless -- partitions are made under a try-lock that one process takes while the
others skip, and a retention that finds nothing left to remove writes nothing. A failed
round (the database restarting) is logged and tried again at the next hour; it never stops
the jobs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tailorml.registry.people import PeopleStore

log = logging.getLogger("tailorml.service.housekeeping")

EVERY_SECONDS = 3600.0
ACTOR = "housekeeping"


class Housekeeper:
    """The store's partitions and retention, a round at the first call of `run_if_due`,
    then one every `every_seconds`."""

    def __init__(
        self,
        store: PeopleStore,
        retention_days: int | None = None,
        every_seconds: float = EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.retention_days = retention_days
        self.every_seconds = every_seconds
        self.clock = clock
        self._next: float | None = None

    def run_if_due(self) -> dict | None:
        """A round when one is due (its result, or None when it failed: logged, and tried
        again at the next due time); None when none is due."""
        now = self.clock()
        if self._next is not None and now < self._next:
            return None
        self._next = now + self.every_seconds
        try:
            return self.run_once()
        except Exception:  # the database away for a moment: the next round tries again
            log.exception("housekeeping failed; trying again in %.0f s", self.every_seconds)
            return None

    def run_once(self) -> dict:
        """One round: {"partitions": made (None: another process was at it), "retention":
        what was removed ({} when nothing, or no retention is set)}."""
        made = self.store.maintain()
        removed = {}
        if self.retention_days is not None:
            removed = self.store.apply_retention(self.retention_days, ACTOR)
        if made:
            log.info("partitions made: %s", ", ".join(n for names in made.values() for n in names))
        if removed:
            log.info("retention: removed the readings and decisions before %s", removed["before"])
        return {"partitions": made, "retention": removed}
