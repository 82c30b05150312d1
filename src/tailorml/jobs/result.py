"""What every job's result object shares: its figures in the form its JSON files hold."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailorml.io import finite_or_null
from tailorml.runs import Run


def as_json(data: Any) -> Any:
    """`data` as a job's JSON file holds it (`io.atomic_write_json`): keys sorted,
    non-finite numbers null, other objects as strings, plain dicts, lists and numbers. A
    result object keeps this form, so what the CLI prints from it is what the file says, in
    the file's order."""
    text = json.dumps(finite_or_null(data), sort_keys=True, default=str, allow_nan=False)
    return json.loads(text)


class Reported:
    """A result whose folder (`path`) holds its report.html."""

    path: Path

    @property
    def report(self) -> Path:
        return self.path / "report.html"


class InRun(Reported):
    """A result of a job that keeps a run directory (`run`: kind, steps, resume)."""

    run: Run

    @property
    def path(self) -> Path:
        return self.run.path


@dataclass
class MetricsResult(InRun):
    """A finished train/demo or evaluate run: its directory and metrics.json (data summary,
    per-individual summary, alerting) as the job wrote it."""

    run: Run
    metrics: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.run.kind, "run_dir": str(self.path), "metrics": self.metrics}
