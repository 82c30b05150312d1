"""`tailorml deploy export` and `tailorml deploy report`: a run's model on a microcontroller.

export: quantize the model (calibrated on `deploy.calibration_windows` general training
windows of the run's cohort), write the C, and climb the parity ladder on the held-out test
windows — float vs int8 reference on every window of every individual (with the alert
metrics side by side and onnxruntime's int8 as an anchor), int8 reference vs host C on every
window, host C vs the emulated `deploy.target` on every test window of
`deploy.export.emulate` individuals — then measure the target's budget. report: the budget
of the exported C on every target profile (or the ones asked).

Both return a `DeployExportResult` and write deploy.json (the result's figures, the
`[deploy]` settings they were made with among them) and deploy.html in the export
directory from it; the CLI prints the same object.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tailorml import __version__
from tailorml.config import Config
from tailorml.data.prepared import prepare
from tailorml.deploy.int8.c import HEADER_NAME, SOURCE_NAME, model_facts, save_c
from tailorml.deploy.int8.parity import (
    anchor_summary,
    check_windows,
    individuals_with,
    side_by_side,
    with_onnx_anchor,
)
from tailorml.deploy.int8.quantize import quantize
from tailorml.deploy.report import render_deploy_report
from tailorml.deploy.target.budget import emulated_rung
from tailorml.deploy.target.host import host_rung
from tailorml.deploy.target.mcu import PROFILES, TargetProfile, profile
from tailorml.errors import DeployError
from tailorml.io import (
    atomic_write,
    atomic_write_json,
    atomic_write_parquet,
    check_writable,
    sha256_file,
)
from tailorml.jobs.result import Reported, as_json
from tailorml.models.cnn import load_model
from tailorml.models.train import use_threads
from tailorml.policy import AlertPolicy
from tailorml.progress import SILENT, Reporter
from tailorml.robust.evaluate import evenly_spaced
from tailorml.runs import Run

PART = "test"
CHECK_FILE = "check_windows.npz"
MARKER = "deploy.json"
PARITY_FILE = "parity.parquet"


@dataclass
class DeployExportResult(Reported):
    """An export directory: its summary (deploy.json: model facts, parity ladder, anchor,
    budgets per target, the `[deploy]` settings and the reproducing command) and the parity
    table (one row per individual: float, int8 and onnxruntime int8 side by side)."""

    path: Path
    summary: dict[str, Any]
    parity: pd.DataFrame

    @property
    def report(self) -> Path:
        return self.path / "deploy.html"

    @property
    def synthetic(self) -> bool:
        return bool(self.summary.get("synthetic"))

    def to_json(self) -> dict[str, Any]:
        """deploy.json's figures, the folder the export is in now (`out`: deploy.json's is
        where it was made) and the parity table's rows (`per_individual`)."""
        return as_json(
            self.summary
            | {"kind": "deploy export", "out": str(self.path)}
            | {"per_individual": self.parity.to_dict("records")}
        )

    def write(self) -> None:
        """deploy.json from the summary, then deploy.html from the result."""
        atomic_write_json(self.path / MARKER, self.summary)
        render_deploy_report(self.path, self.summary, self.parity)


def default_out(run: Path, target: TargetProfile, model_sha: str | None) -> Path:
    suffix = f"-{model_sha[:12]}" if model_sha else ""
    return Path(run) / f"deploy-{target.name}{suffix}"


def settings_of(config: Config) -> dict[str, Any]:
    """The `[deploy]` settings an export is made with (deploy.json's `deploy`)."""
    return config.deploy.model_dump(mode="json", exclude={"simulate", "learner"})


def run(
    run_dir: str | Path,
    config: Config | None = None,
    out: str | Path | None = None,
    model_path: str | Path | None = None,
    force: bool = False,
    reporter: Reporter = SILENT,
) -> DeployExportResult:
    """Export the run's model (or `model_path`) for `deploy.target` into `out` (default
    RUN/deploy-<target>[-<model sha256[:12]>]). `config`: the run's own, with the command's
    `[deploy]` options."""
    run = Run.open(run_dir)
    config = config or run.config()
    settings = config.deploy
    target = profile(settings.target)
    model_file = run.model_file(model_path)
    use_threads(config.train.threads)
    model = load_model(model_file)
    model_sha = sha256_file(model_file)
    out = Path(out) if out else default_out(run.path, target, model_sha if model_path else None)
    _check_out(out, model_sha, force)
    prepared = prepare(config)
    model.policy.require_same_input(
        AlertPolicy.from_config(config, prepared.windows.sample_minutes),
        str(model_file),
        f"the cohort of {run.path}",
    )
    general = prepared.splits.pooled("train")
    calibration = prepared.windows.x[evenly_spaced(general, settings.calibration_windows)]
    reporter.log(f"quantizing on {len(calibration)} general training windows")
    quantized = quantize(model, calibration)
    out.mkdir(parents=True, exist_ok=True)
    save_c(quantized, out)
    header, source = (out / HEADER_NAME).read_text(), (out / SOURCE_NAME).read_text()

    float_rung, table, logits = side_by_side(model, quantized, prepared, PART, reporter)
    table = with_onnx_anchor(model, calibration, prepared, table, out / "onnx", PART, reporter)
    atomic_write_parquet(out / PARITY_FILE, table)
    table.to_csv(out / "parity.csv", index=False)

    people = individuals_with(prepared, PART)
    test = np.concatenate([prepared.splits.of(i, PART) for i in people])
    expected = np.concatenate([logits[i] for i in people])
    middle = host_rung(
        header,
        source,
        len(model.policy.classes),
        quantized.readings(prepared.windows.x[test]),
        expected,
        quantized.decide(expected),
        float_rung.individuals,
    )
    check = check_windows(prepared, quantized, settings.export.emulate, PART)
    atomic_write(out / CHECK_FILE, lambda path: _save_arrays(path, check))
    summary = {
        "tailorml": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": str(run.path.resolve()),
        "out": str(out.resolve()),
        "model": str(model_file.resolve()),
        "model_sha256": model_sha,
        "synthetic": prepared.cohort.synthetic,
        "policy": model.policy.to_dict(),
        "target": target.name,
        "calibration": {
            "windows": len(calibration),
            "from": f"the training parts of {len(prepared.cohort.ids)} individuals (D_G)",
        },
        "model_facts": model_facts(model, quantized),
        "parity": [float_rung.to_dict(), middle.to_dict()],
        "anchor": anchor_summary(table),
        "emulated_individuals": [str(i) for i in check["individuals"]],
        "budgets": {},
        "deploy": settings_of(config),
        "command": _command(run.path, target, out, model_path, config),
    }
    # marked ours before minutes of emulation: a rerun into `out` recognises the export
    atomic_write_json(out / MARKER, summary)
    last, budget = emulated_rung(
        header, source, target, check, out / "build" / target.name, reporter
    )
    summary["parity"].append(last.to_dict())
    summary["budgets"][target.name] = budget
    result = DeployExportResult(out, as_json(summary), table)
    result.write()
    return result


