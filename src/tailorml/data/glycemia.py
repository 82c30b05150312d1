"""The consensus CGM metrics and the ambulatory glucose profile (AGP): the clinical summary
a diabetes team reads first, computed in this one place for `cohort describe`, the run
outputs (`glycemia.csv`, `metrics.json` → `glycemia`) and the reports.

Definitions follow the international consensus on time in range (Battelino et al.,
Diabetes Care 42:1593, 2019) and the GMI paper (Bergenstal et al., Diabetes Care 41:2275,
2018): time below 54 and below 70, in 70-180 (inclusive), above 180 and above 250 mg/dL as
shares of the readings present; mean glucose; GMI = 3.31 + 0.02392 × mean mg/dL (in %);
CV = SD / mean with the sample SD (as iglu and the AGP report); data sufficiency = readings
present / readings possible on the grid over the person's period (first to last slot).
Missing readings (NaN) are excluded; a metric with no reading to stand on is None (JSON
null, "–" in tables), never NaN or a made-up 0.

Why our own code rather than a package (evaluated for issue 12, in a throwaway venv with our
numpy 2.4 / pandas 3.1):
- iglu-python 0.4.3 gives the same numbers (checked to 1e-12 on a 2-day series) and works
  with our versions, but it is GPL-2 (tailorml is MIT), pulls openpyxl and tzlocal, converts
  times to the machine's time zone, returns 0 % in range for a person with no readings and
  raises for others; the metrics we need are a few lines each.
- cgmquantify 0.5 (last release 2020, sdist only) does not install (its setup.py reads a
  README.md the sdist lacks); its "TIR" is mean ± SD, not 70-180 mg/dL; it needs statsmodels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

#: The consensus ranges: column -> label. Below/above ranges are cumulative (below 70
#: includes below 54), as the consensus states its targets.
RANGES: dict[str, str] = {
    "time_below_54": "< 54 mg/dL",
    "time_below_70": "< 70 mg/dL",
    "time_in_range": "70–180 mg/dL",
    "time_above_180": "> 180 mg/dL",
    "time_above_250": "> 250 mg/dL",
}

#: Consensus data sufficiency: at least 14 days with at least 70 % of readings present.
MIN_DAYS = 14.0
MIN_SUFFICIENCY = 0.70

#: Consensus targets for most adults with type-1 or type-2 diabetes (Battelino 2019):
#: metric -> (direction, limit); shares as fractions.
TARGETS: dict[str, tuple[str, float]] = {
    "days": (">=", MIN_DAYS),
    "data_sufficiency": (">=", MIN_SUFFICIENCY),
    "time_below_54": ("<", 0.01),
    "time_below_70": ("<", 0.04),
    "time_in_range": (">", 0.70),
    "time_above_180": ("<", 0.25),
    "time_above_250": ("<", 0.05),
    "cv": ("<=", 0.36),
}

#: GMI (%) = GMI_INTERCEPT + GMI_SLOPE × mean glucose (mg/dL), Bergenstal 2018.
GMI_INTERCEPT = 3.31
GMI_SLOPE = 0.02392

AGP_PERCENTILES = (5, 25, 50, 75, 95)
AGP_COLUMNS = tuple(f"p{p}" for p in AGP_PERCENTILES)

COLUMNS = [
    "days",
    "readings",
    "data_sufficiency",
    "sufficient_data",
    "mean_mgdl",
    "sd_mgdl",
    "gmi_percent",
    "cv",
    "cv_above_36",
    *RANGES,
]


def glycemia_metrics(
    times: Sequence[Any] | np.ndarray | pd.Series, cgm: np.ndarray | pd.Series, sample_minutes: int
) -> dict[str, Any]:
    """The consensus metrics of one person's readings on a `sample_minutes` grid (`times`
    are the grid's slots, NaN `cgm` where no reading); None where there is no data for one."""
    values = np.asarray(cgm, dtype=float)
    present = values[np.isfinite(values)]
    possible = _possible_readings(pd.to_datetime(pd.Series(times)), sample_minutes)
    days = possible * sample_minutes / 1440
    return _metrics(present, possible) | {
        "days": days,
        "sufficient_data": (
            None
            if possible == 0
            else bool(days >= MIN_DAYS and len(present) / possible >= MIN_SUFFICIENCY)
        ),
    }


