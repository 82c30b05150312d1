"""Soft personalization over every person of a cohort (default: the real cohorts): how many
get a candidate through the gates, what it buys, what it costs (docs/real_data.md).

    .venv/bin/python benchmarks/soft_real.py --predefined runs/<demo run> \
        [--registry /tmp/soft-real] [--out soft_real.csv] [--cohort real] [--people N]

Each person goes through `tailorml personalize` exactly (the library call behind it): the
candidates, the personal threshold, the gates on their held-out test days, a proposal or the
predefined model, all recorded in the registry with a model card. Then one row per person:
what the predefined model did on their test days, what the proposal does there, and which
gates held the others back; and the counts per dataset. The table is rewritten after
every person, so an interrupted study keeps what it finished.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from tailorml.config import load_config
from tailorml.data.cohort import load_cohort
from tailorml.progress import SILENT
from tailorml.registry.models import Registry
from tailorml.soft.session import PREDEFINED, personalize_individual

SHOWN = ("hypo_sensitivity_early", "hypo_sensitivity", "false_alerts_per_day")


def person_row(outcome, person, seconds: float) -> dict:
    """One person's session as a table row."""
    row = {
        "patient_id": person.id,
        "dataset": person.categories.get("dataset"),
        "group": person.group,
        "seconds": round(seconds, 1),
        "refused": outcome.refused or "",
        "proposal": outcome.proposal or "",
    }
    if outcome.refused:
        return row
    table = {candidate["candidate"]: candidate for candidate in outcome.table}
    predefined = table[PREDEFINED]
    chosen = table.get(outcome.proposal, predefined)
    row["candidates_passed"] = sum(
        candidate["passed"] for name, candidate in table.items() if name != PREDEFINED
    )
    row["candidates"] = len(table) - 1
    for key in SHOWN:
        row[f"predefined_{key}"] = predefined.get(key)
        row[f"active_{key}"] = chosen.get(key)
    failed = {
        gate
        for name, candidate in table.items()
        if name != PREDEFINED and not candidate["passed"]
        for gate, value in candidate.items()
        if isinstance(value, bool) and gate != "passed" and not value
    }
    row["gates_failed_by_some_candidate"] = ", ".join(sorted(failed))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predefined", type=Path, required=True, help="a train/demo run")
    parser.add_argument("--registry", type=Path, default=Path("/tmp/soft-real"))
    parser.add_argument("--out", type=Path, default=Path("soft_real.csv"))
    parser.add_argument("--cohort", default="real")
    parser.add_argument("--people", type=int, default=0, help="the first N only (0: all)")
    args = parser.parse_args()
    config = load_config(args.predefined / "config.toml", {"cohort": {"path": args.cohort}})
    cohort = load_cohort(args.cohort)
    people = cohort.individuals[: args.people or None]
    register = args.predefined if Registry(args.registry).predefined() is None else None
    rows = []
    for person in people:
        start = time.perf_counter()
        outcome = personalize_individual(
            config,
            person.id,
            SILENT,
            predefined_run=register,
            actor="benchmarks/soft_real.py",
            registry_dir=args.registry,
        )
        register = None  # registered once, before the first person
        rows.append(person_row(outcome, person, time.perf_counter() - start))
        row = rows[-1]
        print(
            f"{person.id:16s} {row['seconds']:6.1f} s  "
            f"{row['refused'] or row['proposal'] or 'keeps the predefined model'}",
            flush=True,
        )
        pd.DataFrame(rows).to_csv(args.out, index=False)
    table = pd.DataFrame(rows)
    judged = table[table["refused"] == ""]
    print(
        f"\n{len(table)} people: {len(table) - len(judged)} refused (data), "
        f"{(judged['proposal'] != '').sum()} with a proposal"
    )
    print(judged.groupby("dataset")["proposal"].apply(lambda p: (p != "").sum()).to_string())
    proposed = judged[judged["proposal"] != ""]
    for key in SHOWN:
        change = proposed[f"active_{key}"] - proposed[f"predefined_{key}"]
        print(f"{key}: mean change {change.mean():+.3f} over {change.notna().sum()} people")
    print(table["proposal"].value_counts().to_string())
    minutes, median = table["seconds"].sum() / 60, table["seconds"].median()
    print(f"time: {minutes:.1f} min in all, median {median:.0f} s per person")


if __name__ == "__main__":
    main()
