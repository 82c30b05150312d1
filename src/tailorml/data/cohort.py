"""Load and validate a cohort file: one row per individual and CGM reading.

A cohort is the plain-data boundary of tailorml (schema in `tailorml.data.schema` and the
README). Loading checks everything a later step relies on and fails with a message that
names the file, the column and the fix. Documented handling rather than errors:

- an empty (NaN) `cgm` is a missing reading; windows touching it are dropped and counted;
- timestamps are snapped to the cohort's sampling grid (its median interval) and absent
  grid slots become missing readings; two readings in one slot keep the first, counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tailorml.data.schema import OPTIONAL_COLUMNS, PLAUSIBLE_CGM_MGDL, REQUIRED_COLUMNS
from tailorml.errors import CohortError

DEFAULT_COHORT_NAME = "virtual_t1d_cohort.parquet"
MMOL_TO_MGDL = 18.016


def default_cohort_path() -> Path:
    """The synthetic virtual cohort shipped inside the package."""
    return Path(str(files("tailorml") / "data" / "default_cohort" / DEFAULT_COHORT_NAME))


@dataclass(frozen=True)
class Individual:
    id: str
    group: str
    traits: dict[str, float] = field(default_factory=dict)


@dataclass
class Cohort:
    """Readings on a regular grid per individual (missing readings are NaN rows)."""

    readings: pd.DataFrame
    sample_minutes: int
    individuals: list[Individual]
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [individual.id for individual in self.individuals]

    @property
    def synthetic(self) -> bool:
        return bool(self.metadata.get("synthetic", False))

    def of(self, individual_id: str) -> pd.DataFrame:
        if individual_id not in self.ids:
            raise CohortError(
                f"individual {individual_id!r} is not in {self.source}; "
                f"valid ids: {', '.join(self.ids)}"
            )
        return self.readings[self.readings["patient_id"] == individual_id]

    def individual(self, individual_id: str) -> Individual:
        self.of(individual_id)
        return next(item for item in self.individuals if item.id == individual_id)


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise CohortError(f"cohort file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path)
    except Exception as error:  # the reader's own message, with the file named
        raise CohortError(f"cannot read cohort file {path}: {error}") from None
    raise CohortError(f"cohort file {path} must be .parquet or .csv, not '{suffix}'")


def _parse_time(frame: pd.DataFrame, path: Path) -> pd.Series:
    times = frame["time"]
    if not pd.api.types.is_datetime64_any_dtype(times):
        parsed = pd.to_datetime(times, errors="coerce", format="mixed")
        bad = parsed.isna() & times.notna()
        if times.isna().any() or bad.any():
            row = int(np.flatnonzero((bad | times.isna()).to_numpy())[0])
            raise CohortError(
                f"{path}: column 'time' has a value that is not a timestamp "
                f"(row {row}: {times.iloc[row]!r}); use ISO 8601 like 2025-01-06T07:30:00"
            )
        times = parsed
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_localize(None)  # keep local wall-clock time
    return times.astype("datetime64[ns]")


def _check_cgm(frame: pd.DataFrame, path: Path) -> pd.Series:
    cgm = pd.to_numeric(frame["cgm"], errors="coerce")
    text = cgm.isna() & frame["cgm"].notna()
    if text.any():
        row = int(np.flatnonzero(text.to_numpy())[0])
        raise CohortError(
            f"{path}: column 'cgm' has non-numeric values ({int(text.sum())} rows, first at "
            f"row {row}: {frame['cgm'].iloc[row]!r}); replace device codes like 'Low'/'High' "
            "by numbers in mg/dL or leave the cell empty for a missing reading"
        )
    low, high = PLAUSIBLE_CGM_MGDL
    finite = cgm.dropna()
    if len(finite) and finite.median() < 35:
        raise CohortError(
            f"{path}: column 'cgm' looks like mmol/L (median {finite.median():.1f}); "
            f"tailorml expects mg/dL: multiply by {MMOL_TO_MGDL}"
        )
    impossible = cgm.notna() & ((cgm < low) | (cgm > high))
    if impossible.any():
        row = int(np.flatnonzero(impossible.to_numpy())[0])
        raise CohortError(
            f"{path}: column 'cgm' has {int(impossible.sum())} impossible glucose values "
            f"outside {low:g}-{high:g} mg/dL (first: row {row}, patient "
            f"{frame['patient_id'].iloc[row]!r}, value {cgm.iloc[row]:g}); fix or blank them"
        )
    return cgm.astype(float)


def _check_monotonic(frame: pd.DataFrame, path: Path) -> None:
    same_patient = frame["patient_id"].to_numpy()[1:] == frame["patient_id"].to_numpy()[:-1]
    steps = np.diff(frame["time"].to_numpy()).astype("timedelta64[s]").astype(np.int64)
    bad = np.flatnonzero(same_patient & (steps <= 0))
    if len(bad):
        row = int(bad[0]) + 1
        kind = "repeats" if steps[bad[0]] == 0 else "goes back in time"
        raise CohortError(
            f"{path}: column 'time' {kind} for patient {frame['patient_id'].iloc[row]!r} at "
            f"row {row} ({frame['time'].iloc[row - 1]} then {frame['time'].iloc[row]}); "
            "sort the file by patient_id then time and remove duplicate readings"
        )
    starts = pd.Series(frame["patient_id"]).ne(pd.Series(frame["patient_id"]).shift())
    if starts.sum() != frame["patient_id"].nunique():
        raise CohortError(
            f"{path}: the rows of a patient are not contiguous; sort the file by patient_id "
            "then time"
        )


def _sample_minutes(frame: pd.DataFrame, path: Path) -> int:
    steps = frame.groupby("patient_id", sort=False)["time"].diff().dropna()
    if steps.empty:
        raise CohortError(f"{path}: every patient needs at least two readings")
    minutes = steps.median().total_seconds() / 60.0
    rounded = round(minutes)
    if rounded < 1 or abs(minutes - rounded) > 0.25:
        raise CohortError(
            f"{path}: cannot infer a whole-minute sampling interval (median {minutes:.2f} min)"
        )
    return int(rounded)


def _regular_grid(frame: pd.DataFrame, sample_minutes: int) -> tuple[pd.DataFrame, dict]:
    """Snap times to the grid and insert empty rows for absent readings."""
    step = pd.Timedelta(minutes=sample_minutes)
    pieces = []
    notes = {"snapped_duplicates_dropped": 0, "missing_slots_inserted": 0}
    for patient, rows in frame.groupby("patient_id", sort=False):
        origin = rows["time"].iloc[0]
        slot = ((rows["time"] - origin) / step).round().astype(np.int64)
        duplicated = slot.duplicated(keep="first")
        notes["snapped_duplicates_dropped"] += int(duplicated.sum())
        rows = rows.loc[~duplicated.to_numpy()].copy()
        slot = slot.loc[~duplicated.to_numpy()]
        full = np.arange(int(slot.iloc[-1]) + 1)
        rows.index = slot.to_numpy()
        rows = rows.reindex(full)
        notes["missing_slots_inserted"] += int(len(full) - len(slot))
        rows["patient_id"] = patient
        rows["time"] = origin + full * step
        for column in rows.columns:
            if column not in ("cgm", "bg", "cho", "insulin") and rows[column].isna().any():
                rows[column] = rows[column].ffill().bfill()
        pieces.append(rows)
    return pd.concat(pieces, ignore_index=True), notes


def load_cohort(
    path: str | Path | None = None,
    individuals: list[str] | None = None,
    max_days: float | None = None,
) -> Cohort:
    """Load, validate and regularise a cohort file (default: the shipped synthetic cohort)."""
    path = Path(path) if path else default_cohort_path()
    frame = _read_table(path)
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise CohortError(
            f"{path}: missing required column(s) {', '.join(missing)}; the file has "
            f"{', '.join(map(str, frame.columns))}. Required: {', '.join(REQUIRED_COLUMNS)} "
            f"(optional: {', '.join(OPTIONAL_COLUMNS)}); see README 'Cohort file schema'"
        )
    if frame.empty:
        raise CohortError(f"{path}: the file has no rows")
    if frame["patient_id"].isna().any():
        row = int(np.flatnonzero(frame["patient_id"].isna().to_numpy())[0])
        raise CohortError(f"{path}: column 'patient_id' is empty at row {row}")
    frame = frame.copy()
    frame["patient_id"] = frame["patient_id"].astype(str)
    frame["time"] = _parse_time(frame, path)
    frame["cgm"] = _check_cgm(frame, path)
    for column in ("bg", "cho", "insulin"):
        if column in frame.columns:
            values = pd.to_numeric(frame[column], errors="coerce")
            if (values.isna() & frame[column].notna()).any():
                raise CohortError(f"{path}: column '{column}' must be numeric")
            if column != "bg" and (values < 0).any():
                raise CohortError(f"{path}: column '{column}' has negative amounts")
            frame[column] = values.astype(float)
    if "group" not in frame.columns:
        frame["group"] = "unknown"
    frame["group"] = frame["group"].fillna("unknown").astype(str)
    _check_monotonic(frame, path)

    if individuals:
        unknown = sorted(set(individuals) - set(frame["patient_id"]))
        if unknown:
            raise CohortError(
                f"{path}: unknown individual(s) {', '.join(unknown)}; the file has "
                f"{', '.join(frame['patient_id'].unique())}"
            )
        frame = frame[frame["patient_id"].isin(individuals)]
    sample_minutes = _sample_minutes(frame, path)
    frame, notes = _regular_grid(frame, sample_minutes)
    if max_days is not None:
        first = frame.groupby("patient_id", sort=False)["time"].transform("min")
        frame = frame[frame["time"] < first + pd.Timedelta(days=max_days)].reset_index(drop=True)

    known = {"patient_id", "time", "cgm", "group", "bg", "cho", "insulin"}
    trait_columns = [
        column
        for column in frame.columns
        if column not in known and pd.api.types.is_numeric_dtype(frame[column])
    ]
    people = []
    for patient, rows in frame.groupby("patient_id", sort=False):
        traits = {
            column: float(rows[column].iloc[0])
            for column in trait_columns
            if rows[column].nunique(dropna=False) == 1
        }
        people.append(Individual(str(patient), str(rows["group"].iloc[0]), traits))
    metadata_file = path.with_suffix(".json")
    metadata = json.loads(metadata_file.read_text()) if metadata_file.exists() else {}
    return Cohort(frame, sample_minutes, people, str(path), metadata, notes)