def glycemia_table(readings: pd.DataFrame, sample_minutes: int) -> pd.DataFrame:
    """One row per person (`patient_id`, in order of appearance) of `readings` (columns
    patient_id, time, cgm; one person's rows in time order) with the columns of COLUMNS."""
    rows = [
        {"patient_id": patient} | glycemia_metrics(rows["time"], rows["cgm"], sample_minutes)
        for patient, rows in readings.groupby("patient_id", sort=False)
    ]
    return pd.DataFrame(rows, columns=["patient_id", *COLUMNS])


def pooled_glycemia(readings: pd.DataFrame, sample_minutes: int) -> dict[str, Any]:
    """The metrics of every reading of every person pooled (each reading weighs the same):
    the cohort's summary. Days are person-days; sufficiency is judged per person only."""
    present = readings["cgm"].to_numpy(dtype=float)
    present = present[np.isfinite(present)]
    possible = sum(
        _possible_readings(pd.to_datetime(rows["time"]), sample_minutes)
        for _, rows in readings.groupby("patient_id", sort=False)
    )
    return _metrics(present, possible) | {
        "days": possible * sample_minutes / 1440,
        "sufficient_data": None,
        "people": int(readings["patient_id"].nunique()),
    }


def agp_profile(
    times: Sequence[Any] | np.ndarray | pd.Series,
    cgm: np.ndarray | pd.Series,
    step_minutes: int = 15,
    window_minutes: int = 60,
    min_readings: int = 5,
) -> pd.DataFrame:
    """The ambulatory glucose profile: every `step_minutes` of the (wall-clock) day, the 5th,
    25th, 50th, 75th and 95th percentile (numpy's linear interpolation) of the readings of
    all days whose time of day lies within the `window_minutes` around it — an hourly
    smoothing by default, so a few days already give a readable profile. Rows: `minute`
    (the centre, minutes after midnight), `readings`, p5 … p95 (NaN when fewer than
    `min_readings`, so the plot leaves a gap rather than inventing a band)."""
    if 1440 % step_minutes or window_minutes < step_minutes:
        raise ValueError("step_minutes must divide a day and window_minutes be >= step_minutes")
    clock = pd.to_datetime(pd.Series(times)).reset_index(drop=True)
    values = np.asarray(cgm, dtype=float)
    keep = np.isfinite(values)
    minute = (clock.dt.hour * 60 + clock.dt.minute + clock.dt.second / 60).to_numpy()[keep]
    values = values[keep]
    centres = np.arange(0, 1440, step_minutes) + step_minutes / 2
    rows = []
    for centre in centres:
        # the window [centre - w/2, centre + w/2), wrapping round midnight
        inside = values[(minute - centre + window_minutes / 2) % 1440 < window_minutes]
        row = {"minute": centre, "readings": len(inside)}
        enough = len(inside) >= min_readings
        quantiles = np.percentile(inside, AGP_PERCENTILES) if enough else [np.nan] * 5
        row.update(zip(AGP_COLUMNS, quantiles, strict=True))
        rows.append(row)
    return pd.DataFrame(rows)


def meets_target(metric: str, value: float | None) -> bool | None:
    """Whether `value` meets the consensus target of `metric` (None: no value or target)."""
    if metric not in TARGETS or value is None or not math.isfinite(value):
        return None
    direction, limit = TARGETS[metric]
    return {"<": value < limit, ">": value > limit, "<=": value <= limit, ">=": value >= limit}[
        direction
    ]


def _possible_readings(times: pd.Series, sample_minutes: int) -> int:
    """Grid slots from the first to the last row (present or missing) of one person."""
    if len(times) == 0:
        return 0
    span = (times.iloc[-1] - times.iloc[0]) / pd.Timedelta(minutes=sample_minutes)
    return round(span) + 1


def _metrics(present: np.ndarray, possible: int) -> dict[str, Any]:
    n = len(present)
    mean = float(present.mean()) if n else None
    sd = float(present.std(ddof=1)) if n > 1 else None
    cv = sd / mean if sd is not None and mean else None

    def share(mask: np.ndarray) -> float | None:
        return float(mask.mean()) if n else None

    return {
        "readings": n,
        "data_sufficiency": n / possible if possible else None,
        "mean_mgdl": mean,
        "sd_mgdl": sd,
        "gmi_percent": GMI_INTERCEPT + GMI_SLOPE * mean if mean is not None else None,
        "cv": cv,
        "cv_above_36": None if cv is None else bool(cv > TARGETS["cv"][1]),
        "time_below_54": share(present < 54),
        "time_below_70": share(present < 70),
        "time_in_range": share((present >= 70) & (present <= 180)),
        "time_above_180": share(present > 180),
        "time_above_250": share(present > 250),
    }
