"""Shared helpers: small hand-made cohorts whose windows and events can be counted by hand,
and a small alert model trained briefly on real windows (deployment and service tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tailorml.config import config_from_dict
from tailorml.data.prepared import Prepared, prepare
from tailorml.models.cnn import SmallCNN
from tailorml.models.train import LabeledData
from tailorml.policy import AlertPolicy
from tailorml.recipe import Recipe, fit_predefined, fresh_model

START = pd.Timestamp("2025-01-06 00:00:00")


def cohort_frame(traces: dict[str, list[float]], sample_minutes: int = 3, **extra) -> pd.DataFrame:
    """One row per reading: `traces` maps patient id to its CGM values (NaN = missing)."""
    frames = []
    for patient, values in traces.items():
        n = len(values)
        frame = pd.DataFrame(
            {
                "patient_id": patient,
                "group": extra.get("group", "adult"),
                "time": START + pd.to_timedelta(np.arange(n) * sample_minutes, unit="min"),
                "cgm": np.asarray(values, dtype=float),
                "cho": 0.0,
                "insulin": 0.0,
            }
        )
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def write_cohort(tmp_path: Path):
    """Write a frame to a Parquet (or CSV) file and return its path."""

    def write(frame: pd.DataFrame, name: str = "cohort.parquet") -> Path:
        path = tmp_path / name
        if path.suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        return path

    return write


TINY_RUN = """
[cohort]
path = "synthetic"
individuals = ["adolescent-003", "adult-008", "child-004"]
max_days = 3.0

[train]
epochs = 1

[run]
runs_dir = "{runs}"
name = "tiny"
"""


@pytest.fixture(scope="session")
def tiny_run_config():
    """A train config for a run in seconds: 3 simulated patients, 3 days, one epoch.
    Format with runs=<directory for the run>."""
    return TINY_RUN


# A small alert model trained briefly on real windows of three simulated patients
# (3 days each), shared by the deployment and service tests.
PATIENTS = ["adolescent-003", "adult-008", "child-004"]


@dataclass
class Trained:
    model: SmallCNN
    prepared: Prepared
    train: np.ndarray  # training windows (calibration), raw units
    test: np.ndarray  # test windows, raw units


@pytest.fixture(scope="session")
def trained() -> Trained:
    config = config_from_dict(
        {"cohort": {"path": "synthetic", "individuals": PATIENTS, "max_days": 3.0}}
    )
    prepared = prepare(config)
    windows = prepared.windows
    train, test = prepared.splits.pooled("train"), prepared.splits.pooled("test")
    torch.set_num_threads(1)
    model = fresh_model(config.model, windows.x[train], 3, seed=0)
    recipe = Recipe(8, 128, 5e-3, 1e-4, "balanced")
    general = LabeledData.from_numpy(windows.x[train], windows.y[train])
    fit_predefined(model, general, recipe, n_classes=3, seed=0)
    model.eval()
    model.policy = AlertPolicy.from_config(config, windows.sample_minutes).with_threshold(0.7)
    return Trained(model, prepared, windows.x[train], windows.x[test])


@dataclass
class CliResult:
    """What a shell sees of one `tailorml` command: exit code, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def tailorml_in_process():
    """`tailorml ARGS` through `cli.main` (its one-line errors and exit codes), in this
    process: a subprocess pays the torch import, 2-4 s, on every call. Each call starts as
    a fresh process would (its own argv, cwd and environment, no run directory of an
    earlier command to remove), and what `main` and the commands set for the process (the
    SIGTERM handler, the umask, torch's threads, the tailorml and uvicorn loggers) is put
    back after it.
    Call it as run(*args, cwd=None, env=None, unset=()): env adds variables, unset removes
    them. Tests about the process itself (signals, locks) still start the executable."""
    import contextlib
    import io
    import logging
    import os
    import signal
    import sys
    import warnings

    from tailorml import cli, runs

    def run(*args, cwd=None, env=None, unset=()) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        loggers = [logging.getLogger(name) for name in ("tailorml", "uvicorn")]
        kept = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
        umask = os.umask(0o077)
        os.umask(umask)
        sigterm = signal.getsignal(signal.SIGTERM)
        threads = torch.get_num_threads()
        with (
            pytest.MonkeyPatch.context() as patch,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            warnings.catch_warnings(),
        ):
            # files a command holds for the life of its process (serve's lock) close without
            # a word at its exit; here they close when the command's frames go
            warnings.simplefilter("ignore", ResourceWarning)
            patch.setattr(sys, "argv", ["tailorml", *map(str, args)])
            patch.setattr(runs, "_created", [])
            patch.setattr(cli, "_signals", [])
            for name in unset:
                patch.delenv(name, raising=False)
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            if cwd is not None:
                patch.chdir(cwd)
            try:
                cli.main()
                code = 0
            except SystemExit as stop:  # as the interpreter turns it into an exit code
                code = 0 if stop.code is None else stop.code
                if not isinstance(code, int):
                    print(code, file=sys.stderr)
                    code = 1
            finally:
                signal.signal(signal.SIGTERM, sigterm)
                if torch.get_num_threads() != threads:
                    torch.set_num_threads(threads)
                os.umask(umask)
                for logger, (handlers, level, propagate) in zip(loggers, kept, strict=True):
                    logger.handlers = handlers
                    logger.setLevel(level)
                    logger.propagate = propagate
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


# a real PostgreSQL server for the store's tests (started once, only when a test asks)
from tests.postgres_fixtures import (  # noqa: E402, F401
    empty_postgres_url,
    postgres_module_url,
    postgres_server,
    postgres_url,
    store_location,
)
