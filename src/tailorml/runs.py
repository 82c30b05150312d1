"""Run directories: every run is a folder with its resolved config, environment, results.

`runs/<YYYYmmdd-HHMMSS>-<name>/` holds config.toml, environment.json, the result tables and
report.html. `run.json` records which steps finished (with the config fingerprint), so an
interrupted run resumes from its last finished step and a report can be re-rendered.
The name must be a safe file name (`tailorml.io.safe_component`), so a run directory is
always directly inside runs_dir. A run directory created by a command that then fails
before finishing anything is removed (`discard_unfinished`); one with finished work is kept.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tomllib
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from tailorml.config import Config, load_config, to_toml
from tailorml.errors import TailormlError
from tailorml.io import atomic_write_json, atomic_write_text, fingerprint, safe_component

PACKAGES = (
    "tailorml",
    "torch",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "scikit-learn",
    "fairlearn",
    "simglucose",
    "matplotlib",
    "pydantic",
)


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the source tree tailorml runs from, with '+dirty' if it has changes."""
    where = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def environment() -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": versions,
        "git_commit": git_commit(),
    }


BOOKKEEPING = frozenset({"config.toml", "environment.json", "run.json"})
RUNS_DIR_NOT_A_FOLDER = (
    "run.runs_dir (--runs-dir) {path} is a file or inside one; pass a folder (existing or new)"
)

_created: list[Path] = []  # run directories this process created, for discard_unfinished


def discard_unfinished() -> list[Path]:
    """Remove the run directories this process created that hold no finished work: no step
    marked done and no file besides config.toml/environment.json/run.json (results, cached
    models, task outputs are all written atomically, so any such file is finished work).
    Called when a command fails; returns the removed paths."""
    removed = []
    while _created:
        path = _created.pop()
        if path.is_dir() and not Run(path).holds_finished_work():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


RESUME_OTHER_KIND = (
    "{path} is a {found} run, not a {kind} run; resume it with the command that made it, or "
    "start a new run"
)
RESUME_EDITED = (
    "{path}/config.toml was edited after the run started, so its finished steps no longer "
    "match it; start a new run with the edited config (--config) instead of --resume"
)


RUN_STATE_DAMAGED = (
    "{path}/run.json is damaged ({error}); it records the finished steps: start a new run "
    "instead of resuming this one"
)


STRESS_MARKER = "DONE"  # a stress folder's marker from before it kept run.json: "stress"
# folders a deploy job writes (inside a train run, or at --out) are known by their summary
FOLDER_SUMMARIES = {"deploy.json": "deploy_export", "simulate.json": "deploy_simulate"}


def kind_of(path: str | Path) -> str | None:
    """Which job made the folder: the kind in its run.json, "stress" for a stress folder
    written before stress runs kept one, or a deploy job's by the summary it writes (refused
    when `path` is none of these)."""
    path = Path(path)
    marker = path / STRESS_MARKER
    if marker.is_file() and marker.read_text().strip() == "stress":
        return "stress"
    if not (path / "run.json").is_file():
        for summary, kind in FOLDER_SUMMARIES.items():
            if (path / summary).is_file():
                return kind
    return Run.open(path).kind


