"""Sizing: one mixed load against 1, 2 and 4 API processes (`tailorml serve --workers N`),
one after the other in one run, with a pool of `tailorml worker`s beside them; one table.

    .venv/bin/python benchmarks/bench_sizing.py --run runs/<demo run> [--workers 1,2,4]
        [--uploaders 200] [--history 288] [--interval 5] [--duration 30]
        [--followers-per-patient 1] [--poll-every 1] [--pool 2]
        [--target-p95 50] [--target-read-p95 100] [--step 8] [--saturate 10]

The pieces are bench_service.py's (a real server on loopback, one httpx client and
connection per phone, open and closed loops). A data directory is made once: `--uploaders`
patients, each with `--history` readings (288: a day, so that a follower's
`entries.json?count=288` returns a full day) uploaded and decided by the demo model
through one server; each row then starts from a copy of it. Per row (`--workers` value):

1. **mixed**: every patient uploads one reading every `--interval` s (open loop, the
   readings 5 minutes apart on the phone's clock: `--interval 5` is 60 times real time),
   and `--followers-per-patient` followers per patient (their own connections, the
   patient's api-secret, as Nightscout follower apps use it) each poll
   `GET /api/v1/entries.json?count=288` then `GET /api/v1/alerts/current` once every
   `--poll-every` readings, for `--duration` s;
2. **at the p95 target**: the same mix (followers' polls scaled with the uploads) at rising
   rates, `--step` s each, doubling from the mixed rate until upload p95 exceeds
   `--target-p95` ms or follower-read p95 `--target-read-p95` ms or a request fails, then
   bisecting `--bisect` times: the highest rate that met both targets (a step over a
   target is measured `--retry` more times and passes if one of them meets both: a
   neighbour's burst on a shared machine should not decide the row);
3. **saturation**: every patient uploads back to back for `--saturate` s (closed loop,
   no followers): the sustained maximum, and the server's CPU seconds per upload.

CPU is read from /proc (Linux): the server's process tree (the parent and its API
processes), the worker pool, this load generator (getrusage) and the whole machine, so
that the cores taken by others (another session on a shared machine) are in each row, with
the 1-minute load average at the end of the phase. `tailorml worker`s with no job queued
only poll the queue (one short transaction every 5 s each). Any failed request is counted
and reported; the run ends with exit status 1 if one failed. Readings are synthetic;
server and load generator share the machine's cores, so every figure is a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench_service import (
    FIVE_MINUTES,
    closed_loop,
    database_environment,
    free_port,
    make_accounts,
    make_clients,
    open_loop,
    percentiles,
    seed,
    start_server,
    stop_server,
)

READS = ("/api/v1/entries.json?count=288", "/api/v1/alerts/current")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


TICKS = os.sysconf("SC_CLK_TCK")


def process_stats() -> dict[int, tuple[int, float]]:
    """Every process's (parent pid, CPU seconds: user + system) from /proc/<pid>/stat."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            fields = text[text.rindex(")") + 2 :].split()  # after "(command name)"
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)
    return stats


