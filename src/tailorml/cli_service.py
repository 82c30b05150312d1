"""The cloud service's commands: `tailorml serve`, `tailorml keygen` and `tailorml users`.

Kept apart from `cli.py` (which registers them) because they share nothing with the
research commands but the error handling of `cli.main`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from tailorml.registry.retention import MIN_DAYS as MIN_RETENTION_DAYS

console = Console(soft_wrap=True, highlight=False)

users_app = typer.Typer(
    rich_markup_mode=None,
    help="Accounts of the cloud service: patients and clinicians, tokens, assignments.",
    no_args_is_help=True,
)

DataOption = Annotated[
    Path,
    typer.Option(
        "--data",
        envvar="TAILORML_DATA",
        help="The service's data directory (registry, sealed readings); $TAILORML_DATA.",
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        envvar="TAILORML_DATABASE",
        help="A postgresql:// URL: people, readings and the model registry in that "
        "PostgreSQL database instead of --data's SQLite file (--data keeps the model files "
        "and job logs); $TAILORML_DATABASE.",
    ),
]
KeyOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        envvar="TAILORML_KEY_FILE",
        help="Server key file (outside --data); else $TAILORML_SERVER_KEY. "
        "Create one with `tailorml keygen`.",
    ),
]


def _actor() -> str:
    from tailorml.registry.models import default_actor

    return f"{default_actor()} (server administrator)"


def _private_files() -> None:
    """Files the service and its commands create hold health data and keys: readable by
    the server's user only (0600 files, 0700 folders)."""
    os.umask(0o077)


def database_url(database: str | None) -> str | None:
    """`--database`, checked: a postgresql:// URL (or nothing: the SQLite file of --data)."""
    from tailorml.registry.database import is_postgres_url

    if database is None or database == "":
        return None
    if not is_postgres_url(database):
        raise typer.BadParameter(
            "takes a postgresql://USER@HOST/DATABASE URL (without it the service keeps its "
            "tables in --data's SQLite file)",
            param_hint="'--database'",
        )
    return database


def _store(data: Path, must_exist: bool = True, database: str | None = None):
    from tailorml.errors import TailormlError
    from tailorml.registry.people import PeopleStore

    _private_files()
    database = database_url(database)
    if database is not None:
        return PeopleStore(database)
    if must_exist and not (data / "registry.sqlite").is_file():
        raise TailormlError(
            f"no service data at {data}; check --data (start with `tailorml serve --data {data} "
            "--predefined RUN`, or add the first user there)"
        )
    return PeopleStore(data)


def keygen(
    out: Annotated[Path, typer.Option("--out", help="Where to write the key (never overwritten).")],
) -> None:
    """Create the server key that wraps every person's data key. Keep it outside the data
    directory and back it up: without it the stored readings cannot be read."""
    from tailorml.io import check_writable
    from tailorml.service.crypto import write_key_file

    check_writable(out.parent, "--out", f"--out {out}")
    path = write_key_file(out)
    console.print(
        f"Server key written to {path} (mode 600). Start the service with --key-file {path}."
    )


def register_predefined_run(data: Path, run: Path, database: str | None = None) -> str:
    """Register a train/demo run's model as the predefined model of the service's registry."""
    from tailorml.config import load_config
    from tailorml.data.cohort import cohort_sha256
    from tailorml.errors import TailormlError
    from tailorml.registry.models import Registry
    from tailorml.runs import git_commit

    model_file, config_file = run / "model.pt", run / "config.toml"
    if not model_file.is_file() or not config_file.is_file():
        raise TailormlError(
            f"--predefined {run}: not a train/demo run (needs model.pt and config.toml)"
        )
    config = load_config(config_file)
    record = Registry(data, database).register_predefined(
        model_file,
        cohort_sha256(config.cohort.path or None),
        config.to_dict(),
        git_commit(),
        f"global model of run {run.name}",
        actor=_actor(),
    )
    return record.sha256


MAX_WORKERS = 64  # each API process holds ~250 MB: 100,000 of them forked until the OOM killer
MAX_THREADS = 200
SQLITE_THREADS = 40  # Starlette's (anyio's) thread pool
# On PostgreSQL a thread that touched the store holds one connection until it ends (the people
# store and the registry share it: `registry.database.open_database`): 16 request threads and
# EXTRA_CONNECTIONS per API process let 4 processes fit a default server (100, 3 reserved)
POSTGRES_THREADS = 16
# besides its request threads, an API process's connections: its main thread, the job
# runner's and the push sender's threads, a job's process (its main thread and its lease's),
# an ONNX export's process
EXTRA_CONNECTIONS = 6


