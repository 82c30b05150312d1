"""A device lives through one person's data with guarded on-device learning, next to the
predefined model and a cloud-personalized one: the steps of `tailorml deploy simulate`
(`tailorml.jobs.deploy_simulate` runs them and writes simulate.json).

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
import time

import numpy as np

from tailorml.data.prepared import Prepared
from tailorml.deploy.learner.daily import MINUTES_PER_DAY, Lived, day_metrics
from tailorml.deploy.learner.host import HostLearner
from tailorml.deploy.learner.ondevice import (
    MISSING,
    SLOT_FACTORY,
    UpdateStatus,
)
from tailorml.deploy.target.mcu import TargetProfile
from tailorml.errors import DeployError
from tailorml.progress import Reporter

MODELS = ("device", "predefined", "cloud")
SUMMARY_KEYS = (
    "hypo_events",
    "hypo_sensitivity",
    "hypo_sensitivity_early",
    "false_alerts_per_day",
    "alerts",
    "median_lead_minutes",
)


def readings_of(prepared: Prepared, individual: str) -> np.ndarray:
    """The person's CGM as the sensor hands it to the device: int16 mg/dL, gaps MISSING."""
    cgm = prepared.cohort.of(individual)["cgm"].to_numpy(dtype=np.float64)
    return np.where(np.isnan(cgm), MISSING, np.rint(np.nan_to_num(cgm))).astype(np.int16)


# -- living -------------------------------------------------------------------------------


def live_on_host(host: HostLearner, readings: np.ndarray, per_day: int, reporter: Reporter) -> dict:
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


def live_emulated(firmware, readings, per_day: int, life: dict, reporter: Reporter) -> dict:
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


def cloud_model(config, data, individual: str, model, iterations: int):
    """TL(n) of `tailorml.personalize`: the run's model fine-tuned on the person's D_I."""
    from tailorml.personalize import execute, make_strategy
    from tailorml.personalize.factory import StrategyTraining, context_for

    def no_latents():
        raise DeployError("the cloud reference does not use latents")

    context = context_for(
        StrategyTraining.from_config(config),
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


def decisions(prepared, individual, quantized, life, cloud_model, n_steps: int) -> dict:
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


def day_rows(prepared, individual, quantized, decisions, life, n_days: int, per_day: int):
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
    parts = parts_by_step(prepared, individual, n_days * per_day)
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


def parts_by_step(prepared, individual: str, n_steps: int) -> list[str]:
    labels = [""] * n_steps
    for part, (start, end) in prepared.splits.boundaries[individual].items():
        for step in range(start, min(end, n_steps)):
            labels[step] = part
    return labels


def period_summary(prepared, individual, quantized, decisions, n_steps: int) -> dict:
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


def update_row(status: UpdateStatus, day: int, names: list[str], per_day: int) -> dict:
    return {"day": day + 1, **status.to_dict(), "reason": status.reason(names, per_day)}


def memory_facts(layout, state_bytes: int, settings, firmware, target: TargetProfile) -> dict:
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


def cost_facts(life: dict, emulated: dict | None, target: TargetProfile) -> dict:
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


def cloud_facts(prepared, individual: str, iterations: int, config) -> dict | None:
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
