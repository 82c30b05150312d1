"""`tailorml deploy simulate`: a device lives through one person's data with guarded
on-device learning, next to the predefined model and a cloud-personalized one.

The device is the generated C (model + learner), built for this machine; with `emulate` the
same life also runs on the cross-compiled firmware in the emulator and must match the host
build decision for decision and status for status. Every 5 minutes it predicts with its
active head and labels the window of 30 minutes ago; at the end of every day it tries one
update through its gates. Alongside, on the same windows:
- the predefined model: the exported int8 model (scenario 3, what the device starts with);
- the cloud-personalized model (scenario 2): the run's float model fine-tuned on the
  person's D_I (the training part) with transfer learning, `tailorml.personalize`'s TL(n),
  judged only after its training part.
The comparison that counts is on the person's test part, where none of the three has seen a
label; the day-by-day figures show how the device got there.
"""

from __future__ import annotations

import copy
import json
import shlex
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tailorml import __version__
from tailorml.data.prepared import Prepared
from tailorml.deploy.int8.quantize import quantize
from tailorml.deploy.learner.daily import MINUTES_PER_DAY, Lived, day_metrics
from tailorml.deploy.learner.host import HostLearner
from tailorml.deploy.learner.ondevice import (
    MISSING,
    SLOT_FACTORY,
    STRATUM_NAMES,
    LearnerSettings,
    UpdateStatus,
    check_learnable,
    check_policy,
    horizon_readings,
    memory_layout,
)
from tailorml.deploy.learner.traces import dangerous_traces
from tailorml.deploy.target.mcu import TargetProfile, profile
from tailorml.errors import DeployError, TailormlError
from tailorml.io import atomic_write_json, encode_component, sha256_file
from tailorml.models.train import use_threads
from tailorml.progress import SILENT, Reporter
from tailorml.robust.evaluate import evenly_spaced
from tailorml.runs import Run

MARKER = "simulate.json"
CALIBRATION_WINDOWS = 4096  # as `deploy export`: the same int8 model
MODELS = ("device", "predefined", "cloud")
SUMMARY_KEYS = (
    "hypo_events",
    "hypo_sensitivity",
    "hypo_sensitivity_early",
    "false_alerts_per_day",
    "alerts",
    "median_lead_minutes",
)


def default_out(run: Path, target: TargetProfile, individual: str) -> Path:
    """RUN/simulate-<target>-<id>, the id escaped: ids come from data files, never trusted
    as path parts."""
    return Path(run) / f"simulate-{target.name}-{encode_component(individual)}"


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


def readings_of(prepared: Prepared, individual: str) -> np.ndarray:
    """The person's CGM as the sensor hands it to the device: int16 mg/dL, gaps MISSING."""
    cgm = prepared.cohort.of(individual)["cgm"].to_numpy(dtype=np.float64)
    return np.where(np.isnan(cgm), MISSING, np.rint(np.nan_to_num(cgm))).astype(np.int16)


