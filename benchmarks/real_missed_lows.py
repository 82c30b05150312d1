"""Which lows does the model miss on people it never saw, and what would catching them cost?
Evidence for docs/real_data.md ("Why not 65 % early").

    .venv/bin/python benchmarks/real_missed_lows.py runs/<time>-lodo [--rule personal]

For every low of the left-out people's evaluation days, at each person's own threshold
(`per_person.csv` of the run): was it alerted at least 15 min ahead, later, or not at all?
Each low is described by the glucose 15 and 30 minutes before it began and the fall over
those 15 minutes. Then the cost of the missed ones: how often, on the same days, does the
glucose sit as low and fall as fast as it did before the median missed low without any low
following in the next 30 minutes (the false alerts a rule catching those lows would raise)?
Real people, retrospective data: evidence about models, not clinical evidence.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from tailorml.alerts import event_leads, raise_alerts
from tailorml.evaluate.curves import MODEL, people_from_tables
from tailorml.evaluate.rules import PERSONAL, POPULATION
from tailorml.models.cnn import load_model

MINUTE = np.timedelta64(1, "m")


def reading_at(trace: pd.DataFrame, when: np.datetime64) -> float:
    """The reading at `when` on the trace's grid, NaN where there is none."""
    times = trace["time"].to_numpy()
    row = np.searchsorted(times, when)
    if row < len(times) and times[row] == when:
        return float(trace["cgm"].iloc[row])
    return float("nan")


def fold_lows(folder: Path, rule: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every low of a fold with how the rule met it, and every non-low moment's state."""
    policy = load_model(folder / "model.pt").policy
    predictions = pd.read_parquet(folder / "predictions.parquet")
    readings = pd.read_parquet(folder / "readings.parquet")
    per_person = pd.read_csv(folder / "per_person.csv")
    thresholds = per_person[per_person["rule"] == rule].set_index("patient_id")["knob"]
    lows, quiet = [], []
    ids = list(dict.fromkeys(predictions["patient_id"]))  # people_from_tables' order
    for pid, person in zip(ids, people_from_tables(predictions, readings, policy), strict=True):
        trace = readings[readings["patient_id"] == pid]
        positive = person.positive(MODEL, thresholds.get(pid, policy.threshold), policy)
        leads = event_leads(person.events, person.times, positive, policy.horizon_minutes)
        for event, lead in zip(person.events, leads, strict=True):
            if np.isnan(lead):
                continue
            before15 = reading_at(trace, event.start - 15 * MINUTE)
            before30 = reading_at(trace, event.start - 30 * MINUTE)
            lows.append(
                {
                    "patient_id": pid,
                    "outcome": "early" if lead >= 15 else "late" if lead >= 0 else "missed",
                    "glucose_15_before": before15,
                    "glucose_30_before": before30,
                    "fall_per_min": (before30 - before15) / 15,
                }
            )
        current = person.current_cgm
        earlier = np.array([reading_at(trace, t - 15 * MINUTE) for t in person.times])
        quiet.append(
            pd.DataFrame(
                {
                    "patient_id": pid,
                    "time": person.times,
                    "glucose": current,
                    "fall_per_min": (earlier - current) / 15,
                    "quiet": ~person.label_is_hypo & (current >= policy.hypo_mgdl),
                    "days": len(person.times) * policy.sample_minutes / 1440,
                }
            )
        )
    return pd.DataFrame(lows), pd.concat(quiet, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a `tailorml lodo` run directory")
    parser.add_argument("--rule", choices=("personal", "population"), default="personal")
    args = parser.parse_args()
    rule = PERSONAL if args.rule == "personal" else POPULATION
    for folder in sorted((args.run / "folds").iterdir()):
        lows, moments = fold_lows(folder, rule)
        print(f"\n== left out: {folder.name} ({rule})")
        table = lows.groupby("outcome")[["glucose_30_before", "glucose_15_before", "fall_per_min"]]
        print(table.median().assign(lows=lows["outcome"].value_counts()).round(2).to_string())
        missed = lows[lows["outcome"] != "early"].dropna()
        glucose, fall = missed["glucose_15_before"].median(), missed["fall_per_min"].median()
        days = moments.groupby("patient_id")["days"].first().sum()
        alike = (moments["glucose"] <= glucose) & (moments["fall_per_min"] >= fall)
        false = 0
        for _, rows in moments.assign(alike=alike).groupby("patient_id", sort=False):
            alerts = raise_alerts(rows["time"].to_numpy(), rows["alike"].to_numpy(), 30)
            false += int((alerts & rows["quiet"].to_numpy()).sum())
        print(
            f"alerting whenever glucose is <= {glucose:.0f} mg/dL and falling >= {fall:.2f} "
            f"mg/dL/min (the median low not alerted early, 15 min before it) raises "
            f"{false / days:.2f} false alerts a day on these days ({false:,} in {days:.0f} "
            "days, 30-min snooze) by itself"
        )


if __name__ == "__main__":
    main()
