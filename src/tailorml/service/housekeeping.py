"""The service's housekeeping: every hour, the coming months' partitions of readings and
decisions (PostgreSQL, `registry.partitions`) and, when a retention is set, the removal
of the months past it (`PeopleStore.apply_retention`).

It runs beside the personalization jobs (`service.jobs.JobRunner` starts and stops it):
in `tailorml serve` with jobs, or in each `tailorml worker` when the API processes run
`--no-jobs`. Several of them at once are harmless -- partitions are made under a try-lock
that one process takes while the others skip, and a retention that finds nothing left to
remove writes nothing. A failure (the database restarting) is logged and tried again at
the next hour; it never stops the jobs or the API.
"""

from __future__ import annotations

import logging
import threading

from tailorml.registry.people import PeopleStore

log = logging.getLogger("tailorml.service.housekeeping")

EVERY_SECONDS = 3600.0
ACTOR = "housekeeping"


class Housekeeper:
    """A thread that keeps the store's partitions and retention, once at start, then every
    `every_seconds`."""

    def __init__(
        self,
        store: PeopleStore,
        retention_days: int | None = None,
        every_seconds: float = EVERY_SECONDS,
    ) -> None:
        self.store = store
        self.retention_days = retention_days
        self.every_seconds = every_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="housekeeping", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

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

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:  # the database away for a moment: the next round tries again
                log.exception("housekeeping failed; trying again in %.0f s", self.every_seconds)
            if self._stop.wait(self.every_seconds):
                return
