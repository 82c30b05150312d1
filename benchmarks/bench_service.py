"""Load on the cloud service over loopback: N simulated uploaders, each posting one CGM
reading at a time with the person's model deciding it, against a real `tailorml serve`.

    .venv/bin/python benchmarks/bench_service.py --run runs/<demo run> [--uploaders 200]
        [--interval 1.0] [--duration 30] [--saturate 15] [--durability normal|full]

Each uploader first sends 2 h of readings (so every later reading completes a window and
runs the model), then one reading every `--interval` seconds of wall time for
`--duration` seconds (open loop: a slow server does not slow the uploaders down), the
readings 5 minutes apart on the uploader's clock — a real uploader sends one every 5
minutes, so `--interval 1` is 300 times real time. `--saturate S` then lets every uploader
post back to back for S seconds (closed loop) to find the sustained maximum. The load
generator runs on the same machine as the server: on 2 cores they share the CPU, so the
figures are a floor. Readings are synthetic. bench_sizing.py runs these pieces against 1,
2 and 4 API processes (`serve --workers N`) with followers and a worker pool, in one table.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from tailorml.cli_service import register_predefined_run
from tailorml.registry.people import PeopleStore
from tailorml.service.auth import add_person
from tailorml.service.crypto import write_key_file

FIVE_MINUTES = 300_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    data: Path,
    key: Path,
    port: int,
    durability: str,
    workers: int = 1,
    jobs: bool = True,
    database: str | None = None,
) -> subprocess.Popen:
    """A `tailorml serve` on loopback (on `database`, a postgresql:// URL, if given),
    returned once it answers (with `workers` > 1, once every API process has had time to
    build its Service: a request answered by the first one says nothing of the others)."""
    command = [sys.executable, "-m", "tailorml", "serve", "--data", str(data)]
    command += ["--key-file", str(key), "--port", str(port), "--durability", durability]
    command += ["--workers", str(workers)] + ([] if jobs else ["--no-jobs"])
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env=database_environment(database),
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/status.json").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        raise RuntimeError("the server did not start")
    if workers > 1:
        time.sleep(2.0 * workers)  # each child builds its Service (about 2.5 s alone)
    return process


def database_environment(database: str | None) -> dict[str, str]:
    """This environment with $TAILORML_DATABASE set to `database` (or unset): the URL goes
    in the environment, never on a command line that every user of the machine can read."""
    environment = {k: v for k, v in os.environ.items() if k != "TAILORML_DATABASE"}
    if database:
        environment["TAILORML_DATABASE"] = database
    return environment


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def make_accounts(
    root: Path, run: Path, count: int, database: str | None = None, key: Path | None = None
) -> tuple[Path, Path, list[str]]:
    """A data directory under `root` (its registry in `database`, a postgresql:// URL, if
    given) with the run's model as the predefined one and `count` patients; (data, key file,
    each patient's api-secret)."""
    data = root / "data"
    key = key or write_key_file(root / "server.key")
    data.mkdir()
    register_predefined_run(data, run, database)
    store = PeopleStore(database or data)
    secrets = []
    for index in range(count):
        _, token = add_person(store, f"uploader{index}", "patient", "benchmark")
        secrets.append(hashlib.sha1(token.encode()).hexdigest())
    store.database.close()
    return data, key, secrets


def make_clients(port: int, count: int) -> list[httpx.AsyncClient]:
    """One client (one connection) per uploader or follower, as each is its own phone: a
    single httpx pool of 200 connections scans them all on every request and made the load
    generator, not the server, the bottleneck (seconds of queueing measured as latency)."""
    return [
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            # below uvicorn's 5 s keep-alive, so that no request goes out on a connection
            # the server is closing (a ReadError that says nothing about the service)
            limits=httpx.Limits(
                max_connections=1, max_keepalive_connections=1, keepalive_expiry=4.0
            ),
            timeout=60,
        )
        for _ in range(count)
    ]


async def seed(client: httpx.AsyncClient, secret: str, start_ms: int, count: int = 24) -> None:
    """`count` readings 5 minutes apart from `start_ms` (24: 2 h, so that every later reading
    completes a window and runs the model), in batches of at most 288 (a day)."""
    for first in range(0, count, 288):
        history = [
            {"type": "sgv", "sgv": 120 + (i % 7), "date": start_ms + i * FIVE_MINUTES}
            for i in range(first, min(count, first + 288))
        ]
        answer = await client.post("/api/v1/entries", json=history, headers={"api-secret": secret})
        answer.raise_for_status()


