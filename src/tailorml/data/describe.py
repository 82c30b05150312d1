"""Per-individual summaries of a cohort: what a clinician checks first in CGM data.

Time in ranges follows the international consensus on CGM metrics (Battelino et al.,
Diabetes Care 2019), whose ranges are fixed by definition: in range 70-180 mg/dL, below 70
and below 54, above 180 and above 250. Hypo and hyper *events* follow the alert policy
(its thresholds and event definition), so they are the events the models are judged on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tailorml.data.cohort import Cohort
from tailorml.policy import AlertPolicy


def describe_cohort(cohort: Cohort, policy: AlertPolicy) -> pd.DataFrame:
    def share(mask: np.ndarray) -> float:
        return float(mask.mean()) if len(mask) else float("nan")

    rows = []
    for individual in cohort.individuals:
        frame = cohort.of(individual.id)
        cgm = frame["cgm"].to_numpy(dtype=float)
        valid = cgm[~np.isnan(cgm)]
        times = frame["time"].to_numpy()
        rows.append(
            {
                "patient_id": individual.id,
                "group": individual.group,
                "days": len(cgm) * cohort.sample_minutes / 1440,
                "readings": len(valid),
                "missing": float(np.isnan(cgm).mean()),
                "mean_mgdl": float(valid.mean()) if len(valid) else float("nan"),
                "cv": float(valid.std() / valid.mean()) if len(valid) else float("nan"),
                "time_in_range": share((valid >= 70) & (valid <= 180)),
                "time_below_70": share(valid < 70),
                "time_below_54": share(valid < 54),
                "time_above_180": share(valid > 180),
                "time_above_250": share(valid > 250),
                "hypo_events": len(policy.hypo_events(times, cgm)),
                "hyper_events": len(policy.hyper_events(times, cgm)),
            }
        )
    return pd.DataFrame(rows)
