"""Guarded on-device learning over a whole cohort: every individual's device lives through
its data (host build of the generated C, the default `LearnerSettings`), and its alerts on
the individual's test part are summed over the cohort next to the predefined int8 model's,
and next to the predefined model at a few other thresholds (is the device better than just
moving the operating point?).

    .venv/bin/python benchmarks/ondevice_cohort.py --run runs/<run> [--thresholds 0.94 0.95]

The cohort is SYNTHETIC: not clinical evidence.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from tailorml.data.prepared import prepare
from tailorml.deploy.int8.quantize import quantize
from tailorml.deploy.learner.host import HostLearner
from tailorml.deploy.learner.ondevice import LearnerSettings
from tailorml.deploy.learner.simulate import readings_of
from tailorml.deploy.learner.traces import dangerous_traces
from tailorml.models.cnn import load_model
from tailorml.robust.evaluate import evenly_spaced
from tailorml.runs import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.94, 0.95, 0.97])
    arguments = parser.parse_args()
    started = time.perf_counter()
    run = Run.open(arguments.run)
    config = run.config()
    prepared = prepare(config)
    windows = prepared.windows
    general = prepared.splits.pooled("train")  # as deploy export and simulate calibrate
    calibration = windows.x[evenly_spaced(general, config.deploy.calibration_windows)]
    quantized = quantize(load_model(run.file("model.pt")), calibration)
    policy = quantized.policy
    per_day = 24 * 60 // policy.sample_minutes
    totals: Counter = Counter()
    gates: Counter = Counter()
    with tempfile.TemporaryDirectory() as scratch:
        host = HostLearner(quantized, LearnerSettings(), Path(scratch), dangerous_traces(quantized))
        for individual in prepared.cohort.ids:
            test = prepared.splits.of(individual, "test")
            if not len(test):
                continue
            host.init()
            readings = readings_of(prepared, individual)
            readings = readings[: len(readings) // per_day * per_day]
            classes, _, _, statuses = host.live(readings, per_day)
            gates.update(status.gate_name for status in statuses)
            steps = windows.row[test] + windows.length - 1
            trace = prepared.trace(individual, "test")
            events = policy.hypo_events(trace["time"].to_numpy(), trace["cgm"].to_numpy())
            probabilities = quantized.probabilities(quantized.logits(windows.x[test]))
            rules = {
                "device": classes[steps] == policy.alert_index,
                "predefined": quantized.decide(quantized.logits(windows.x[test]))
                == policy.alert_index,
            }
            for threshold in arguments.thresholds:
                rules[f"predefined at {threshold:g}"] = probabilities[:, 1] >= threshold
            for name, positive in rules.items():
                metrics = policy.metrics_of_alerts(
                    events,
                    windows.time[test],
                    positive,
                    windows.y[test] == policy.alert_index,
                    windows.current_cgm[test],
                    windows.previous_cgm[test],
                )
                totals[(name, "early")] += metrics["hypo_caught_early"]
                totals[(name, "events")] += metrics["hypo_events"]
                totals[(name, "false")] += metrics["false_alerts"]
                totals[(name, "days")] += metrics["monitored_days"]
    print(f"{len(prepared.cohort.ids)} individuals, test parts; threshold {policy.threshold}")
    print(f"{'rule':<24} {'early caught':>14} {'false alerts':>13} {'per day':>8}")
    for name in sorted({name for name, _ in totals}, key=lambda n: (n != "device", n)):
        early, events = int(totals[(name, "early")]), int(totals[(name, "events")])
        false, days = int(totals[(name, "false")]), totals[(name, "days")]
        print(f"{name:<24} {early:>6} of {events:<5} {false:>13} {false / days:>8.2f}")
    print("nightly updates:", dict(gates))
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