def simulate_run(
    run_dir: str | Path,
    individual: str,
    target_name: str = "cortex-m4",
    days: int | None = None,
    out: str | Path | None = None,
    emulate: bool = False,
    cloud_iterations: int = 300,
    settings: LearnerSettings | None = None,
    reporter: Reporter = SILENT,
) -> Path:
    """Simulate `individual`'s device for the run's model; returns the output directory."""
    settings = settings or LearnerSettings()
    run = Run.open(run_dir)
    config = run.config()
    target = profile(target_name)
    if days is not None and days < 1:
        raise DeployError("--days must be at least 1")
    if cloud_iterations < 0:
        raise DeployError("--cloud-iterations must be >= 0 (0: no cloud model)")
    model_file = run.file("model.pt")
    if not model_file.is_file():
        raise TailormlError(f"no model at {model_file}; train one first (`tailorml train`)")
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
    calibration = prepared.windows.x[evenly_spaced(general, CALIBRATION_WINDOWS)]
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
    lived_days = min(days or available, available)
    if lived_days < 1:
        raise DeployError(f"{individual} has less than one day of readings")
    readings = readings[: lived_days * per_day]

    with tempfile.TemporaryDirectory(prefix="tailorml-learner-") as scratch:
        host = HostLearner(quantized, settings, Path(scratch) / "host", traces)
        life = _live_on_host(host, readings, per_day, reporter)
        state_bytes = host.state_bytes()
    emulated = None
    from tailorml.deploy.learner.mcu import build_learner_firmware

    firmware = build_learner_firmware(quantized, settings, traces, target, out / "build")
    if emulate:
        emulated = _live_emulated(firmware, readings, per_day, life, reporter)

    cloud_model = None
    if cloud_iterations:
        with reporter.task(f"cloud personalization: TL(n={cloud_iterations})", total=1) as task:
            cloud_model = _cloud_model(config, data, individual, model, cloud_iterations)
            task.advance()
    decisions = _decisions(prepared, individual, quantized, life, cloud_model, len(readings))
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
        "strata": list(STRATUM_NAMES),
        "days_lived": lived_days,
        "days_available": available,
        "traces": {"kept": traces.names, "dropped": traces.dropped},
        "memory": _memory(layout, state_bytes, settings, firmware, target),
        "cost": _cost(life, emulated, target),
        "cloud": _cloud_facts(prepared, individual, cloud_iterations, config),
        "updates": [_update_row(s, day, traces.names, per_day) for day, s in life["updates"]],
        "days": _days(prepared, individual, quantized, decisions, life, lived_days, per_day),
        "summary": _summary(prepared, individual, quantized, decisions, len(readings)),
        "emulated": emulated and {k: v for k, v in emulated.items() if k != "calls"},
        "command": _command(run.path, individual, target, days, out, emulate, cloud_iterations),
    }
    atomic_write_json(out / MARKER, summary)
    from tailorml.deploy.learner.simulate_report import render_simulate_report

    render_simulate_report(out)
    return out


# -- living -------------------------------------------------------------------------------


def _live_on_host(
    host: HostLearner, readings: np.ndarray, per_day: int, reporter: Reporter
) -> dict:
    """Day by day on the host build: decisions, the slot each used, every update (timed)."""
    classes, slots, updates, seconds = [], [], [], []
    days = len(readings) // per_day
    with reporter.task("the device lives through the data (host build)", total=days) as task:
        for day in range(days):
            chunk = readings[day * per_day : (day + 1) * per_day]
            decided, _, used, _ = host.live(chunk, 0)
            classes.append(decided)
            slots.append(used)
            start = time.perf_counter()
            status = host.update()
            seconds.append(time.perf_counter() - start)
            updates.append((day, status))
            task.advance()
    return {
        "classes": np.concatenate(classes),
        "slots": np.concatenate(slots),
        "updates": updates,
        "update_seconds": seconds,
    }


def _live_emulated(firmware, readings, per_day: int, life: dict, reporter: Reporter) -> dict:
    """The same life on the emulated target; must match the host build exactly."""
    from tailorml.deploy.learner.mcu import LearnerEmulator

    emulator = LearnerEmulator(firmware)
    emulator.init()
    days = len(readings) // per_day
    classes, update_instructions, stacks = [], [], []
    step_instructions = None
    hour = 60 // (MINUTES_PER_DAY // per_day)  # readings in an hour
    with reporter.task(f"the same life on the emulated {firmware.target.cpu}", total=days) as t:
        for day in range(days):
            chunk = readings[day * per_day : (day + 1) * per_day]
            if day == 1:  # a counted hour of steps, with full windows and labels
                first, call = emulator.steps(chunk[:hour], count=True)
                step_instructions = call.instructions / hour
                rest, _ = emulator.steps(chunk[hour:])
                decided = np.concatenate([first, rest])
            else:
                decided, call = emulator.steps(chunk)
            stacks.append(call.peak_stack)
            classes.append(decided)
            status, call = emulator.update(count=True)
            update_instructions.append(call.instructions)
            stacks.append(call.peak_stack)
            if status != life["updates"][day][1]:
                raise DeployError(
                    f"the emulated {firmware.target.cpu} update of day {day + 1} differs from "
                    "the host build's; the device build is not trustworthy — please report this"
                )
            t.advance()
    classes = np.concatenate(classes)
    if not np.array_equal(classes, life["classes"]):
        raise DeployError(
            f"the emulated {firmware.target.cpu} decided differently from the host build on "
            f"{int((classes != life['classes']).sum())} steps; please report this"
        )
    return {
        "identical_to_host": True,
        "steps": len(classes),
        "updates": len(update_instructions),
        "update_instructions": update_instructions,
        "step_instructions": step_instructions,
        "peak_stack": max(stacks),
    }