def tree_cpu(roots: list[int]) -> dict[int, float]:
    """CPU seconds of each live process of the trees under these pids, by pid."""
    stats = process_stats()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    seconds, todo = {}, [pid for pid in roots if pid in stats]
    while todo:
        pid = todo.pop()
        seconds[pid] = stats[pid][1]
        todo += children.get(pid, [])
    return seconds


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot, all cores (/proc/stat: user,
    nice, system, irq, softirq, steal; not idle or iowait)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]) / TICKS


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """Cores used during a phase by the server, its PostgreSQL server (when local), the pool,
    this process and everything else."""

    def __init__(self, server: int, pool: list[int], database: list[int]) -> None:
        self.server, self.pool, self.database = server, pool, database

    def snapshot(self) -> tuple:
        return (
            tree_cpu([self.server]),
            tree_cpu(self.pool),
            own_cpu(),
            machine_busy(),
            tree_cpu(self.database),
        )

    def __enter__(self) -> CpuMeter:
        self.began = time.perf_counter()
        self.start = self.snapshot()
        return self

    def __exit__(self, *_) -> None:
        self.elapsed = time.perf_counter() - self.began
        end = self.snapshot()

        def delta(before: dict[int, float], after: dict[int, float]) -> float:
            # a process started during the phase counts from zero
            return sum(after[pid] - before.get(pid, 0.0) for pid in after)

        self.server_s = delta(self.start[0], end[0])
        self.pool_s = delta(self.start[1], end[1])
        self.generator_s = end[2] - self.start[2]
        self.machine_s = end[3] - self.start[3]
        self.database_s = delta(self.start[4], end[4])
        ours = self.server_s + self.database_s + self.pool_s + self.generator_s
        self.others_s = max(0.0, self.machine_s - ours)
        self.idle_s = max(0.0, os.cpu_count() * self.elapsed - self.machine_s)
        self.load = os.getloadavg()

    def cores(self, seconds: float) -> float:
        return seconds / self.elapsed

    def split(self) -> str:
        """Cores used by the server / database / pool / generator / others, and left idle."""
        parts = (
            self.server_s,
            self.database_s,
            self.pool_s,
            self.generator_s,
            self.others_s,
            self.idle_s,
        )
        return " / ".join(f"{self.cores(x):.2f}" for x in parts)


@dataclass
class Phase:
    """What one phase measured."""

    uploads: list[float] = field(default_factory=list)
    upload_errors: list = field(default_factory=list)
    reads: dict[str, list[float]] = field(default_factory=lambda: {path: [] for path in READS})
    read_errors: list = field(default_factory=list)
    meter: CpuMeter | None = None

    @property
    def failures(self) -> int:
        return sum(e is not None for e in self.upload_errors + self.read_errors)

    @property
    def read_latencies(self) -> list[float]:
        return [t for path in READS for t in self.reads[path]]

    def rate(self) -> float:
        return len(self.uploads) / self.meter.elapsed


async def follow(client, secret, interval, duration, phase: Phase, rng) -> None:
    """A follower app: each `interval` s the last day of readings, then the current alert."""
    await asyncio.sleep(rng.uniform(0, interval))
    began, polls = time.perf_counter(), 0
    while time.perf_counter() - began < duration:
        due = began + polls * interval
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        for path in READS:
            sent = time.perf_counter()
            try:
                answer = await client.get(path, headers={"api-secret": secret})
                failure = (
                    None if answer.status_code == 200 else f"{path}: HTTP {answer.status_code}"
                )
            except httpx.HTTPError as error:
                failure = f"{path}: {type(error).__name__}"
            phase.reads[path].append(time.perf_counter() - sent)
            phase.read_errors.append(failure)
        polls += 1