def check_connection_budget(database: str, workers: int, threads: int) -> None:
    """Refuse to start API processes that could together open more connections than the
    PostgreSQL server allows (`max_connections` less the superuser's reserve): past it,
    requests would fail at random once load grows, instead of now with the numbers."""
    from tailorml.errors import TailormlError
    from tailorml.registry.people import PeopleStore
    from tailorml.registry.postgres import safe_url

    limit, reserved = PeopleStore(database).database.connection_limit()
    need = workers * (threads + EXTRA_CONNECTIONS)
    if need > limit - reserved:
        raise TailormlError(
            f"--workers {workers} x (--threads {threads} + {EXTRA_CONNECTIONS}) = {need}"
            f" PostgreSQL connections at most, above the {limit - reserved} that"
            f" {safe_url(database)} allows (max_connections {limit}, {reserved} reserved);"
            " lower --threads or --workers, or raise max_connections (other hosts and"
            " `tailorml worker` processes need theirs too)"
        )


LogLevelOption = Annotated[
    str,
    typer.Option(
        help="The service's own log lines on stderr: debug, info, warning or error. "
        "Request lines are never logged (Nightscout uploaders put tokens in URLs)."
    ),
]
JobsConfigOption = Annotated[
    Path | None,
    typer.Option(help="Config for personalization jobs (gates, candidates); default built in."),
]


RetentionOption = Annotated[
    int | None,
    typer.Option(
        min=MIN_RETENTION_DAYS,
        help="Remove readings and alert decisions older than this many days (whole months, "
        "by the housekeeping that runs with the jobs; the audit log says what went). Default: "
        "keep everything.",
    ),
]


