"""Per-individual summaries of a cohort: what a clinician checks first in CGM data.

Time in ranges follows the international consensus on CGM metrics (Battelino et al.,
Diabetes Care 2019): in range 70-180 mg/dL, below 70 and below 54, above 180 and above 250.
Events are at least 15 minutes outside the range (see `tailorml.evaluate.alerts`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tailorml.data.cohort import Cohort
from tailorml.evaluate.alerts import hyper_events, hypo_events


def describe_cohort(
    cohort: Cohort, hypo_mgdl: float = 70.0, hyper_mgdl: float = 250.0
) -> pd.DataFrame:
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
                "time_below_70": share(valid < hypo_mgdl),
                "time_below_54": share(valid < 54),
                "time_above_180": share(valid > 180),
                "time_above_250": share(valid > hyper_mgdl),
                "hypo_events": len(hypo_events(times, cgm, hypo_mgdl, cohort.sample_minutes)),
                "hyper_events": len(hyper_events(times, cgm, hyper_mgdl, cohort.sample_minutes)),
            }
        )
    return pd.DataFrame(rows)