class Row:
    """One `--workers` value: its server, pool, phones and where each phone's clock is."""

    def __init__(self, args, store, number: int, workers: int) -> None:
        self.args, self.store, self.workers = args, store, workers
        self.data, self.database = store.copy(number)
        self.key, self.secrets = store.key, store.secrets
        self.next_index = [args.history] * len(self.secrets)
        self.start_ms = args.start_ms
        followers = round(args.followers_per_patient * len(self.secrets))
        self.follower_secrets = [self.secrets[i % len(self.secrets)] for i in range(followers)]

    def __enter__(self) -> Row:
        port = free_port()
        self.server = start_server(
            self.data,
            self.key,
            port,
            self.args.durability,
            self.workers,
            jobs=not self.args.pool,
            database=self.database,
        )
        command = [sys.executable, "-m", "tailorml", "worker", "--data", str(self.data)]
        command += ["--key-file", str(self.key), "--log-level", "warning"]
        self.pool = [
            subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=database_environment(self.database),
            )
            for _ in range(self.args.pool)
        ]
        self.settle([w.pid for w in self.pool])
        self.uploaders = make_clients(port, len(self.secrets))
        self.followers = make_clients(port, len(self.follower_secrets))
        return self

    @staticmethod
    def settle(processes: list[int], limit: float = 60.0) -> None:
        """Wait until these processes have started (their CPU time stops growing), so that
        a worker's imports are not counted in the first phase."""
        began, last = time.perf_counter(), -1.0
        while time.perf_counter() - began < limit:
            now = sum(tree_cpu(processes).values())
            if now - last < 0.05:
                return
            last = now
            time.sleep(1.0)

    async def close_clients(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.uploaders + self.followers))

    def __exit__(self, *_) -> None:
        for worker in self.pool:
            worker.terminate()
        for worker in self.pool:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        stop_server(self.server)
        self.store.drop(self.data, self.database)

    def meter(self) -> CpuMeter:
        return CpuMeter(self.server.pid, [w.pid for w in self.pool], self.store.pids)

    async def mixed(self, uploads_per_second: float, duration: float) -> Phase:
        """Uploads at `uploads_per_second` in all and the followers' polls in proportion."""
        interval = len(self.secrets) / uploads_per_second
        rng = np.random.default_rng(int(uploads_per_second * 1000) + self.workers)
        phase = Phase()
        with self.meter() as phase.meter:
            results = await asyncio.gather(
                *(
                    open_loop(
                        client,
                        secret,
                        self.start_ms,
                        interval,
                        duration,
                        phase.uploads,
                        phase.upload_errors,
                        np.random.default_rng(rng.integers(1 << 31)),
                        first_index=index,
                    )
                    for client, secret, index in zip(
                        self.uploaders, self.secrets, self.next_index, strict=True
                    )
                ),
                *(
                    follow(
                        client,
                        secret,
                        interval * self.args.poll_every,
                        duration,
                        phase,
                        np.random.default_rng(rng.integers(1 << 31)),
                    )
                    for client, secret in zip(self.followers, self.follower_secrets, strict=True)
                ),
            )
        self.next_index = list(results[: len(self.secrets)])
        return phase

    async def saturate(self, duration: float) -> Phase:
        phase = Phase()
        with self.meter() as phase.meter:
            results = await asyncio.gather(
                *(
                    closed_loop(
                        client,
                        secret,
                        self.start_ms,
                        duration,
                        phase.uploads,
                        phase.upload_errors,
                        first_index=index,
                    )
                    for client, secret, index in zip(
                        self.uploaders, self.secrets, self.next_index, strict=True
                    )
                )
            )
        self.next_index = list(results)
        return phase

    def meets(self, phase: Phase) -> bool:
        return (
            phase.failures == 0
            and percentiles(phase.uploads)[1] <= self.args.target_p95
            and percentiles(phase.read_latencies)[1] <= self.args.target_read_p95
        )

    async def at_target(self) -> tuple[float, Phase | None, list[Phase]]:
        """The highest uploads/s (mixed) whose p95s met the targets: doubling, then bisecting."""
        steps: list[Phase] = []

        async def step(rate: float) -> bool:
            for _ in range(1 + self.args.retry):
                await asyncio.sleep(2.0)  # what the last step left queued drains
                phase = await self.mixed(rate, self.args.step)
                phase.offered = rate
                steps.append(phase)
                ok = self.meets(phase)
                print(f"    step {rate:.0f}/s: {describe(phase)}{'' if ok else '  (over)'}")
                if ok:
                    return True
            return False

        good, bad = 0.0, None
        rate = self.args.uploaders / self.args.interval
        while bad is None and rate <= self.args.max_rate:
            if await step(rate):
                good, rate = rate, rate * 2
            else:
                bad = rate
        for _ in range(self.args.bisect if bad is not None else 0):
            middle = (good + bad) / 2 if good else bad / 2
            if await step(middle):
                good = middle
            else:
                bad = middle
        best = next((s for s in reversed(steps) if s.offered == good), None)
        return good, best, steps


def describe(phase: Phase) -> str:
    u50, u95, u99 = percentiles(phase.uploads)
    r50, r95, r99 = percentiles(phase.read_latencies)
    m = phase.meter
    reads = sum(len(v) for v in phase.reads.values())
    text = (
        f"{phase.rate():.0f} uploads/s p50/p95/p99 {u50:.1f}/{u95:.1f}/{u99:.1f} ms; "
        f"{reads / m.elapsed:.0f} reads/s p50/p95/p99 {r50:.1f}/{r95:.1f}/{r99:.1f} ms; "
        f"failed {phase.failures}; cores: server {m.cores(m.server_s):.2f}, database "
        f"{m.cores(m.database_s):.2f}, pool "
        f"{m.cores(m.pool_s):.2f}, generator {m.cores(m.generator_s):.2f}, others "
        f"{m.cores(m.others_s):.2f}, idle {m.cores(m.idle_s):.2f}; load {m.load[0]:.2f}"
    )
    kinds: dict[str, int] = {}
    for error in phase.upload_errors + phase.read_errors:
        if error is not None:
            kinds[error] = kinds.get(error, 0) + 1
    if kinds:
        text += "; errors: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    return text