def serve(
    data: DataOption,
    database: DatabaseOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8000,
    key_file: KeyOption = None,
    predefined: Annotated[
        Path | None,
        typer.Option(help="Register this train/demo run's model as the predefined model first."),
    ] = None,
    config: JobsConfigOption = None,
    durability: Annotated[
        str,
        typer.Option(
            help="normal: an acknowledged upload survives a killed server; full: also a power "
            "loss, at one disk flush per write."
        ),
    ] = "normal",
    he_model: Annotated[
        Path | None,
        typer.Option(
            help="An HE-friendly model file (experiments/he_friendly.toml) for encrypted "
            "alerts: POST /api/v1/encrypted/alert."
        ),
    ] = None,
    log_level: LogLevelOption = "info",
    jobs: Annotated[
        bool,
        typer.Option(
            "--jobs/--no-jobs",
            help="Also run personalization jobs in this process (one at a time); --no-jobs "
            "leaves them to `tailorml worker` processes.",
        ),
    ] = True,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_WORKERS,
            help="API processes on this port (uvicorn workers; a dead one is restarted; each "
            "holds about 250 MB). One person's readings are still decided in order, through "
            "the database.",
        ),
    ] = 1,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_THREADS,
            help="Request threads per API process (default 40 with --data alone, "
            f"{POSTGRES_THREADS} with --database: each thread holds one PostgreSQL "
            "connection, and the server allows 100 by default).",
        ),
    ] = None,
    retention_days: RetentionOption = None,
) -> None:
    """Run the cloud service: Nightscout-compatible uploads, live alerts from each person's
    active model, personalization jobs and the review page (docs/service.md)."""
    _private_files()
    import uvicorn

    from tailorml.service.crypto import ServerKey

    level = _log_level(log_level)
    database = database_url(database)
    if threads is None:
        threads = POSTGRES_THREADS if database else SQLITE_THREADS
    data.mkdir(parents=True, exist_ok=True)
    if database is None:  # with PostgreSQL, several `serve` (hosts) share the database
        lock = hold_serve_lock(data)  # noqa: F841 (held for the life of the process)
    server_key = ServerKey.load(key_file, data)
    if predefined is not None:
        digest = register_predefined_run(data, predefined, database)
        console.print(f"Predefined model {digest[:12]} registered from {predefined}.")
    jobs_file = jobs_config(config)
    if database is not None:
        check_connection_budget(database, workers, threads)
    if workers == 1:
        from tailorml.service.app import create_app
        from tailorml.service.core import Service

        service = Service(
            data,
            server_key,
            jobs_file,
            durability,
            he_model,
            database=database,
            retention_days=retention_days,
        )
    else:  # each worker process builds its own Service from what a child checked
        check_worker_start(
            {
                "data": str(data.resolve()),
                "database": database,
                "key_file": str(key_file.resolve()) if key_file else None,
                "config": str(jobs_file) if jobs_file else None,
                "durability": durability,
                "he_model": str(Path(he_model).resolve()) if he_model else None,
                "jobs": jobs,
                "log_level": level,
                "threads": threads,
                "retention_days": retention_days,
            }
        )
    where = f"data {data}"
    if database is not None:
        from tailorml.registry.postgres import safe_url

        where = f"database {safe_url(database)} · files {data}"
    console.print(
        f"tailorml service on http://{host}:{port} · {where} · review page "
        f"http://{host}:{port}/review · Ctrl-C stops it"
    )
    if retention_days is not None and not jobs:
        console.print(
            "[yellow]--retention-days with --no-jobs: the housekeeping runs where jobs run; "
            "give `tailorml worker` --retention-days instead.[/yellow]"
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(
            "[yellow]Listening beyond this machine: put a TLS-terminating proxy in front; "
            "tokens travel in every request.[/yellow]"
        )
    common = {
        "host": host,
        "port": port,
        "log_level": level.lower(),
        "access_log": False,
        "log_config": None,  # uvicorn's lines go through the handler of `_log_level`
    }
    if workers == 1:
        uvicorn.run(create_app(service, run_jobs=jobs, threads=threads), **common)
        return
    uvicorn.run(APP_FACTORY, factory=True, workers=workers, **common)


SERVE_ENV = "TAILORML_SERVE"  # what `serve --workers N` hands its worker processes
APP_FACTORY = "tailorml.cli_service:app_from_environment"
WORKER_CHECK = """
import sys
from tailorml.cli_service import app_from_environment
from tailorml.errors import TailormlError
try:
    service = app_from_environment().state.service
    service.runtimes.session(service.registry.predefined())
except TailormlError as error:
    sys.exit(str(error))
"""


def check_worker_start(settings: dict) -> None:
    """Put `settings` in $TAILORML_SERVE for the workers of `serve --workers N`, and start
    one worker's Service in a child process first, which also has the predefined model's
    ONNX file made if it is missing. Why a child: this process only forks, so it builds no
    Service (models, stores, an HE model) it would hold for nothing; and a setting every
    worker would refuse (no predefined model, another server key) fails here, once, instead
    of in N workers started again and again."""
    import subprocess
    import sys

    from tailorml.errors import TailormlError

    os.environ[SERVE_ENV] = json.dumps(settings)
    done = subprocess.run(
        [sys.executable, "-P", "-c", WORKER_CHECK], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise TailormlError(lines[-1] if lines else f"a worker could not start ({done.returncode})")


def app_from_environment():
    """The app of one worker process of `serve --workers N`: the Service of the settings the
    parent checked and put in $TAILORML_SERVE (its own connections and model sessions; the
    data directory, jobs and decisions are shared through the database)."""
    from tailorml.service.app import create_app
    from tailorml.service.core import Service
    from tailorml.service.crypto import ServerKey

    settings = json.loads(os.environ[SERVE_ENV])
    _log_level(settings["log_level"])
    data = Path(settings["data"])
    service = Service(
        data,
        ServerKey.load(settings["key_file"], data),
        Path(settings["config"]) if settings["config"] else None,
        settings["durability"],
        settings["he_model"],
        database=settings.get("database"),
        retention_days=settings.get("retention_days"),
    )
    return create_app(service, run_jobs=settings["jobs"], threads=settings.get("threads"))


def jobs_config(config: Path | None) -> Path | None:
    """The jobs' config file, checked now (a bad one fails at start, not in the first job),
    as an absolute path (job processes run elsewhere)."""
    if config is None:
        return None
    from tailorml.config import load_config

    load_config(config)
    return config.resolve()


def worker(
    data: DataOption,
    database: DatabaseOption = None,
    key_file: KeyOption = None,
    config: JobsConfigOption = None,
    log_level: LogLevelOption = "info",
    retention_days: RetentionOption = None,
) -> None:
    """Run personalization jobs of a service's data directory, one at a time, beside
    `tailorml serve` (or several workers: each job runs once, under a lease renewed while it
    runs; a killed worker's job is taken up again when its lease expires). Ctrl-C or SIGTERM
    hands the running job back to the queue and stops with 130 or 143, as a shell reports a
    command those signals ended, so a supervisor does not take the stop for a clean finish
    (docs/service.md)."""
    _private_files()
    import signal

    from tailorml.errors import TailormlError
    from tailorml.service.core import Service
    from tailorml.service.crypto import ServerKey

    _log_level(log_level)
    database = database_url(database)
    if database is None and not (data / "registry.sqlite").is_file():
        raise TailormlError(
            f"{data} holds no service data; check --data, or start the service first with "
            f"`tailorml serve --data {data} --predefined RUN`"
        )
    server_key = ServerKey.load(key_file, data)
    runner = Service(
        data, server_key, jobs_config(config), database=database, retention_days=retention_days
    ).jobs
    received: list[int] = []

    def stop(signal_number: int, _frame) -> None:
        received.append(signal_number)
        runner.stop()

    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, stop)
    where = data
    if database is not None:
        from tailorml.registry.postgres import safe_url

        where = f"{safe_url(database)} · files {data}"
    console.print(f"tailorml worker on {where} · personalization jobs · Ctrl-C stops it")
    runner.start()
    runner.wait()
    if not runner.stopped:  # the runner's thread died of an error (its traceback is above)
        raise TailormlError(f"the worker on {data} stopped on an error; see the lines above")
    handed = runner.handed_back
    by = f" by {signal.Signals(received[0]).name}" if received else ""
    back = f"; job {handed} handed back to the queue" if handed is not None else ""
    console.print(f"worker stopped{by}{back}")
    raise typer.Exit(128 + received[0] if received else 0)


LOG_LEVELS = ("debug", "info", "warning", "error")


def hold_serve_lock(data: Path):
    """An exclusive lock on DATA for one `tailorml serve`, taken before anything starts: more
    API processes are `--workers N` of that one (one port, one set of settings), more job
    processes `tailorml worker`. Jobs run under leases and one person's readings are decided
    in order through the database, so the processes need no other coordination."""
    import fcntl

    from tailorml.errors import TailormlError

    handle = open(data / "serve.lock", "a+")  # noqa: SIM115 (held open by the caller)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise TailormlError(
            f"another `tailorml serve` is running on {data}; stop it first (one process "
            "serves a data directory)"
        ) from None
    return handle


