"""`tailorml deploy simulate`: a device with guarded on-device learning lives through one
person's data, next to the predefined model and a cloud-personalized one
(`tailorml.deploy.learner.simulate` has the steps; docs/ondevice.md the device).

The device is the generated C (model + learner) of the run's model quantized as `deploy
export` quantizes it (`deploy.calibration_windows`), built for this machine; with
`deploy.simulate.emulate` the same life also runs on the cross-compiled firmware of
`deploy.target` in the emulator. Returns a `SimulateResult` and writes simulate.json (its
figures, the `[deploy]` settings among them) and simulate.html from it; the CLI prints the
same object.
"""

from __future__ import annotations

import json
import shlex
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tailorml import __version__
from tailorml.config import Config
from tailorml.deploy.int8.quantize import quantize
from tailorml.deploy.learner.daily import MINUTES_PER_DAY
from tailorml.deploy.learner.host import HostLearner
from tailorml.deploy.learner.ondevice import (
    STRATUM_NAMES,
    LearnerSettings,
    check_learnable,
    check_policy,
    horizon_readings,
    memory_layout,
)
from tailorml.deploy.learner.simulate import (
    cloud_facts,
    cloud_model,
    cost_facts,
    day_rows,
    decisions,
    live_emulated,
    live_on_host,
    memory_facts,
    period_summary,
    readings_of,
    update_row,
)
from tailorml.deploy.learner.simulate_report import render_simulate_report
from tailorml.deploy.learner.traces import dangerous_traces
from tailorml.deploy.target.mcu import TargetProfile, profile
from tailorml.errors import DeployError
from tailorml.io import atomic_write_json, encode_component, sha256_file
from tailorml.jobs.result import Reported, as_json
from tailorml.models.train import use_threads
from tailorml.progress import SILENT, Reporter
from tailorml.robust.evaluate import evenly_spaced
from tailorml.runs import Run

MARKER = "simulate.json"


@dataclass
class SimulateResult(Reported):
    """A simulation's folder and its summary (simulate.json): the person, the learner's
    settings, the days lived (one row per day: each model's alert figures, the head in use,
    that night's update), every update attempt, the comparison on the test part, memory and
    cost, and the `[deploy]` settings and command it was made with."""

    path: Path
    summary: dict[str, Any]

    @property
    def report(self) -> Path:
        return self.path / "simulate.html"

    @property
    def synthetic(self) -> bool:
        return bool(self.summary.get("synthetic"))

    def to_json(self) -> dict[str, Any]:
        return as_json({"kind": "deploy simulate", "out": str(self.path), **self.summary})

    def write(self) -> None:
        """simulate.json from the summary, then simulate.html from the result."""
        atomic_write_json(self.path / MARKER, self.summary)
        render_simulate_report(self.path, self.summary)


def rerender(out: str | Path) -> Path:
    """simulate.html of a simulation folder drawn again from its simulate.json
    (`tailorml report`)."""
    out = Path(out)
    try:
        summary = json.loads((out / MARKER).read_text())
    except (OSError, ValueError) as error:
        raise DeployError(
            f"{out / MARKER} cannot be read ({type(error).__name__}); run `tailorml deploy "
            "simulate` into a new folder"
        ) from None
    if not isinstance(summary, dict) or "days" not in summary:
        raise DeployError(f"{out / MARKER} is no simulation summary (no days)")
    return render_simulate_report(out, summary)


def default_out(run: Path, target: TargetProfile, individual: str) -> Path:
    """RUN/simulate-<target>-<id>, the id escaped: ids come from data files, never trusted
    as path parts."""
    return Path(run) / f"simulate-{target.name}-{encode_component(individual)}"


def settings_of(config: Config) -> dict[str, Any]:
    """The `[deploy]` settings a simulation is made with (simulate.json's `deploy`)."""
    return config.deploy.model_dump(mode="json", exclude={"export"})