async def measure(args, store, number: int, workers: int) -> dict:
    with Row(args, store, number, workers) as row:
        try:
            with row.meter() as idle:
                await asyncio.sleep(5.0)
            print(
                f"  idle 5 s: cores: server {idle.cores(idle.server_s):.3f}, pool "
                f"{idle.cores(idle.pool_s):.3f}, others {idle.cores(idle.others_s):.2f}; "
                f"load {idle.load[0]:.2f}"
            )
            # warm: every connection open, every API process past its first requests
            warm = await row.mixed(args.uploaders / args.interval, min(args.interval, 5.0))
            print(f"  warm-up: {describe(warm)}")
            mixed = await row.mixed(args.uploaders / args.interval, args.duration)
            print(f"  mixed: {describe(mixed)}")
            best, best_phase, steps = await row.at_target() if args.step else (0.0, None, [])
            await asyncio.sleep(2.0)
            saturation = await row.saturate(args.saturate) if args.saturate else None
            if saturation:
                print(f"  saturation: {describe(saturation)}")
        finally:
            await row.close_clients()
    phases = [warm, mixed, *([saturation] if saturation else [])]
    return {
        "store": store.name,
        "workers": workers,
        "mixed": mixed,
        "best": best,
        "best_phase": best_phase,
        "saturation": saturation,
        # failures count everywhere but in the steps past the target (overload is their point)
        "failures": sum(p.failures for p in phases)
        + sum(p.failures for p in steps if args.target_failures or p.offered <= best),
        "step_failures": sum(p.failures for p in steps if p.offered > best),
    }


def table(args, rows: list[dict]) -> None:
    firsts = {}
    for row in rows:
        firsts.setdefault(row["store"], row)
    print()
    print(
        "| store | API processes | uploads/s offered / achieved | upload p50 / p95 / p99 (ms) "
        "| follower reads/s | read p50 / p95 / p99 (ms) "
        f"| uploads/s at p95 ≤ {args.target_p95:g} ms (× 1 process) "
        "| saturation uploads/s, p95 (× 1 process) "
        "| server + database CPU ms per upload (saturation) / per follower poll (mixed) "
        "| cores: server / database / pool / generator / others / idle (mixed; saturation) "
        "| load average (mixed; saturation) "
        "| failed |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |")
    for row in rows:
        first = firsts[row["store"]]
        m, s = row["mixed"], row["saturation"]
        u = percentiles(m.uploads)
        r = percentiles(m.read_latencies)
        reads = sum(len(v) for v in m.reads.values()) / m.meter.elapsed
        ratio_best = row["best"] / first["best"] if first["best"] else float("nan")
        if s:
            sat = s.rate()
            ratio_sat = sat / first["saturation"].rate()
            saturation = f"{sat:.0f}, {percentiles(s.uploads)[1]:.0f} ms (× {ratio_sat:.2f})"
            upload_s = (s.meter.server_s + s.meter.database_s) / len(s.uploads)
            # a poll: entries.json?count=288 and alerts/current; what the mixed phase's
            # server CPU leaves after its uploads at the saturation's cost each
            polls = len(m.reads[READS[0]])
            spent = m.meter.server_s + m.meter.database_s - len(m.uploads) * upload_s
            poll_s = spent / polls if polls else 0.0
            per_upload = f"{1000 * upload_s:.2f} / {1000 * poll_s:.2f}"
            cores_s = "; " + s.meter.split()
            load = f"{m.meter.load[0]:.2f}; {s.meter.load[0]:.2f}"
        else:
            saturation = per_upload = "—"
            cores_s, load = "", f"{m.meter.load[0]:.2f}"
        cores_m = m.meter.split()
        best = row["best_phase"]
        at_target = (
            f"{row['best']:.0f} (achieved {best.rate():.0f}, p95 "
            f"{percentiles(best.uploads)[1]:.0f} ms; × {ratio_best:.2f})"
            if best
            else "—"
        )
        print(
            f"| {row['store']} | {row['workers']} "
            f"| {args.uploaders / args.interval:.0f} / {m.rate():.0f} "
            f"| {u[0]:.1f} / {u[1]:.1f} / {u[2]:.1f} | {reads:.0f} "
            f"| {r[0]:.1f} / {r[1]:.1f} / {r[2]:.1f} | {at_target} | {saturation} "
            f"| {per_upload} | {cores_m}{cores_s} | {load} | {row['failures']} |"
        )


