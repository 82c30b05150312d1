"""Per-individual summaries of a cohort: what a clinician checks first in CGM data.

The consensus CGM metrics (time in ranges, mean, GMI, CV, data sufficiency) come from
`tailorml.data.glycemia`, whose ranges are fixed by definition. Hypo and hyper *events*
follow the alert policy (its thresholds and event definition), so they are the events the
models are judged on.
"""

from __future__ import annotations

import pandas as pd

from tailorml.data.cohort import Cohort
from tailorml.data.glycemia import COLUMNS, glycemia_metrics
from tailorml.policy import AlertPolicy

PERSON_TRAITS = ("age_years", "hba1c_percent")  # shown beside the categories when present


def describe_cohort(cohort: Cohort, policy: AlertPolicy) -> pd.DataFrame:
    """One row per individual: group, categorical traits (e.g. dataset, sex, sensor) with
    age and HbA1c where the cohort has them (the people table), the consensus CGM metrics
    (None where there is no reading), and hypo and hyper events under `policy`."""
    categories = sorted({name for person in cohort.individuals for name in person.categories})
    traits = [t for t in PERSON_TRAITS if any(t in p.traits for p in cohort.individuals)]
    rows = []
    for individual in cohort.individuals:
        frame = cohort.of(individual.id)
        times, cgm = frame["time"].to_numpy(), frame["cgm"].to_numpy(dtype=float)
        rows.append(
            {"patient_id": individual.id, "group": individual.group}
            | {name: individual.categories.get(name) for name in categories}
            | {name: individual.traits.get(name) for name in traits}
            | glycemia_metrics(times, cgm, cohort.sample_minutes)
            | {
                "hypo_events": len(policy.hypo_events(times, cgm)),
                "hyper_events": len(policy.hyper_events(times, cgm)),
            }
        )
    columns = ["patient_id", "group", *categories, *traits, *COLUMNS]
    return pd.DataFrame(rows, columns=[*columns, "hypo_events", "hyper_events"])
