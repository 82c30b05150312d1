"""Requests per second of a follower's `GET /api/v1/entries.json?count=288` (the last day,
what xDrip+ followers, Nightguard and Nightscout's own page poll), in process.

    .venv/bin/python benchmarks/bench_follower_reads.py --run runs/<demo run> [--days 2]
        [--seconds 20] [--other-reads]

A fresh data directory (SQLite, `tailorml serve --data` as it makes it) with one patient
whose `--days` of synthetic readings are uploaded and decided live (as bench_storage), then
the follower reads `entries.json?count=288` back to back for `--seconds` through the real
app (FastAPI's TestClient: the routing, auth, audit and sealing code of an HTTP request,
without the socket). `--other-reads` also times `entries/current` and `alerts/current`.
Each read is checked (288 records). Single-threaded: requests/s of one process on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from bench_storage import FIVE_MINUTES_MS, fresh_data_directory, readings
from tailorml.service.app import build
from tailorml.service.auth import add_person


def rate(client: TestClient, path: str, header: dict, seconds: float, check) -> tuple[int, float]:
    """(requests, requests per second) of `path` back to back for `seconds`."""
    for _ in range(5):  # warm: caches, the data key, the first connection
        check(client.get(path, headers=header))
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        check(client.get(path, headers=header))
        done += 1
    return done, done / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a train/demo run directory")
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--other-reads", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data, key, store = fresh_data_directory(Path(scratch), args.run)
        token = add_person(store, "p0", "patient", "bench")[1]
        header = {"api-secret": hashlib.sha1(token.encode()).hexdigest()}
        count = int(args.days * 288)
        start = int(time.time() * 1000) - count * FIVE_MINUTES_MS
        trace = readings(start, count, seed=0)
        with TestClient(build(data, key, None)) as client:
            for hour in range(0, count, 12):
                client.post(
                    "/api/v1/entries", json=trace[hour : hour + 12], headers=header
                ).raise_for_status()

            def day(answer) -> None:
                answer.raise_for_status()
                assert len(answer.json()) == 288, len(answer.json())

            def ok(answer) -> None:
                answer.raise_for_status()

            paths = [("/api/v1/entries.json?count=288", day)]
            if args.other_reads:
                paths += [("/api/v1/entries/current", ok), ("/api/v1/alerts/current", ok)]
            print(
                f"# {platform.node()}, {platform.processor() or platform.machine()}, "
                f"{time.ctime()}; {count} readings stored"
            )
            print("| request | requests | requests/s |")
            print("| --- | ---: | ---: |")
            for path, check in paths:
                done, per_second = rate(client, path, header, args.seconds, check)
                print(f"| `GET {path}` | {done} | {per_second:.0f} |")


if __name__ == "__main__":
    main()