class SqliteStore:
    """Rows on a data directory's SQLite file: each row on a copy of the seeded one."""

    name, pids = "SQLite", []

    def __init__(self, root: Path) -> None:
        self.root = root / "sqlite"
        self.root.mkdir()

    def make(self, args, key: Path | None) -> None:
        self.data, self.key, self.secrets = make_accounts(
            self.root, args.run, args.uploaders, None, key
        )
        self.seeding = None

    def copy(self, number: int) -> tuple[Path, str | None]:
        copy = self.root / f"row{number}"
        shutil.copytree(self.data, copy)
        return copy, None

    def drop(self, data: Path, database: str | None) -> None:
        shutil.rmtree(data)

    def close(self) -> None:
        pass


class PostgresStore:
    """Rows on a PostgreSQL server: `--database URL`'s, or one started from pgserver's
    wheel in a temporary directory (as tests/postgres_fixtures.py does); each row on a
    database copied from the seeded one (CREATE DATABASE ... TEMPLATE), the model files in
    a copy of the data directory."""

    name = "PostgreSQL"

    def __init__(self, root: Path, url: str | None) -> None:
        self.root, self.server, self.pids = root / "postgresql", None, []
        self.root.mkdir()
        if url is None:
            with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR (a container)
                warnings.simplefilter("ignore")
                import pgserver

                self.server = pgserver.get_server(self.root / "pgdata", cleanup_mode="stop")
            url = self.server.get_uri()
            pid_file = self.root / "pgdata" / "postmaster.pid"
            self.pids = [int(pid_file.read_text().split()[0])]
        self.base = url

    def url(self, database: str) -> str:
        parts = urllib.parse.urlsplit(self.base)
        return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))

    def admin(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as connection:
            for statement in statements:
                connection.execute(statement)

    def make(self, args, key: Path | None) -> None:
        self.admin("DROP DATABASE IF EXISTS sizing_seed", "CREATE DATABASE sizing_seed")
        self.seeding = self.url("sizing_seed")
        self.data, self.key, self.secrets = make_accounts(
            self.root, args.run, args.uploaders, self.seeding, key
        )

    def copy(self, number: int) -> tuple[Path, str | None]:
        name = f"sizing_row{number}"
        self.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = 'sizing_seed' AND pid <> pg_backend_pid()",
            f"DROP DATABASE IF EXISTS {name}",
            f"CREATE DATABASE {name} TEMPLATE sizing_seed",
        )
        copy = self.root / f"row{number}"
        shutil.copytree(self.data, copy)
        return copy, self.url(name)

    def drop(self, data: Path, database: str | None) -> None:
        name = urllib.parse.urlsplit(database).path.strip("/")
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        shutil.rmtree(data)

    def close(self) -> None:
        self.admin("DROP DATABASE IF EXISTS sizing_seed WITH (FORCE)")
        if self.server is not None:
            self.server.cleanup()


SEEDING_AT_ONCE = 8  # patients whose history is being uploaded at one time


