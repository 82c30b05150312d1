"""The report's clinical CGM summary: the consensus metrics of the evaluated readings per
person and pooled, cells that miss a consensus target flagged, and the ambulatory glucose
profile of the cohort and of the traced person.

The metrics are computed by `tailorml.data.glycemia` only; this module reads what the job
stored (glycemia.csv, metrics.json → glycemia) and formats it, so the report section stays
one call and one template include. A run written before glycemia.csv existed gets the same
numbers from its test_readings.parquet.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import pandas as pd

from tailorml.data.glycemia import (
    MIN_DAYS,
    MIN_SUFFICIENCY,
    RANGES,
    agp_profile,
    glycemia_table,
    meets_target,
    pooled_glycemia,
)
from tailorml.evaluate import plots

#: column -> (header, consensus target as text, format of the shown number)
SHOWN: dict[str, tuple[str, str, str]] = {
    "days": ("days", f"≥\u00a0{MIN_DAYS:g}", "{:.1f}"),
    "data_sufficiency": (
        "readings present",
        f"≥\u00a0{100 * MIN_SUFFICIENCY:.0f}\u00a0%",
        "{:.0%}",
    ),
    "mean_mgdl": ("mean (mg/dL)", "", "{:.0f}"),
    "gmi_percent": ("GMI (%)", "", "{:.1f}"),
    "cv": ("CV", "≤\u00a036\u00a0%", "{:.1%}"),
    "time_below_54": (RANGES["time_below_54"], "<\u00a01\u00a0%", "{:.1%}"),
    "time_below_70": (RANGES["time_below_70"], "<\u00a04\u00a0%", "{:.1%}"),
    "time_in_range": (RANGES["time_in_range"], ">\u00a070\u00a0%", "{:.0%}"),
    "time_above_180": (RANGES["time_above_180"], "<\u00a025\u00a0%", "{:.0%}"),
    "time_above_250": (RANGES["time_above_250"], "<\u00a05\u00a0%", "{:.1%}"),
}


def cgm_summary(
    run_dir: Path, readings: pd.DataFrame, patient: str | None, metrics: dict[str, Any]
) -> dict[str, Any]:
    """The template context of the section: headers, formatted rows (pooled first), the AGP
    image (cohort, and `patient` when they have readings); labelled synthetic if it is."""
    sample_minutes = metrics["cohort"]["sample_minutes"]
    stored = run_dir / "glycemia.csv"
    table = (
        pd.read_csv(stored, dtype={"patient_id": str})
        if stored.is_file()
        else glycemia_table(readings, sample_minutes)
    )
    pooled = metrics.get("glycemia") or pooled_glycemia(readings, sample_minutes)
    synthetic = " (synthetic data)" if metrics["synthetic"] else ""
    panels = [
        (
            agp_profile(readings["time"], readings["cgm"]),
            f"all {pooled['people']} people pooled{synthetic}",
        )
    ]
    mine = readings[readings["patient_id"] == patient]
    if patient is not None and mine["cgm"].notna().any():
        panels.append((agp_profile(mine["time"], mine["cgm"]), f"{patient}{synthetic}"))
    png = plots.agp_figure(panels)
    return {
        "headers": [(label, target) for label, target, _ in SHOWN.values()],
        "pooled": _cells(pooled, pooled=True),
        "people": int(pooled["people"]),
        "rows": [(row["patient_id"], _cells(row)) for row in table.to_dict("records")],
        "agp": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        "agp_patient": patient if len(panels) > 1 else None,
    }


def _cells(row: dict[str, Any], pooled: bool = False) -> list[tuple[str, bool]]:
    """(text, misses its consensus target) per shown column; "–" where there is no value.
    The pooled row's days are person-days, which the 14-day target does not apply to."""
    cells = []
    for column, (_, _, style) in SHOWN.items():
        value = _value(row.get(column))
        if value is None:
            cells.append(("–", False))
        else:
            judged = not (pooled and column == "days")
            cells.append((style.format(value), judged and meets_target(column, value) is False))
    return cells


def _value(value: Any) -> Any:
    """None for a missing value (None, NaN from a CSV, or a non-finite number)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value