def run(
    run_dir: str | Path,
    individual: str,
    config: Config | None = None,
    out: str | Path | None = None,
    reporter: Reporter = SILENT,
) -> SimulateResult:
    """Simulate `individual`'s device for the run's model into `out` (default
    RUN/simulate-<target>-<id>). `config`: the run's own, with the command's `[deploy]`
    options; the on-device learner's settings are its `[deploy.learner]`."""
    run = Run.open(run_dir)
    config = config or run.config()
    settings = LearnerSettings.from_config(config.deploy.learner)
    options = config.deploy.simulate
    target = profile(config.deploy.target)
    model_file = run.model_file(option=None)
    use_threads(config.train.threads)
    from tailorml.models.cnn import load_model
    from tailorml.personalize.dataset import from_glucose

    model = load_model(model_file)
    if model.policy is None or not model.policy.is_alert:
        raise DeployError(f"{model_file} has no alert policy; the device needs an alert model")
    check_policy(model.policy)
    data = from_glucose(config, config.experiment.general_stride)
    prepared = data.glucose
    if individual not in prepared.cohort.ids:
        raise DeployError(
            f"unknown individual {individual!r}; valid: {', '.join(prepared.cohort.ids)}"
        )
    out = Path(out) if out else default_out(run.path, target, individual)
    general = prepared.splits.pooled("train")
    calibration = prepared.windows.x[evenly_spaced(general, config.deploy.calibration_windows)]
    reporter.log(f"quantizing on {len(calibration)} general training windows")
    quantized = quantize(model, calibration)
    check_learnable(quantized)
    traces = dangerous_traces(quantized)
    if not len(traces):
        reporter.log("the factory model alerts on none of the dangerous traces", style="yellow")
    _prepare_out(out, individual)

    per_day = MINUTES_PER_DAY // quantized.policy.sample_minutes
    readings = readings_of(prepared, individual)
    available = len(readings) // per_day
    lived_days = min(options.days or available, available)
    if lived_days < 1:
        raise DeployError(f"{individual} has less than one day of readings")
    readings = readings[: lived_days * per_day]

    with tempfile.TemporaryDirectory(prefix="tailorml-learner-") as scratch:
        host = HostLearner(quantized, settings, Path(scratch) / "host", traces)
        life = live_on_host(host, readings, per_day, reporter)
        state_bytes = host.state_bytes()
    emulated = None
    from tailorml.deploy.learner.mcu import build_learner_firmware

    firmware = build_learner_firmware(quantized, settings, traces, target, out / "build")
    if options.emulate:
        emulated = live_emulated(firmware, readings, per_day, life, reporter)

    cloud = None
    if options.cloud_iterations:
        iterations = options.cloud_iterations
        with reporter.task(f"cloud personalization: TL(n={iterations})", total=1) as task:
            cloud = cloud_model(config, data, individual, model, iterations)
            task.advance()
    decided = decisions(prepared, individual, quantized, life, cloud, len(readings))
    layout = memory_layout(
        settings,
        int(quantized.layers[-1].weight.shape[1]),
        len(quantized.policy.classes),
        quantized.window,
        horizon_readings(quantized),
        len(traces),
    )
    if layout.ram != state_bytes:
        raise DeployError(
            f"the learner state is {state_bytes} bytes in C but {layout.ram} by the stated "
            "layout; please report this"
        )
    summary = {
        "tailorml": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": str(run.path.resolve()),
        "model": str(model_file.resolve()),
        "model_sha256": sha256_file(model_file),
        "individual": individual,
        "group": next((p.group for p in prepared.cohort.individuals if p.id == individual), None),
        "synthetic": prepared.cohort.synthetic,
        "policy": quantized.policy.to_dict(),
        "target": target.to_dict(),
        "settings": settings.to_dict(),
        "deploy": settings_of(config),
        "strata": list(STRATUM_NAMES),
        "days_lived": lived_days,
        "days_available": available,
        "traces": {"kept": traces.names, "dropped": traces.dropped},
        "memory": memory_facts(layout, state_bytes, settings, firmware, target),
        "cost": cost_facts(life, emulated, target),
        "cloud": cloud_facts(prepared, individual, options.cloud_iterations, config),
        "updates": [update_row(s, day, traces.names, per_day) for day, s in life["updates"]],
        "days": day_rows(prepared, individual, quantized, decided, life, lived_days, per_day),
        "summary": period_summary(prepared, individual, quantized, decided, len(readings)),
        "emulated": emulated and {k: v for k, v in emulated.items() if k != "calls"},
        "command": _command(run.path, individual, target, out, config),
    }
    result = SimulateResult(out, as_json(summary))
    result.write()
    return result


def _prepare_out(out: Path, individual: str) -> None:
    """Never write into a folder that is not a simulation of the same person."""
    if out.exists() and not out.is_dir():
        raise DeployError(f"--out {out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()):
        marker = out / MARKER
        try:
            previous = json.loads(marker.read_text()).get("individual")
        except (OSError, ValueError, AttributeError):
            raise DeployError(
                f"--out {out} is a non-empty folder that holds no tailorml simulation "
                f"({MARKER} missing or unreadable); choose a new or empty directory"
            ) from None
        if previous != individual:
            raise DeployError(
                f"--out {out} holds the simulation of {previous}; choose another directory"
            )
    out.mkdir(parents=True, exist_ok=True)


def _command(run: Path, individual: str, target: TargetProfile, out: Path, config) -> str:
    options = config.deploy.simulate
    parts = ["tailorml", "deploy", "simulate", "--run", str(Path(run).resolve())]
    parts += ["--individual", individual, "--target", target.name]
    if options.days is not None:
        parts += ["--days", str(options.days)]
    parts += ["--out", str(Path(out).resolve())]
    parts += ["--cloud-iterations", str(options.cloud_iterations)]
    if options.emulate:
        parts.append("--emulate")
    return shlex.join(parts)