def seed_store(args, store) -> None:
    """Every patient's `--history` readings, uploaded and decided through one server."""
    began = time.perf_counter()
    server = start_server(
        store.data, store.key, free_port(), args.durability, database=store.seeding
    )
    port = int(server.args[server.args.index("--port") + 1])

    async def seed_all() -> None:
        clients = make_clients(port, len(store.secrets))
        # a few day-long batches at a time: all of them at once queue behind each other in
        # the server's threads past the clients' 60 s timeout (PostgreSQL's batch of 288
        # costs about 1.5 times SQLite's, 0.45 s against 0.31 s in process)
        gate = asyncio.Semaphore(SEEDING_AT_ONCE)

        async def one(client, secret) -> None:
            async with gate:
                await seed(client, secret, args.start_ms, args.history)

        try:
            await asyncio.gather(*(one(c, s) for c, s in zip(clients, store.secrets, strict=True)))
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    try:
        asyncio.run(seed_all())
    finally:
        stop_server(server)
    print(
        f"# {store.name}: seeded {args.uploaders} x {args.history} readings in "
        f"{time.perf_counter() - began:.0f} s ({FIVE_MINUTES // 60_000} minutes apart)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="a train/demo run (its model)")
    parser.add_argument("--workers", default="1,2,4", help="API processes per row, in order")
    parser.add_argument(
        "--stores", default="sqlite", help="sqlite, postgresql or both (sqlite,postgresql)"
    )
    parser.add_argument(
        "--database",
        help="postgresql: this server's URL (the benchmark makes and drops its own "
        "databases there); else a PostgreSQL from pgserver in a temporary directory",
    )
    parser.add_argument("--uploaders", type=int, default=200)
    parser.add_argument("--history", type=int, default=288, help="readings per patient first")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--followers-per-patient", type=float, default=1.0)
    parser.add_argument("--poll-every", type=float, default=1.0, help="readings between polls")
    parser.add_argument("--pool", type=int, default=0, help="tailorml worker processes")
    parser.add_argument("--target-p95", type=float, default=50.0, help="uploads, ms")
    parser.add_argument("--target-read-p95", type=float, default=100.0, help="reads, ms")
    parser.add_argument("--step", type=float, default=8.0, help="s per rate step (0: none)")
    parser.add_argument("--bisect", type=int, default=3)
    parser.add_argument("--retry", type=int, default=1, help="tries more of a step over")
    parser.add_argument("--max-rate", type=float, default=2000.0)
    parser.add_argument("--saturate", type=float, default=10.0)
    parser.add_argument("--durability", choices=("normal", "full"), default="normal")
    parser.add_argument(
        "--target-failures",
        action="store_true",
        help="also count failures in the rate steps past the target",
    )
    args = parser.parse_args()
    # SIGTERM (a timeout) ends like Ctrl-C: the servers and PostgreSQL are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    counts = [int(w) for w in args.workers.split(",")]
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {platform.node()}: nproc "
        f"{os.cpu_count()}, {cpu_model()}, python {platform.python_version()}; server, "
        f"pool and load generator on the same machine; stores {args.stores}, --durability "
        f"{args.durability} (SQLite's); {args.uploaders} patients, {args.followers_per_patient:g} "
        f"followers each polling every {args.poll_every:g} readings, pool of {args.pool} "
        f"`tailorml worker`s (no job queued); synthetic readings"
    )
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        args.start_ms = int(time.time() * 1000) - 60 * 24 * 3_600_000
        stores, key = [], None
        try:
            for name in args.stores.split(","):
                store = (
                    SqliteStore(root) if name == "sqlite" else PostgresStore(root, args.database)
                )
                stores.append(store)
                store.make(args, key)
                key = store.key  # one server key for all
                seed_store(args, store)
            rows, number = [], 0
            for workers in counts:  # the stores alternate, so that a neighbour's burst is shared
                for store in stores:
                    print(f"## {store.name}, {workers} API process(es); load {os.getloadavg()}")
                    rows.append(asyncio.run(measure(args, store, number, workers)))
                    number += 1
                    if len(rows) < len(counts) * len(stores):  # a run cut short keeps these
                        print("# the table so far:")
                        table(args, rows)
        finally:
            for store in stores:
                store.close()
        table(args, rows)
        failed = sum(row["failures"] for row in rows)
        print(
            f"\nfailed requests: {failed} (steps past the target, not counted: "
            f"{sum(row['step_failures'] for row in rows)})"
        )
        if failed:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
