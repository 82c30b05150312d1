"""Run directories: every run is a folder with its resolved config, environment, results.

`runs/<YYYYmmdd-HHMMSS>-<name>/` holds config.toml, environment.json, the result tables and
report.html. `run.json` records which steps finished (with the config fingerprint), so an
interrupted run resumes from its last finished step and a report can be re-rendered.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from tailorml.config import Config, load_config, to_toml
from tailorml.errors import TailormlError
from tailorml.io import atomic_write_json, atomic_write_text, fingerprint

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


class Run:
    """One run directory and its step bookkeeping."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, config: Config, runs_dir: str | Path | None = None) -> Run:
        base = Path(runs_dir or config.run.runs_dir)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = base / f"{stamp}-{config.run.name}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = base / f"{stamp}-{config.run.name}-{suffix}"
        path.mkdir(parents=True)
        run = cls(path)
        atomic_write_text(path / "config.toml", to_toml(config))
        atomic_write_json(path / "environment.json", environment())
        atomic_write_json(
            path / "run.json", {"fingerprint": fingerprint(config.to_dict()), "steps": {}}
        )
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

    def state(self) -> dict[str, Any]:
        return json.loads((self.path / "run.json").read_text())

    def done(self, step: str) -> bool:
        state = self.state()
        return state["steps"].get(step) == state["fingerprint"]

    def mark_done(self, step: str) -> None:
        state = self.state()
        state["steps"][step] = state["fingerprint"]
        atomic_write_json(self.path / "run.json", state)

    def file(self, name: str) -> Path:
        return self.path / name
