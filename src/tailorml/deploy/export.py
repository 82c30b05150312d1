"""`tailorml deploy export` and `tailorml deploy report`: a run's model on a microcontroller.

export: quantize the model (calibrated on general training windows of the run's cohort),
write the C, and climb the parity ladder on the held-out test windows — float vs int8
reference on every window of every individual (with the alert metrics side by side and
onnxruntime's int8 as an anchor), int8 reference vs host C on every window, host C vs the
emulated target on every test window of a few individuals — then measure the target's
budget. report: the budget of the exported C on every target profile (or the ones asked).
Both write `deploy.json` and `deploy.html` in the export directory.
"""

from __future__ import annotations

import json
import shlex
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from tailorml import __version__
from tailorml.data.prepared import Prepared, prepare
from tailorml.deploy.int8.c import HEADER_NAME, SOURCE_NAME, arena_bytes, save_c
from tailorml.deploy.int8.parity import (
    SIDE_BY_SIDE,
    Rung,
    compare_logits,
    decision_metrics,
    individuals_with,
    side_by_side,
)
from tailorml.deploy.int8.quantize import QuantizedModel, quantize
from tailorml.deploy.target.budget import measure_target
from tailorml.deploy.target.host import HostModel
from tailorml.deploy.target.mcu import PROFILES, TargetProfile, profile
from tailorml.errors import DeployError, TailormlError
from tailorml.io import (
    atomic_write,
    atomic_write_json,
    atomic_write_parquet,
    check_writable,
    sha256_file,
)
from tailorml.models.cnn import SmallCNN, count_parameters, load_model
from tailorml.models.train import use_threads
from tailorml.policy import AlertPolicy
from tailorml.progress import SILENT, Reporter
from tailorml.robust.evaluate import evenly_spaced
from tailorml.runs import Run

PART = "test"
CHECK_FILE = "check_windows.npz"
MARKER = "deploy.json"


def default_out(run: Path, target: TargetProfile, model_sha: str | None) -> Path:
    suffix = f"-{model_sha[:12]}" if model_sha else ""
    return Path(run) / f"deploy-{target.name}{suffix}"


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


def _read_marker(out: Path, what: str) -> dict:
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


def emulated_individuals(prepared: Prepared, count: int) -> list[str]:
    """`count` individuals spread evenly over the sorted ids (so every group shows up)."""
    people = sorted(individuals_with(prepared, PART))
    if count <= 0 or not people:
        return []
    picks = np.unique(np.linspace(0, len(people) - 1, min(count, len(people))).round())
    return [people[int(i)] for i in picks]