class Run:
    """One run directory and its step bookkeeping."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, config: Config, kind: str, runs_dir: str | Path | None = None) -> Run:
        """A new run directory for a job of `kind` ("train", "experiment", "evaluate")."""
        base = Path(runs_dir or config.run.runs_dir)
        name = safe_component(config.run.name, "run.name")
        if base.exists() and not base.is_dir():
            raise TailormlError(RUNS_DIR_NOT_A_FOLDER.format(path=base))
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = base / f"{stamp}-{name}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = base / f"{stamp}-{name}-{suffix}"
        try:
            path.mkdir(parents=True)
        except (FileExistsError, NotADirectoryError):
            raise TailormlError(RUNS_DIR_NOT_A_FOLDER.format(path=base)) from None
        _created.append(path)
        return cls.start(path, config, kind)

    @classmethod
    def start(cls, path: str | Path, config: Config, kind: str) -> Run:
        """The bookkeeping of a new run of `kind` in the folder `path`: a new one under
        runs_dir (`create`), or the output folder a command was given (`stress --out`).
        A folder a command was given is the caller's: it is never removed on failure."""
        path = Path(path)
        atomic_write_text(path / "config.toml", to_toml(config))
        atomic_write_json(path / "environment.json", environment())
        atomic_write_json(
            path / "run.json",
            {"kind": kind, "fingerprint": fingerprint(config.to_dict()), "steps": {}},
        )
        return cls(path)

    @classmethod
    def resume(cls, path: str | Path, kind: str) -> Run:
        """An existing run of `kind` whose config.toml is still the one it started with:
        resuming another kind of run, or one whose config was edited, would mix results."""
        run = cls.open(path)
        state = run.state()
        if state.get("kind") != kind:
            raise TailormlError(
                RESUME_OTHER_KIND.format(path=run.path, found=state.get("kind"), kind=kind)
            )
        if state["fingerprint"] not in run.config_fingerprints():
            raise TailormlError(RESUME_EDITED.format(path=run.path))
        return run

    @classmethod
    def open(cls, path: str | Path) -> Run:
        path = Path(path)
        if not (path / "run.json").is_file() or not (path / "config.toml").is_file():
            raise TailormlError(
                f"{path} is not a tailorml run directory (no run.json/config.toml); "
                "pass a folder under runs/"
            )
        return cls(path)

    def config(self) -> Config:
        return load_config(self.path / "config.toml")

    def config_fingerprints(self) -> set[str]:
        """Fingerprints config.toml matches: of the config it resolves to, and of the keys
        the file holds. A section or key a later version added (`[stress]`,
        `[deploy.learner]`) is absent from an older run's file and takes its defaults; the
        run's finished steps still hold."""
        resolved = self.config().to_dict()
        written = tomllib.loads(self.file("config.toml").read_text(encoding="utf-8-sig"))
        return {fingerprint(resolved), fingerprint(_as_written(resolved, written))}

    def state(self) -> dict[str, Any]:
        """run.json; a damaged one is a clear error, not a traceback."""
        try:
            state = json.loads((self.path / "run.json").read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise TailormlError(RUN_STATE_DAMAGED.format(path=self.path, error=error)) from None
        if not (
            isinstance(state, dict)
            and isinstance(state.get("steps"), dict)
            and isinstance(state.get("fingerprint"), str)
        ):
            problem = "it lacks kind, fingerprint or steps"
            raise TailormlError(RUN_STATE_DAMAGED.format(path=self.path, error=problem))
        return state

    @property
    def kind(self) -> str | None:
        """The job that made the run ("train", "evaluate", "experiment", "lodo"), from
        run.json: what `tailorml report` and `--resume` go by, never the files inside."""
        return self.state().get("kind")

    def done(self, step: str) -> bool:
        state = self.state()
        return state["steps"].get(step) == state["fingerprint"]

    def mark_done(self, step: str) -> None:
        state = self.state()
        state["steps"][step] = state["fingerprint"]
        atomic_write_json(self.path / "run.json", state)

    def holds_finished_work(self) -> bool:
        try:
            if self.state()["steps"]:
                return True
        except TailormlError:  # damaged bookkeeping: judge by the files
            pass
        return any(
            item.is_file() and not item.name.startswith(".")
            for item in self.path.rglob("*")
            if item.relative_to(self.path).as_posix() not in BOOKKEEPING
        )

    def file(self, name: str) -> Path:
        return self.path / name

    def model_file(self, given: str | Path | None = None, option: str | None = "--model") -> Path:
        """The model a job examines: `given` (the command's `option`, checked as such) or
        the run's model.pt; a missing one is a one-line error saying what to do."""
        from tailorml.models.cnn import require_model_file

        if given:
            return require_model_file(Path(given), option or "model")
        path = self.file("model.pt")
        if not path.is_file():
            instead = f" or pass {option}" if option else ""
            raise TailormlError(f"no model at {path}; train one first (`tailorml train`){instead}")
        return path


def _as_written(resolved: dict[str, Any], written: dict[str, Any]) -> dict[str, Any]:
    """`resolved` cut to the keys `written` holds, at every depth of its tables (an unset
    key, None, is never written: TOML has no null)."""
    kept = {}
    for name, value in resolved.items():
        if name not in written:
            if value is None:
                kept[name] = value
            continue
        inner = written[name]
        both_tables = isinstance(value, dict) and isinstance(inner, dict)
        kept[name] = _as_written(value, inner) if both_tables else value
    return kept
