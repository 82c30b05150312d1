"""What every job's result object shares: its figures in the form its JSON files hold."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailorml.io import finite_or_null
from tailorml.runs import Run


def as_json(data: Any) -> Any:
    """`data` as a job's JSON file holds it (`io.atomic_write_json`): non-finite numbers
    null, other objects as strings, plain dicts, lists and numbers. A result object keeps
    this form, so what the CLI prints from it is what the file says."""
    return json.loads(json.dumps(finite_or_null(data), default=str, allow_nan=False))


@dataclass
class MetricsResult:
    """A finished train/demo or evaluate run: its directory and metrics.json (data summary,
    per-individual summary, alerting) as the job wrote it."""

    run: Run
    metrics: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def report(self) -> Path:
        return self.run.file("report.html")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.run.kind, "run_dir": str(self.path), "metrics": self.metrics}