def export_run(
    run_dir: str | Path,
    target_name: str = "cortex-m4",
    out: str | Path | None = None,
    model_path: str | Path | None = None,
    calibration_windows: int = 4096,
    emulate: int = 3,
    force: bool = False,
    reporter: Reporter = SILENT,
) -> Path:
    """Export the run's model (or `model_path`) for `target_name`; returns the directory."""
    run = Run.open(run_dir)
    config = run.config()
    target = profile(target_name)
    model_file = Path(model_path) if model_path else run.file("model.pt")
    if not model_file.is_file():
        raise TailormlError(
            f"no model at {model_file}; train one first (`tailorml train`) or pass --model"
        )
    if calibration_windows < 1:
        raise DeployError("--calibration-windows must be at least 1")
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
    calibration = prepared.windows.x[evenly_spaced(general, calibration_windows)]
    reporter.log(f"quantizing on {len(calibration)} general training windows")
    quantized = quantize(model, calibration)
    out.mkdir(parents=True, exist_ok=True)
    save_c(quantized, out)
    header, source = (out / HEADER_NAME).read_text(), (out / SOURCE_NAME).read_text()

    float_rung, table, logits = side_by_side(model, quantized, prepared, PART, reporter)
    table = _with_onnx_anchor(model, calibration, prepared, table, out, reporter)
    atomic_write_parquet(out / "parity.parquet", table)
    table.to_csv(out / "parity.csv", index=False)

    test = np.concatenate([prepared.splits.of(i, PART) for i in individuals_with(prepared, PART)])
    readings = quantized.readings(prepared.windows.x[test])
    expected = np.concatenate([logits[i] for i in individuals_with(prepared, PART)])
    with tempfile.TemporaryDirectory(prefix="tailorml-host-") as scratch:
        host_logits, host_classes = HostModel(
            header, source, len(model.policy.classes), Path(scratch)
        ).predict(readings)
    host_rung = compare_logits(
        "int8 reference -> host C",
        expected,
        host_logits,
        quantized.decide(expected),
        host_classes,
        float_rung.individuals,
    )
    if not host_rung.identical_logits:
        raise DeployError(
            "the host build of the generated C computed other logits than the integer "
            "reference; the export is not trustworthy — please report this"
        )
    check = _check_windows(prepared, quantized, emulate)
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
        "model_facts": _facts(model, quantized),
        "parity": [float_rung.to_dict(), host_rung.to_dict()],
        "anchor": _anchor_summary(table),
        "emulated_individuals": [str(i) for i in check["individuals"]],
        "budgets": {},
        "command": _command(run.path, target, out, model_path, calibration_windows, emulate),
    }
    atomic_write_json(out / MARKER, summary)
    emulated_rung, budget = _on_target(header, source, target, check, out, reporter)
    summary["parity"].append(emulated_rung.to_dict())
    summary["budgets"][target.name] = budget
    atomic_write_json(out / MARKER, summary)
    from tailorml.deploy.report import render_deploy_report

    render_deploy_report(out)
    return out


def report_export(
    out: str | Path, targets: list[str] | None = None, reporter: Reporter = SILENT
) -> Path:
    """Budgets of the exported C in `out` on `targets` (default: every profile)."""
    out = Path(out)
    marker = out / MARKER
    summary = _read_marker(out, "")
    absent = [k for k in ("target", "parity", "budgets", "model_sha256") if k not in summary]
    if absent:  # checked now, not after minutes of emulation
        raise DeployError(
            f"{marker} lacks {', '.join(absent)}; run `tailorml deploy export` into {out} again"
        )
    needed = (HEADER_NAME, SOURCE_NAME, CHECK_FILE)
    missing = [name for name in needed if not (out / name).is_file()]
    if missing:
        raise DeployError(
            f"{out} is an incomplete export ({', '.join(missing)} missing); "
            "run `tailorml deploy export` again"
        )
    header, source = (out / HEADER_NAME).read_text(), (out / SOURCE_NAME).read_text()
    check = dict(np.load(out / CHECK_FILE))
    for name in targets or list(PROFILES):
        target = profile(name)
        rung, budget = _on_target(header, source, target, check, out, reporter)
        summary["budgets"][target.name] = budget
        if target.name == summary["target"]:
            summary["parity"] = [r for r in summary["parity"] if not r["name"].startswith("host C")]
            summary["parity"].append(rung.to_dict())
        atomic_write_json(marker, summary)
    from tailorml.deploy.report import render_deploy_report

    render_deploy_report(out)
    return out


def _on_target(
    header: str, source: str, target: TargetProfile, check: dict, out: Path, reporter: Reporter
) -> tuple[Rung, dict]:
    readings, expected = check["readings"], check["logits"]
    with reporter.task(f"emulating {target.cpu} ({target.name})", total=len(readings)) as task:
        budget = measure_target(
            header, source, target, readings, expected, out / "build" / target.name, task.advance
        )
    people = len(check["individuals"])
    rung = Rung(
        name=f"host C -> emulated {target.cpu}",
        windows=budget["windows_run"],
        individuals=people,
        decision_agreement=float("nan"),
        identical_logits=budget["windows_identical"] == budget["windows_run"],
        max_logit_difference=float("nan"),
    )
    if not rung.identical_logits:
        raise DeployError(
            f"the {target.cpu} build computed other logits than the reference on "
            f"{budget['windows_run'] - budget['windows_identical']} windows; "
            "the export is not trustworthy — please report this"
        )
    rung.decision_agreement = 1.0
    rung.max_logit_difference = 0.0
    return rung, budget


