"""Bytes the service stores per CGM reading, table by table, and what that makes per
person-year: the baseline of "less per reading" (issue: beyond one machine).

    .venv/bin/python benchmarks/bench_storage.py --run runs/<demo run> [--people 4]
        [--days 3] [--follower-polls-per-hour 12] [--database postgresql://...]

A fresh data directory (SQLite, as `tailorml serve --data` makes it) with the run's model
as the predefined one and `--people` patients; each uploads `--days` of synthetic readings
5 minutes apart in batches of 12 (one hour, as an uploader catching up sends them), every
reading decided live by the model, and a follower reads `entries.json?count=288` every
`--follower-polls-per-hour` uploads' worth of time. The audit of reads is batched per
hour (per reader, person and kind of read: the first read's line at once, the rest as one
line): the polls are spaced in simulated time as a real follower's would be (an hour's
polls over an hour), so the lines are counted as production would write them. The
requests go through the real app in process (FastAPI's TestClient): the same code paths
as over HTTP, without a socket. Then the file is checkpointed and VACUUMed and SQLite's
`dbstat` gives each table's and index's bytes; per reading = bytes / readings stored.
With `--database` (an empty PostgreSQL database) the tables are there instead, and the
sizes are PostgreSQL's after a VACUUM (a partitioned table's and index's partitions
counted under its name: `PostgresDatabase.table_bytes`). Readings are synthetic; only their
sizes matter here.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from fastapi.testclient import TestClient

from tailorml.cli_service import register_predefined_run
from tailorml.registry import people as people_module
from tailorml.registry.database import DATABASE_ERRORS
from tailorml.registry.people import PeopleStore
from tailorml.service.app import create_app
from tailorml.service.auth import add_person
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey, write_key_file

FIVE_MINUTES_MS = 300_000
READINGS_PER_YEAR = 365 * 288


def readings(start_ms: int, count: int, seed: int) -> list[dict]:
    """A smooth synthetic trace between 55 and 250 mg/dL, 5 minutes apart (Dexcom-shaped
    entries, as xDrip+ uploads them)."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi)
    minutes = np.arange(count) * 5
    cgm = 150 + 90 * np.sin(phase + minutes / 240) + rng.normal(0, 4, count)
    cgm = np.clip(np.round(cgm), 40, 400).astype(int)
    return [
        {
            "type": "sgv",
            "sgv": int(value),
            "date": start_ms + i * FIVE_MINUTES_MS,
            "direction": "Flat",
            "device": "xDrip-DexcomG6",
        }
        for i, value in enumerate(cgm)
    ]


def _stores(app) -> list:
    """The app's people stores (their batched read lines are written before measuring)."""
    import gc

    return [o for o in gc.get_objects() if isinstance(o, PeopleStore)]


def fresh_data_directory(
    root: Path, run: Path, database: str | None = None
) -> tuple[Path, Path, PeopleStore]:
    """A data directory in `root` as `tailorml serve --data [--database]` makes it, with
    `run`'s model as the predefined one: (data directory, server key file, its people
    store)."""
    data, key = root / "data", write_key_file(root / "server.key")
    data.mkdir()
    register_predefined_run(data, run, database)
    return data, key, PeopleStore(database or data)


def app_of(data: Path, key: Path, database: str | None = None):
    """The service's app on `data` (and `database`), as `tailorml serve` builds it."""
    return create_app(Service(data, ServerKey.load(key, data), None, database=database))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a train/demo run directory")
    parser.add_argument("--people", type=int, default=4)
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--follower-polls-per-hour", type=int, default=12)
    parser.add_argument("--database", help="an empty PostgreSQL database's URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data, key, store = fresh_data_directory(Path(scratch), args.run, args.database)
        tokens = [add_person(store, f"p{i}", "patient", "bench")[1] for i in range(args.people)]
        app = app_of(data, key, args.database)
        count = int(args.days * 288)
        start = int(time.time() * 1000) - count * FIVE_MINUTES_MS
        began = time.perf_counter()
        polls = 0
        # the registry's clock (audit batching, server times) as a follower's day passes
        clock = [time.time()]
        people_module.time = SimpleNamespace(time=lambda: clock[0])
        poll_seconds = 3600 / max(1, args.follower_polls_per_hour)
        with TestClient(app) as client:
            for index, token in enumerate(tokens):
                header = {"api-secret": hashlib.sha1(token.encode()).hexdigest()}
                trace = readings(start, count, seed=index)
                for hour in range(0, count, 12):
                    answer = client.post(
                        "/api/v1/entries", json=trace[hour : hour + 12], headers=header
                    )
                    answer.raise_for_status()
                    for _ in range(args.follower_polls_per_hour):
                        client.get(
                            "/api/v1/entries.json?count=288", headers=header
                        ).raise_for_status()
                        polls += 1
                        clock[0] += poll_seconds
        elapsed = time.perf_counter() - began
        store.flush_reads()
        for service_store in _stores(app):
            service_store.flush_reads()
        people_module.time = time
        sizes = store.database.table_bytes()
        counts = {}
        for name in sizes:
            try:
                (counts[name],) = store.database.tuples(f"SELECT COUNT(*) FROM {name}")[0]
            except DATABASE_ERRORS:  # an index: no rows of its own
                continue
    print(f"# storage: {store.database.storage()}")
    stored = args.people * count
    total = sum(sizes.values())
    print(f"# {platform.node()}, {platform.processor() or platform.machine()}, {time.ctime()}")
    print(
        f"{args.people} people x {count} readings = {stored} readings, {polls} follower reads, "
        f"{elapsed:.0f} s"
    )
    print("| table or index | rows | bytes | bytes per reading |")
    print("| --- | ---: | ---: | ---: |")
    for name, size in sizes.items():
        if size <= 4096 and not counts.get(name):
            continue  # an empty table: one page
        rows = counts.get(name, "")
        print(f"| {name} | {rows} | {size:,} | {size / stored:.0f} |")
    print(f"| **all** | | {total:,} | **{total / stored:.0f}** |")
    per_year = total / stored * READINGS_PER_YEAR
    print(
        f"per person-year ({READINGS_PER_YEAR:,} readings): {per_year / 1e6:.0f} MB; "
        f"100,000 people: {per_year * 1e5 / 1e12:.1f} TB/year"
    )


if __name__ == "__main__":
    main()