def _log_level(name: str) -> str:
    """Send tailorml's and uvicorn's log lines to stderr with a time and level (without
    this only warnings reach stderr, bare, and "removed contexts" or "client disconnected"
    never do)."""
    import logging

    if name.lower() not in LOG_LEVELS:
        raise typer.BadParameter(
            f"{name!r} is not a level; use one of {', '.join(LOG_LEVELS)}",
            param_hint="'--log-level'",
        )
    level = name.upper()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for logger_name in ("tailorml", "uvicorn"):  # one format, with the time, for both
        logger = logging.getLogger(logger_name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
    return level


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="A unique name (letters, digits, . _ @ -).")],
    role: Annotated[str, typer.Option(help="patient or clinician.")],
    data: DataOption,
    database: DatabaseOption = None,
    personalization: Annotated[
        bool,
        typer.Option(
            help="A patient's consent to personalization, given at enrollment; with "
            "--no-personalization they give it themselves on their page."
        ),
    ] = True,
) -> None:
    """Add a person; prints their token once (only its hashes are stored)."""
    from tailorml.service.auth import add_person, secret_sha1

    person, token = add_person(
        _store(data, must_exist=False, database=database), name, role, _actor(), personalization
    )
    console.print(f"Added {person.role} {person.name} (id {person.id}).")
    console.print(f"Token (shown once; keep it secret): [bold]{token}[/bold]")
    console.print(
        f"Nightscout uploaders: URL http://HOST:PORT with API secret = the token "
        f"(they send its SHA-1, {secret_sha1(token)[:8]}…)."
    )


@users_app.command("assign")
def users_assign(
    clinician: Annotated[str, typer.Argument(help="The clinician's name.")],
    patient: Annotated[str, typer.Argument(help="The patient's name.")],
    data: DataOption,
    database: DatabaseOption = None,
) -> None:
    """Let a clinician see a patient's data and review their personalized models."""
    store = _store(data, database=database)
    if store.assign(store.by_name(clinician).id, store.by_name(patient).id, _actor()):
        console.print(f"{clinician} now reviews {patient}.")
    else:
        console.print(
            f"{clinician} is assigned to {patient}, but {patient} withdrew {clinician}'s access:"
            f" it stays withdrawn until {patient} grants it on their page (or `tailorml users "
            f"consent {patient} --clinician {clinician} --grant` records their signed consent)."
        )