def report(
    out: str | Path, targets: list[str] | None = None, reporter: Reporter = SILENT
) -> DeployExportResult:
    """Budgets of the exported C in `out` on `targets` (default: every profile), added to its
    deploy.json; the export's own target also renews the ladder's emulated rung."""
    out = Path(out)
    summary = _read_marker(out, "")
    absent = [k for k in ("target", "parity", "budgets", "model_sha256") if k not in summary]
    if absent:  # checked now, not after minutes of emulation
        raise DeployError(
            f"{out / MARKER} lacks {', '.join(absent)}; run `tailorml deploy export` into "
            f"{out} again"
        )
    needed = (HEADER_NAME, SOURCE_NAME, CHECK_FILE, PARITY_FILE)
    missing = [name for name in needed if not (out / name).is_file()]
    if missing:
        raise DeployError(
            f"{out} is an incomplete export ({', '.join(missing)} missing); "
            "run `tailorml deploy export` again"
        )
    header, source = (out / HEADER_NAME).read_text(), (out / SOURCE_NAME).read_text()
    check = dict(np.load(out / CHECK_FILE))
    table = pd.read_parquet(out / PARITY_FILE)
    for name in targets or list(PROFILES):
        target = profile(name)
        rung, budget = emulated_rung(
            header, source, target, check, out / "build" / target.name, reporter
        )
        summary["budgets"][target.name] = budget
        if target.name == summary["target"]:
            summary["parity"] = [r for r in summary["parity"] if not r["name"].startswith("host C")]
            summary["parity"].append(rung.to_dict())
        atomic_write_json(out / MARKER, summary)  # each target's budget kept as it comes
    result = DeployExportResult(out, as_json(summary), table)
    result.write()
    return result


def _check_out(out: Path, model_sha: str, force: bool) -> None:
    """Never write into a folder that is not ours, nor replace another model's export."""
    if out.exists() and not out.is_dir():
        raise DeployError(f"--out {out} is a file; give a directory")
    check_writable(out, "--out")  # now, not after minutes of quantizing
    if out.is_dir() and any(out.iterdir()):
        previous = _read_marker(out, "--out").get("model_sha256")
        if previous != model_sha and not force:
            raise DeployError(
                f"--out {out} holds the export of another model ({str(previous)[:12]}); "
                "choose another directory or pass --force to replace it"
            )


def rerender(out: str | Path) -> Path:
    """deploy.html of an export drawn again from its deploy.json and parity table
    (`tailorml report`; `deploy report` also re-measures the budgets)."""
    out = Path(out)
    summary = _read_marker(out, "")
    if not (out / PARITY_FILE).is_file():
        raise DeployError(
            f"{out} is an incomplete export ({PARITY_FILE} missing); run `tailorml deploy "
            "export` again"
        )
    return render_deploy_report(out, summary, pd.read_parquet(out / PARITY_FILE))


def _read_marker(out: Path, what: str) -> dict:
    """deploy.json of an export directory: what `deploy report` starts from, and how a rerun
    knows the folder is an export."""
    marker = out / MARKER
    try:
        summary = json.loads(marker.read_text())
    except (OSError, ValueError):
        summary = None
    if not isinstance(summary, dict):
        raise DeployError(
            f"{what} {out} holds no tailorml export ({MARKER} missing or unreadable); "
            "choose a new or empty directory, or run `tailorml deploy export` into it"
        )
    return summary


def _save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:  # a handle: savez would append .npz to a temp name
        np.savez_compressed(handle, **arrays)


def _command(run: Path, target: TargetProfile, out: Path, model_path, config: Config) -> str:
    settings = config.deploy
    parts = ["tailorml", "deploy", "export", "--run", str(Path(run).resolve())]
    parts += ["--target", target.name, "--out", str(Path(out).resolve())]
    if model_path is not None:
        parts += ["--model", str(Path(model_path).resolve())]
    parts += ["--calibration-windows", str(settings.calibration_windows)]
    parts += ["--emulate", str(settings.export.emulate)]
    return shlex.join(parts)