def _cloud_model(config, data, individual: str, model, iterations: int):
    """TL(n) of `tailorml.personalize`: the run's model fine-tuned on the person's D_I."""
    from tailorml.personalize import execute, make_strategy
    from tailorml.personalize.factory import context_for

    def no_latents():
        raise DeployError("the cloud reference does not use latents")

    context = context_for(
        config,
        data,
        individual,
        config.train.seed,
        lambda: copy.deepcopy(model),
        latents=no_latents,
        policy=model.policy,
    )
    strategy = make_strategy("transfer", n=iterations)
    return execute(strategy.plan(context), context)


# -- decisions and metrics -----------------------------------------------------------------


def _decisions(prepared, individual, quantized, life, cloud_model, n_steps: int) -> dict:
    """Per labelled window of the lived period: its step, and each model's decision."""
    windows = prepared.windows
    indices = windows.indices_of(individual)
    steps = windows.row[indices] + windows.length - 1
    keep = steps < n_steps
    indices, steps = indices[keep], steps[keep]
    x = windows.x[indices]
    predefined = quantized.decide(quantized.logits(x))
    device = life["classes"][steps]
    factory = life["slots"][steps] == SLOT_FACTORY
    if not np.array_equal(device[factory], predefined[factory]):
        raise DeployError("the device's factory head decided unlike the exported model")
    decided = {"device": device, "predefined": predefined}
    if cloud_model is not None:
        from tailorml.models.predict import predict_proba

        decided["cloud"] = quantized.policy.decide(predict_proba(cloud_model, x))
    return {"indices": indices, "steps": steps, "decided": decided}