def _save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:  # a handle: savez would append .npz to a temp name
        np.savez_compressed(handle, **arrays)


def _check_windows(prepared: Prepared, quantized: QuantizedModel, emulate: int) -> dict:
    """Every test window of the emulated individuals, with the reference's logits."""
    people = emulated_individuals(prepared, emulate)
    if people:
        indices = np.concatenate([prepared.splits.of(i, PART) for i in people])
    else:  # still run one window, for the budget
        indices = prepared.splits.pooled(PART)[:1]
    windows = prepared.windows.x[indices]
    logits = quantized.logits(windows)
    return {
        "readings": quantized.readings(windows),
        "logits": logits,
        "classes": quantized.decide(logits),
        "individuals": np.array(people, dtype=str),
    }


def _with_onnx_anchor(model, calibration, prepared, table, out: Path, reporter: Reporter):
    """Add onnxruntime int8's alert metrics per individual (the accuracy anchor)."""
    from tailorml.deploy.int8.onnx_int8 import export_onnx, onnx_proba, quantize_onnx_int8

    policy, windows = model.policy, prepared.windows
    folder = out / "onnx"
    folder.mkdir(exist_ok=True)
    reporter.log("onnxruntime int8 anchor: exporting and quantizing")
    export_onnx(model, folder / "model.onnx")
    quantize_onnx_int8(folder / "model.onnx", calibration, folder / "model_int8.onnx")
    rows = []
    for individual in table["individual"]:
        indices = prepared.splits.of(individual, PART)
        decided = policy.decide(onnx_proba(folder / "model_int8.onnx", windows.x[indices]))
        metrics = decision_metrics(policy, prepared, individual, PART, decided)
        rows.append(
            {f"{key}_onnxruntime": metrics[key] for key in SIDE_BY_SIDE}
            | {"decided_hypo_onnxruntime": int((decided == policy.alert_index).sum())}
        )
    return pd.concat([table, pd.DataFrame(rows)], axis=1)


def _anchor_summary(table) -> dict:
    """Means over individuals of the side-by-side metrics (NaN-free ones only)."""
    summary = {}
    for key in SIDE_BY_SIDE:
        for label in ("float", "int8", "onnxruntime"):
            column = table[f"{key}_{label}"].astype(float)
            finite = column[np.isfinite(column)]
            summary[f"{key}_{label}"] = float(finite.mean()) if len(finite) else None
    return summary


def _facts(model: SmallCNN, quantized: QuantizedModel) -> dict:
    return {
        "parameters": count_parameters(model),
        "macs": quantized.n_macs(),
        "weight_bytes": quantized.n_weight_bytes(),
        "arena_bytes": arena_bytes(quantized),
        "logit_scale": quantized.logit_scale,
        "layers": [
            {
                "name": layer.name,
                "kind": layer.kind,
                "outputs": int(layer.weight.shape[0]),
                "kernel": layer.kernel,
                "pool": layer.pool,
                "input_scale": layer.input_scale,
                "output_scale": layer.output_scale,
                "output_zero_point": layer.output_zero_point,
                "output_bits": layer.output_bits,
            }
            for layer in quantized.layers
        ],
        "input_scale_mgdl": [float(s) for s in quantized.input.scale],
        "input_centre_mgdl": [int(c) for c in quantized.input.centre],
    }


def _command(run, target, out, model_path, calibration_windows, emulate) -> str:
    parts = ["tailorml", "deploy", "export", "--run", str(Path(run).resolve())]
    parts += ["--target", target.name, "--out", str(Path(out).resolve())]
    if model_path is not None:
        parts += ["--model", str(Path(model_path).resolve())]
    parts += ["--calibration-windows", str(calibration_windows), "--emulate", str(emulate)]
    return shlex.join(parts)
