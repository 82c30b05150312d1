"""Which lows does one model catch and another miss, at equal false alerts? A look inside the
HE-friendly model's gap to the standard CNN (BENCHMARKS.md, "Where the quadratic network
loses lows").

    .venv/bin/python benchmarks/he_missed_lows.py --first RUN --second RUN [--rate 0.514]

Each model runs at its best early-sensitivity threshold for no more than `--rate` false
alerts/day on its fine test curve (bench_privacy.fine_curve). For every test low with
predictions in the horizon before it: did each model alert there? The lows are grouped
(both, first only, second only, neither) and described by the glucose a horizon before, the
glucose at the last prediction before, the fall between them, and each model's highest
P(hypo) there. Then the glucose of each model's false alerts, and its sensitivity when no
hypo alert may sound above a guard level (are false alerts high readings?). The two runs
must score the same test windows. The cohort is SYNTHETIC: figures compare models.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tailorml.alerts import event_leads, false_alerts
from tailorml.evaluate.curves import MODEL, Person, people_from_tables, sweep
from tailorml.models.cnn import load_model
from tailorml.policy import AlertPolicy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_privacy import best_within, fine_curve_of, score_quantiles

GUARDS_MGDL = (180.0, 140.0, 120.0)
GUARDED = "model, guarded"


@dataclass
class Operated:
    """A run's test people and the threshold it runs at."""

    name: str
    policy: AlertPolicy
    people: list[Person]
    threshold: float


def operate(run: Path, rate: float) -> Operated:
    policy = load_model(run / "model.pt").policy
    people = people_from_tables(
        pd.read_parquet(run / "predictions.parquet"),
        pd.read_parquet(run / "test_readings.parquet"),
        policy,
    )
    threshold = float(best_within(fine_curve_of(people, policy), rate)["knob"])
    return Operated(run.name, policy, people, threshold)


def lows_table(first: Operated, second: Operated) -> pd.DataFrame:
    """One row per evaluable test low: whether each model alerted in the horizon before it,
    the glucose there and each model's highest P(hypo)."""
    horizon = np.timedelta64(first.policy.horizon_minutes, "m")
    rows = []
    for one, two in zip(first.people, second.people, strict=True):
        if len(one.times) != len(two.times) or (one.times != two.times).any():
            raise SystemExit("the two runs do not score the same test windows")
        caught = [
            event_leads(
                one.events,
                one.times,
                person.positive(MODEL, model.threshold, model.policy),
                first.policy.horizon_minutes,
            )
            for person, model in ((one, first), (two, second))
        ]
        for index, event in enumerate(one.events):
            if np.isnan(caught[0][index]):
                continue  # no prediction in the horizon: not evaluable
            before = (one.times >= event.start - horizon) & (one.times < event.start)
            glucose = one.current_cgm[before]
            rows.append(
                {
                    "first": caught[0][index] >= 0,
                    "second": caught[1][index] >= 0,
                    "glucose a horizon before": glucose[0],
                    "glucose just before": glucose[-1],
                    "fall": glucose[0] - glucose[-1],
                    "first's max P(hypo)": one.scores[MODEL][before].max(),
                    "second's max P(hypo)": two.scores[MODEL][before].max(),
                }
            )
    table = pd.DataFrame(rows)
    table["caught by"] = np.select(
        [table["first"] & table["second"], table["first"], table["second"]],
        ["both", "first only", "second only"],
        "neither",
    )
    return table


def false_alert_glucose(model: Operated) -> np.ndarray:
    """The current glucose of every false alert the model raises at its threshold."""
    values = []
    for person in model.people:
        positive = person.positive(MODEL, model.threshold, model.policy)
        alerts = model.policy.raised(
            person.times, positive, person.current_cgm, person.previous_cgm
        )
        wrong = false_alerts(
            alerts, person.label_is_hypo, person.current_cgm, model.policy.hypo_mgdl
        )
        values.append(person.current_cgm[wrong])
    return np.concatenate(values)


def guarded_sensitivity(model: Operated, guard_mgdl: float, rate: float) -> float:
    """Best early sensitivity at no more than `rate` false alerts/day when no hypo alert may
    sound at or above `guard_mgdl` (its own fine grid of thresholds)."""
    for person in model.people:
        person.scores[GUARDED] = np.where(
            person.current_cgm < guard_mgdl, person.scores[MODEL], 0.0
        )
    scores = np.concatenate([person.scores[GUARDED] for person in model.people])
    grid = np.unique(score_quantiles(scores))
    curve = sweep(model.people, model.policy, GUARDED, grid).dropna(subset=["sensitivity_early"])
    return float(best_within(curve, rate)["sensitivity_early"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--first", type=Path, required=True, help="e.g. a standard CNN run")
    parser.add_argument("--second", type=Path, required=True, help="e.g. an HE-friendly run")
    parser.add_argument("--rate", type=float, default=0.514)
    args = parser.parse_args()
    first, second = operate(args.first, args.rate), operate(args.second, args.rate)
    print(
        f"first {first.name} at P >= {first.threshold:.3f}; "
        f"second {second.name} at P >= {second.threshold:.3f}"
    )
    table = lows_table(first, second)
    print(
        f"\n{len(table)} evaluable lows: first catches {int(table['first'].sum())}, "
        f"second {int(table['second'].sum())}\n"
    )
    columns = [c for c in table.columns if c not in ("first", "second", "caught by")]
    summary = table.groupby("caught by")[columns].median().round(3)
    summary.insert(0, "lows", table["caught by"].value_counts())
    print("| caught by | " + " | ".join(summary.columns) + " |")
    print("|---" * (len(summary.columns) + 1) + "|")
    for group, row in summary.iterrows():
        print(f"| {group} | " + " | ".join(f"{value:g}" for value in row) + " |")
    print(
        "\n| model | false alerts | their glucose, median (10–90 %) | "
        + " | ".join(f"guard {g:g}" for g in GUARDS_MGDL)
        + " |"
    )
    print("|---|---|---|" + "---|" * len(GUARDS_MGDL))
    for model in (first, second):
        glucose = false_alert_glucose(model)
        low, median, high = np.quantile(glucose, [0.1, 0.5, 0.9])
        guarded = [guarded_sensitivity(model, g, args.rate) for g in GUARDS_MGDL]
        print(
            f"| {model.name} | {len(glucose)} | {median:.0f} ({low:.0f}–{high:.0f}) | "
            + " | ".join(f"{value:.3f}" for value in guarded)
            + " |"
        )


if __name__ == "__main__":
    main()