@users_app.command("consent")
def users_consent(
    patient: Annotated[str, typer.Argument(help="The patient's name.")],
    data: DataOption,
    database: DatabaseOption = None,
    clinician: Annotated[
        str | None, typer.Option(help="A clinician's name: their access, not personalization.")
    ] = None,
    grant: Annotated[
        bool | None,
        typer.Option(
            "--grant/--withdraw",
            help="Record the patient's consent (e.g. a signed form), or its withdrawal.",
        ),
    ] = None,
) -> None:
    """Show a patient's consents, or record one they gave or withdrew outside the page
    (recorded as the administrator's, in the audit log). Withdrawing personalization stops
    their jobs and rolls a personalized model back to the predefined one."""
    from tailorml.registry.models import Registry

    store = _store(data, database=database)
    person = store.by_name(patient)
    if grant is not None:
        clinician_id = store.by_name(clinician).id if clinician else None
        store.set_consent(person.id, grant, _actor(), "administrator", clinician_id)
        registry = Registry(data, database_url(database))
        withdrawn = not grant and clinician is None and registry.knows(person.id)
        if withdrawn and registry.active_model(person.id).kind == "personalized":
            registry.rollback(person.id, "consent to personalization withdrawn", _actor())
    names = {p.id: p.name for p in store.people()}
    for c in store.consent_history(person.id):
        whose = "personalization" if c.clinician_id is None else names[c.clinician_id]
        state = "granted" if c.granted else "withdrawn"
        console.print(f"{c.created}  {whose}: {state} ({c.source}, by {c.actor})")


@users_app.command("unassign")
def users_unassign(
    clinician: Annotated[str, typer.Argument(help="The clinician's name.")],
    patient: Annotated[str, typer.Argument(help="The patient's name.")],
    data: DataOption,
    database: DatabaseOption = None,
) -> None:
    """End a clinician's access to a patient (their next request for the patient is refused)."""
    from tailorml.errors import TailormlError

    store = _store(data, database=database)
    if not store.unassign(store.by_name(clinician).id, store.by_name(patient).id, _actor()):
        raise TailormlError(f"{clinician} is not assigned to {patient}; nothing to end")
    console.print(f"{clinician} no longer sees {patient}.")


@users_app.command("rotate")
def users_rotate(
    name: Annotated[str, typer.Argument()], data: DataOption, database: DatabaseOption = None
) -> None:
    """Give a person a new token (after a leak): the old one is refused at once, their data,
    models and assignments stay; a revoked account is active again with the new token."""
    from tailorml.service.auth import rotate_token, secret_sha1

    store = _store(data, database=database)
    token = rotate_token(store, store.by_name(name), _actor())
    console.print(f"New token of {name} (shown once; keep it secret): [bold]{token}[/bold]")
    console.print(
        f"Update their uploaders' API secret (its SHA-1 starts {secret_sha1(token)[:8]}…)."
    )


@users_app.command("list")
def users_list(data: DataOption, database: DatabaseOption = None) -> None:
    """Everyone, with role, state and assignments."""
    store = _store(data, database=database)
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("name", "id", "role", "state", "patients", "created"):
        table.add_column(column)
    names = {person.id: person.name for person in store.people()}
    for person in store.people():
        state = "erased" if person.erased else "revoked" if person.revoked else "active"
        consenting = set(store.patients_of(person.id))
        patients = ", ".join(
            names[p] + ("" if p in consenting else " (access withdrawn)")
            for p in store.assigned_patients(person.id)
        )
        table.add_row(person.name, person.id, person.role, state, patients, person.created)
    console.print(table)


@users_app.command("revoke")
def users_revoke(
    name: Annotated[str, typer.Argument()], data: DataOption, database: DatabaseOption = None
) -> None:
    """Revoke a person's token: their next request is refused. Their data stays."""
    store = _store(data, database=database)
    store.revoke(store.by_name(name).id, _actor())
    console.print(f"Token of {name} revoked.")


@users_app.command("erase")
def users_erase(
    name: Annotated[str, typer.Argument()],
    data: DataOption,
    database: DatabaseOption = None,
    key_file: KeyOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: erasure cannot be undone.")] = False,
) -> None:
    """Erase a person: delete their readings, treatments, alerts and data key, and retire every
    personalized model trained on their data. Recorded in the audit log."""
    from tailorml.errors import TailormlError
    from tailorml.service.core import Service
    from tailorml.service.crypto import ServerKey

    if not yes:
        raise TailormlError(f"erasing {name} cannot be undone; repeat with --yes")
    store = _store(data, database=database)
    person = store.by_name(name)
    service = Service(data, ServerKey.load(key_file, data), database=database_url(database))
    counts = service.erase(person, _actor())
    console.print(
        f"Erased {name}: {counts['entries']} readings, {counts['treatments']} treatments, "
        f"{counts['alerts']} alert decisions deleted; {len(counts['retired_models'])} "
        "personalized model(s) retired; data key deleted."
    )
