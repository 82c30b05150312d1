"""`tailorml certify`: how robust a run's model is to CGM sensor error, per individual.

For every individual's held-out test windows (evenly spaced, `robust.max_windows`): clean,
PGD and verified accuracy of the alert decision at ε, verified accuracy with each bound
method, and a verified-accuracy-vs-ε curve (`robust.sweep_windows` windows)
(`robust.individual`). Results are cached per individual (atomic JSON), so an interrupted
job resumes where it stopped; a change of settings starts the cache afresh. The tables and
certify.json are written from the result object (`CertifyResult`), which the CLI prints.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from tailorml.config import Config
from tailorml.io import (
    atomic_write_json,
    atomic_write_text,
    encode_component,
    fingerprint,
    sha256_file,
)
from tailorml.jobs.result import Reported, as_json
from tailorml.models.cnn import load_model
from tailorml.models.train import use_threads
from tailorml.policy import AlertPolicy
from tailorml.progress import SILENT, Reporter
from tailorml.robust.evaluate import evenly_spaced, size_metrics
from tailorml.robust.individual import BOUND_METHODS, individual_robustness
from tailorml.robust.report import reproduce_command
from tailorml.runs import Run


@dataclass
class CertifyResult(Reported):
    """A finished certification: per individual (robustness), the ε sweep, and the summary
    certify.json holds (means, worst individual, settings, the reproducing command)."""

    path: Path
    robustness: pd.DataFrame
    sweep: pd.DataFrame
    summary: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"kind": "certify", "out": str(self.path), **self.summary}

    def write(self) -> None:
        """robustness.csv, sweep.csv and certify.json into `path` (the report reads them)."""
        atomic_write_text(self.path / "robustness.csv", self.robustness.to_csv(index=False))
        atomic_write_text(self.path / "sweep.csv", self.sweep.to_csv(index=False))
        atomic_write_json(self.path / "certify.json", self.summary)


def output_dir(run: Run, eps: float, other_model_sha: str | None = None) -> Path:
    """RUN/certify-eps<ε>/ for the run's own model; another model (--model) gets its own
    folder, so certifying it never replaces the run model's results."""
    suffix = f"-{other_model_sha[:12]}" if other_model_sha else ""
    return run.path / f"certify-eps{eps:g}{suffix}"


def run(
    run_dir: str | Path,
    config: Config | None = None,
    model_path: str | Path | None = None,
    reporter: Reporter = SILENT,
) -> CertifyResult:
    """Certify the run's model (or `model_path`) on every individual; the result's folder
    holds robustness.csv, sweep.csv, certify.json and report.html."""
    from tailorml.data.prepared import prepare

    run = Run.open(run_dir)
    config = config or run.config()
    model_file = run.model_file(model_path)
    use_threads(config.train.threads)
    model = load_model(model_file)
    model_sha = sha256_file(model_file)
    prepared = prepare(config)
    windows, splits = prepared.windows, prepared.splits
    model.policy.require_same_input(
        AlertPolicy.from_config(config, windows.sample_minutes),
        str(model_file),
        f"the cohort of {run.path}",
    )
    out = output_dir(run, config.robust.eps, model_sha if model_path else None)
    settings = {
        "robust": config.robust.model_dump(mode="json"),
        "model_sha256": model_sha,
        "policy": model.policy.to_dict(),
    }
    key = fingerprint(settings)
    cache = out / "cache"
    if (out / "settings.json").is_file():
        previous = json.loads((out / "settings.json").read_text())
        if previous.get("fingerprint") != key:
            shutil.rmtree(cache, ignore_errors=True)
    atomic_write_json(out / "settings.json", settings | {"fingerprint": key})
    individuals = list(splits.parts)
    if prepared.cohort.synthetic:
        reporter.log(
            "cohort is SYNTHETIC (simulated); figures are not clinical evidence", style="yellow"
        )
    groups = {individual.id: individual.group for individual in prepared.cohort.individuals}

    def work(test) -> int:  # windows certified for one individual: the progress unit
        settings = config.robust
        return len(evenly_spaced(test, settings.max_windows)) + len(settings.eps_grid) * len(
            evenly_spaced(test, settings.sweep_windows)
        )

    total = sum(work(splits.parts[i]["test"]) for i in individuals)
    rows = []
    with reporter.task(f"certifying at ±{config.robust.eps:g} mg/dL", total=total) as task:
        for individual in individuals:
            target = cache / f"{encode_component(individual)}.json"
            test = splits.parts[individual]["test"]
            if target.is_file():
                row = json.loads(target.read_text())
                task.advance(work(test))
            else:
                task.describe(f"certifying {individual}")
                row = individual_robustness(config, model, windows, test, task)
                row |= {"individual": individual, "group": groups.get(individual, "")}
                atomic_write_json(target, row)
            rows.append(row)
    synthetic = prepared.cohort.synthetic
    command = reproduce_command(run.path, config.robust.model_dump(mode="json"), model_path)
    return write_outputs(out, config, rows, model, model_file, synthetic, command)


def write_outputs(
    out: Path,
    config: Config,
    rows: list[dict],
    model: torch.nn.Module,
    model_file: Path,
    synthetic: bool,
    command: str,
) -> CertifyResult:
    """robustness.csv, sweep.csv, certify.json (with the `command` that reproduces them)
    and report.html in `out`."""
    from tailorml.robust.report import render_certify_report

    robustness = pd.DataFrame([{k: v for k, v in r.items() if k != "sweep"} for r in rows])
    leading = ["individual", "group", "windows", "clean_acc", "pgd_acc", "verified_acc"]
    verified = [f"verified_{m}" for m in BOUND_METHODS if f"verified_{m}" in robustness]
    robustness = robustness[leading + verified]
    sweep = pd.DataFrame(
        [
            {"individual": r["individual"], "group": r["group"], **point}
            for r in rows
            for point in r["sweep"]
        ]
    )
    metrics = [c for c in robustness.columns if c.endswith("_acc") or c.startswith("verified_")]
    summary = {
        "synthetic": synthetic,
        "run_dir": str(out.parent),
        "eps": config.robust.eps,
        "relative_percent": config.robust.relative_percent,
        "method": config.robust.method,
        "sweep_method": config.robust.sweep_method,
        "model": str(model_file),
        "model_size": size_metrics(model),
        "individuals": len(robustness),
        "mean": {m: float(robustness[m].mean()) for m in metrics},
        "min": {m: float(robustness[m].min()) for m in metrics},
        "sweep_mean": sweep.groupby("eps")["verified_acc"].mean().to_dict(),
        "command": command,
    }
    result = CertifyResult(out, robustness, sweep, as_json(summary))
    result.write()
    render_certify_report(out)
    return result
