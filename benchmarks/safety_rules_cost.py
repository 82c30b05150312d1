"""What each safety rule of a decision does to the alert figures of one evaluated run.

Offline evaluation applies the service's rules (docs/alerts.md, "Safe decisions"): the
urgent-low floor, hysteresis and the re-alert of a snoozed low. This script takes a run's
stored test predictions (`predictions.parquet`, `test_readings.parquet` of a train/demo run)
and judges the model with the rules added one at a time, at the run's own threshold and at
the threshold that would be best on these test days for at most `--budget` false alerts a
day (an oracle choice: it shows what each rule costs at equal false alerts, not a figure to
report as the model's).

    .venv/bin/python benchmarks/safety_rules_cost.py runs/<demo run>
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tailorml.alerts import alert_metrics, held_on
from tailorml.evaluate.curves import MODEL, PROBABILITY_KNOBS, Person, people_from_tables
from tailorml.policy import AlertPolicy

VARIANTS = {
    "threshold + snooze (before the rules)": {"urgent": False, "hysteresis": 0.0, "drop": None},
    "+ urgent-low floor": {"urgent": True, "hysteresis": 0.0, "drop": None},
    "+ hysteresis": {"urgent": True, "hysteresis": None, "drop": None},
    "+ re-alert (all rules, as reported)": {"urgent": True, "hysteresis": None, "drop": True},
}


def judged(person: Person, policy: AlertPolicy, knob: float, variant: dict) -> dict:
    """One person's metrics at `knob` with the rules of `variant` (None: the policy's)."""
    if variant["urgent"]:
        urgent = policy.urgent_lows(person.current_cgm, person.previous_cgm)
    else:
        urgent = np.zeros(len(person.times), dtype=bool)
    hysteresis = policy.hysteresis if variant["hysteresis"] is None else variant["hysteresis"]
    positive = held_on(person.scores[MODEL], knob, hysteresis, urgent)
    return alert_metrics(
        person.events,
        person.times,
        positive,
        person.label_is_hypo,
        person.current_cgm,
        threshold=policy.hypo_mgdl,
        horizon_minutes=policy.horizon_minutes,
        snooze_minutes=policy.snooze_minutes,
        sample_minutes=policy.sample_minutes,
        useful_lead_minutes=policy.useful_lead_minutes,
        intervals=False,
        urgent=urgent if variant["urgent"] else None,
        realert_drop_mgdl=policy.realert_drop_mgdl if variant["drop"] else None,
    )


def row(people: list[Person], policy: AlertPolicy, knob: float, variant: dict) -> dict:
    table = pd.DataFrame([judged(person, policy, knob, variant) for person in people])
    alerts, false = table["alerts"].sum(), table["false_alerts"].sum()
    return {
        "threshold": knob,
        "early": table["hypo_sensitivity_early"].mean(),
        "any": table["hypo_sensitivity"].mean(),
        "false_per_day": table["false_alerts_per_day"].mean(),
        "precision": (alerts - false) / alerts if alerts else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a train/demo run directory")
    parser.add_argument("--budget", type=float, default=1.0, help="false alerts a day")
    args = parser.parse_args()
    metrics = json.loads((args.run / "metrics.json").read_text())
    policy = AlertPolicy.from_dict(metrics["policy"], str(args.run / "metrics.json"))
    predictions = pd.read_parquet(args.run / "predictions.parquet")
    readings = pd.read_parquet(args.run / "test_readings.parquet")
    people = people_from_tables(predictions, readings, policy)
    print(f"{len(people)} people, test days of {args.run}; threshold {policy.threshold}")
    rows = []
    for name, variant in VARIANTS.items():
        at_own = row(people, policy, policy.threshold, variant)
        curve = [row(people, policy, knob, variant) for knob in PROBABILITY_KNOBS]
        within = [point for point in curve if point["false_per_day"] <= args.budget]
        best = max(within, key=lambda point: point["early"]) if within else None
        rows.append(
            {
                "rules": name,
                **{f"own {key}": value for key, value in at_own.items() if key != "threshold"},
                "oracle threshold": best["threshold"] if best else np.nan,
                "oracle early": best["early"] if best else np.nan,
                "oracle false/day": best["false_per_day"] if best else np.nan,
            }
        )
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