async def timed_upload(client, secret, reading, latencies, errors) -> None:
    """Post one reading; record its latency and whether it was acknowledged."""
    sent = time.perf_counter()
    try:
        answer = await client.post(
            "/api/v1/entries", json=[reading], headers={"api-secret": secret}
        )
        failure = None if answer.status_code == 200 else f"HTTP {answer.status_code}"
    except httpx.HTTPError as error:
        failure = type(error).__name__
    latencies.append(time.perf_counter() - sent)
    errors.append(failure)


async def open_loop(
    client, secret, start_ms, interval, duration, latencies, errors, rng, first_index=24
):
    """One reading every `interval` s of wall time for `duration` s, the readings 5 minutes
    apart on the uploader's clock from reading number `first_index`; the index after the
    last one sent is returned (where a next phase goes on)."""
    await asyncio.sleep(rng.uniform(0, interval))
    began = time.perf_counter()
    index = first_index
    while time.perf_counter() - began < duration:
        due = began + (index - first_index) * interval
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        reading = {
            "type": "sgv",
            "sgv": int(rng.integers(60, 250)),
            "date": start_ms + index * FIVE_MINUTES,
        }
        await timed_upload(client, secret, reading, latencies, errors)
        index += 1
    return index


async def closed_loop(client, secret, start_ms, duration, latencies, errors, first_index=10_000):
    began, index = time.perf_counter(), first_index
    while time.perf_counter() - began < duration:
        reading = {"type": "sgv", "sgv": 110, "date": start_ms + index * FIVE_MINUTES}
        await timed_upload(client, secret, reading, latencies, errors)
        index += 1
    return index


def percentiles(latencies: list[float]) -> tuple[float, float, float]:
    """p50, p95 and p99 in ms (NaN where nothing was timed)."""
    if not latencies:
        return (float("nan"),) * 3
    ms = np.asarray(latencies) * 1000
    return tuple(float(np.percentile(ms, q)) for q in (50, 95, 99))


def summary(name: str, latencies: list[float], errors: list[bool], elapsed: float) -> None:
    p50, p95, p99 = percentiles(latencies)
    print(
        f"{name}: {len(latencies):,} uploads in {elapsed:.1f} s = "
        f"{len(latencies) / elapsed:.0f} uploads/s; latency p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
        f"p99 {p99:.1f} ms, max {max(latencies) * 1000:.0f} ms; "
        f"errors {sum(e is not None for e in errors)}"
    )
    kinds = Counter(e for e in errors if e is not None)
    if kinds:
        print("  errors: " + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()))


async def run(args, port: int, secrets: list[str]) -> None:
    clients = make_clients(port, len(secrets))
    try:
        start_ms = int(time.time() * 1000) - 40 * 24 * 3_600_000
        await asyncio.gather(*(seed(c, s, start_ms) for c, s in zip(clients, secrets, strict=True)))
        rng = np.random.default_rng(0)
        latencies, errors = [], []
        began = time.perf_counter()
        await asyncio.gather(
            *(
                open_loop(
                    c,
                    s,
                    start_ms,
                    args.interval,
                    args.duration,
                    latencies,
                    errors,
                    np.random.default_rng(rng.integers(1 << 31)),
                )
                for c, s in zip(clients, secrets, strict=True)
            )
        )
        summary(
            f"open loop, {len(secrets)} uploaders, one reading each every {args.interval:g} s",
            latencies,
            errors,
            time.perf_counter() - began,
        )
        if args.saturate:
            latencies, errors = [], []
            began = time.perf_counter()
            await asyncio.gather(
                *(
                    closed_loop(c, s, start_ms, args.saturate, latencies, errors)
                    for c, s in zip(clients, secrets, strict=True)
                )
            )
            summary(
                f"closed loop (saturation), {len(secrets)} uploaders",
                latencies,
                errors,
                time.perf_counter() - began,
            )
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="a train/demo run (its model)")
    parser.add_argument("--uploaders", type=int, default=200)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--saturate", type=float, default=15.0)
    parser.add_argument("--durability", choices=("normal", "full"), default="normal")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}; server and load generator on the same machine; "
        f"synthetic readings; --durability {args.durability}"
    )
    with tempfile.TemporaryDirectory() as folder:
        data, key, secrets = make_accounts(Path(folder), args.run, args.uploaders)
        port = free_port()
        server = start_server(data, key, port, args.durability)
        try:
            asyncio.run(run(args, port, secrets))
        finally:
            stop_server(server)


if __name__ == "__main__":
    main()