def _days(prepared, individual, quantized, decisions, life, n_days: int, per_day: int):
    policy, windows = quantized.policy, prepared.windows
    indices, steps = decisions["indices"], decisions["steps"]
    frame = prepared.cohort.of(individual).iloc[: n_days * per_day]
    times, cgm = frame["time"].to_numpy(), frame["cgm"].to_numpy()
    events = policy.hypo_events(times, cgm)
    first = times[0]
    event_days = np.array(
        [int((e.start - first) // np.timedelta64(1, "D")) for e in events], dtype=int
    )
    lived = Lived(
        times=windows.time[indices],
        day=steps // per_day,
        label_is_hypo=windows.y[indices] == policy.alert_index,
        current_cgm=windows.current_cgm[indices],
        previous_cgm=windows.previous_cgm[indices],
        event_days=event_days,
        events=events,
        n_days=n_days,
    )
    trained_until = prepared.splits.boundaries[individual]["train"][1]  # cloud's D_I rows
    per_model = {
        name: day_metrics(policy, lived, decided == policy.alert_index)
        for name, decided in decisions["decided"].items()
    }
    parts = _parts_by_step(prepared, individual, n_days * per_day)
    updates = dict(life["updates"])
    rows = []
    for day in range(n_days):
        start, end = day * per_day, (day + 1) * per_day
        row = {
            "day": day + 1,
            "date": str(np.datetime_as_string(times[start], unit="D")),
            "parts": sorted(set(parts[start:end]) - {""}),
            "head": "factory" if life["slots"][start] == SLOT_FACTORY else "personal",
        }
        for name in MODELS:  # None: no such model, or the cloud model on its D_I
            out_of_sample = name != "cloud" or start >= trained_until
            row[name] = per_model[name][day] if name in per_model and out_of_sample else None
        status = updates.get(day)
        row["update"] = None if status is None else status.gate_name
        rows.append(row)
    return rows


def _parts_by_step(prepared, individual: str, n_steps: int) -> list[str]:
    labels = [""] * n_steps
    for part, (start, end) in prepared.splits.boundaries[individual].items():
        for step in range(start, min(end, n_steps)):
            labels[step] = part
    return labels


def _summary(prepared, individual, quantized, decisions, n_steps: int) -> dict:
    """Each model's alert metrics on the person's test part (as much of it as was lived),
    and the device's and predefined model's over the whole lived period."""
    policy, windows = quantized.policy, prepared.windows
    indices = decisions["indices"]
    result: dict = {}
    for period in ("test", "lived"):
        if period == "test":
            start, end = prepared.splits.boundaries[individual]["test"]
            end = min(end, n_steps)
            chosen = np.isin(indices, prepared.splits.of(individual, "test"))
        else:
            start, end = 0, n_steps
            chosen = np.ones(len(indices), dtype=bool)
        if end <= start or not chosen.any():
            result[period] = None
            continue
        trace = prepared.cohort.of(individual).iloc[start:end]
        events = policy.hypo_events(trace["time"].to_numpy(), trace["cgm"].to_numpy())
        picked = indices[chosen]
        rows = {}
        for name, decided in decisions["decided"].items():
            if period == "lived" and name == "cloud":
                continue  # it trained on part of this period
            metrics = policy.metrics_of_alerts(
                events,
                windows.time[picked],
                decided[chosen] == policy.alert_index,
                windows.y[picked] == policy.alert_index,
                windows.current_cgm[picked],
                windows.previous_cgm[picked],
            )
            rows[name] = {key: metrics[key] for key in SUMMARY_KEYS}
        result[period] = {"windows": int(chosen.sum()), "models": rows}
    return result


# -- facts ---------------------------------------------------------------------------------


def _update_row(status: UpdateStatus, day: int, names: list[str], per_day: int) -> dict:
    return {"day": day + 1, **status.to_dict(), "reason": status.reason(names, per_day)}


def _memory(layout, state_bytes: int, settings, firmware, target: TargetProfile) -> dict:
    return {
        "budget_bytes": settings.budget_bytes,
        "state_bytes": state_bytes,
        "state_parts": layout.parts,
        "flash_parts": layout.flash_parts,
        "float": (
            "single-precision FPU (FPv4-SP)"
            if target.float_abi == "eabihf"
            else "no FPU: compiler-rt soft-float"
        ),
        "firmware": {
            "what": "model + learner + emulator harness, linked",
            **firmware.sizes(),
        },
    }


def _cost(life: dict, emulated: dict | None, target: TargetProfile) -> dict:
    seconds = np.array(life["update_seconds"])
    trained = [status.trained for _, status in life["updates"]]
    cost: dict = {
        "host_update_ms": {
            "mean": float(seconds.mean() * 1000),
            "max": float(seconds.max() * 1000),
            "updates_trained": int(sum(trained)),
        },
        "emulated": None,
    }
    if emulated:
        counts = np.array(emulated["update_instructions"])
        most = int(counts.max())
        cost["emulated"] = {
            "target": target.name,
            "update_instructions_max": most,
            "update_instructions_mean": float(counts.mean()),
            "update_ms_at_clock": most * target.cycles_per_instruction / target.clock_hz * 1000,
            "step_instructions": emulated["step_instructions"],
            "step_ms_at_clock": (
                emulated["step_instructions"]
                * target.cycles_per_instruction
                / target.clock_hz
                * 1000
            ),
            "cycles_per_instruction": target.cycles_per_instruction,
            "peak_stack": emulated["peak_stack"],
        }
    return cost


def _cloud_facts(prepared, individual: str, iterations: int, config) -> dict | None:
    if not iterations:
        return None
    return {
        "method": f"TL(n={iterations}) (tailorml.personalize 'transfer')",
        "trained_on": f"D_I: the {len(prepared.splits.of(individual, 'train'))} windows of "
        f"{individual}'s training part",
        "learning_rate": config.experiment.finetune_learning_rate,
        "batch_size": config.train.batch_size,
        "runs": "float model in the cloud (scenario 2), the predefined model's threshold",
    }


def _command(run, individual, target, days, out, emulate, cloud_iterations) -> str:
    parts = ["tailorml", "deploy", "simulate", "--run", str(Path(run).resolve())]
    parts += ["--individual", individual, "--target", target.name]
    if days is not None:
        parts += ["--days", str(days)]
    parts += ["--out", str(Path(out).resolve()), "--cloud-iterations", str(cloud_iterations)]
    if emulate:
        parts.append("--emulate")
    return shlex.join(parts)
