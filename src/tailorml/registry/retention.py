"""The retention rule, the same on both backends: a retention of N days removes what is
dated before the first day (UTC) of the month that holds the day N days ago. Whole months,
because on PostgreSQL a month is a partition that goes at once (`registry.partitions`);
so at least N days are kept, and at most a month more."""

from __future__ import annotations

from tailorml.errors import TailormlError
from tailorml.registry import partitions

# a clinician's report covers the last 14 days and a personalization needs weeks of a
# person's readings: a shorter retention would take them away from both
MIN_DAYS = 30


def cut_ms(days: int, now_ms: int) -> int:
    """The first millisecond that a retention of `days` keeps at `now_ms`."""
    if days < MIN_DAYS:
        raise TailormlError(
            f"--retention-days must be at least {MIN_DAYS}, not {days}: a clinician's report"
            " covers the last 14 days and a personalization needs weeks of a person's readings"
        )
    return partitions.start_ms(partitions.month_of(now_ms - days * 86_400_000))


def removed(done: dict) -> dict[str, int]:
    """Rows removed per table, from a retention run's details (`PeopleStore.apply_retention`:
    rows deleted, or whole partitions dropped with their rows)."""
    return {
        table: sum(counts.get("partitions", {}).values())
        + counts.get("default_rows", 0)
        + counts.get("rows", 0)
        for table, counts in done.items()
        if isinstance(counts, dict)
    }
