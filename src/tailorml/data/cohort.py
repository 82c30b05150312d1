"""Load and validate a cohort file: one row per individual and CGM reading.

A cohort is the plain-data boundary of tailorml (schema in `tailorml.data.schema` and the
README). Loading checks everything a later step relies on and fails with a message that
names the file, the column and the fix. Documented handling rather than errors:

- an empty (NaN) `cgm` is a missing reading; windows touching it are dropped and counted;
- timestamps are snapped to the cohort's sampling grid (its median interval) and absent
  grid slots become missing readings; two readings in one slot keep the first, counted.

What is refused, and why:

- `patient_id` is always text: "001", "007", "7" and "07.0" are four individuals (CSV ids
  are read as strings, never as numbers);
- text times are ISO 8601, or one format for the whole column; a column that reads as
  both day/month and month/day (01/02/2025) is refused, naming the formats that parse it;
- integer (or float) times are Unix epoch seconds (UTC); milliseconds are refused;
- times with a UTC offset (...+02:00, ...Z, or a tz-aware Parquet column) must be
  increasing in UTC; they then become the local wall time of their offset. At the DST
  fall-back hour the wall clock repeats: the second pass is dropped, counted in
  `local_time_repeats_dropped`; the skipped spring-forward hour is missing readings.
  Mixing times with and without an offset is refused;
- a CSV file is UTF-8, or UTF-8/UTF-16 with a byte-order mark (Excel's "Unicode text");
  other encodings (Latin-1) are refused with the byte that is not UTF-8;
- every individual must have the same sampling interval (a 5-min and a 15-min patient
  cannot share one grid); a mismatch names the individuals and their intervals.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tailorml.data.real import (
    REAL,
    SHIPPED_COHORTS,
    SYNTHETIC,
    is_shipped_name,
    real_cohort_frame,
    shipped_sha256,
)
from tailorml.data.schema import (
    OPTIONAL_COLUMNS,
    PLAUSIBLE_AMOUNTS,
    PLAUSIBLE_CGM_MGDL,
    REQUIRED_COLUMNS,
)
from tailorml.errors import CohortError
from tailorml.io import decode_text

NOT_FINITE = (
    "{path}: column '{column}' has {count} infinite value(s) (first at row {row}); fix them, or "
    "leave the cell empty for a missing value"
)
NOT_UTF8 = (
    "cohort file {path} is not UTF-8 or UTF-16 text (byte {position} is not valid UTF-8): save "
    "it as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
)
DEFAULT_COHORT_NAME = "virtual_t1d_cohort.parquet"
# what a config or command without a cohort loads: real people first
DEFAULT_COHORT = REAL
MMOL_TO_MGDL = 18.016


# What an error may show of the file's content and of the user's own options (errors reach
# terminals, logs and CI output): an id (the file's patient_id, or one the user asked for)
# escaped and at most ID_SHOWN characters, a list of ids at most IDS_SHOWN of them; any
# other cell (a time, a glucose value) only when it looks like a number, a time or a
# sensor's LOW/HIGH, else described by its length (a misread cell can hold a name).
ID_SHOWN = 40
IDS_SHOWN = 20
_TIME_OR_NUMBER = re.compile(r"^[\d\s:./,+-]*\d[\d\s:./,+-]*(T[\d:.,+-]+)?\s*(AM|PM|am|pm|Z)?$")
_CODES = frozenset({"low", "high", "lo", "hi"})


def quoted_id(value: Any) -> str:
    """An id as an error quotes it: repr-escaped, cut at ID_SHOWN characters."""
    text = str(value)
    return repr(text) if len(text) <= ID_SHOWN else f"{text[:ID_SHOWN]!r}…"


def listed_ids(values) -> str:
    """Ids as an error lists them: plain when short and printable, else escaped and cut;
    at most IDS_SHOWN, then how many more."""
    values = [str(value) for value in values]
    shown = [
        value if len(value) <= ID_SHOWN and value.isprintable() else quoted_id(value)
        for value in values[:IDS_SHOWN]
    ]
    more = f" and {len(values) - IDS_SHOWN:,} more" if len(values) > IDS_SHOWN else ""
    return ", ".join(shown) + more


def cell_shape(value: Any) -> str:
    """A time or glucose cell as an error shows it: quoted when it looks like a number, a
    time or a sensor's LOW/HIGH; other text described by its length, never echoed."""
    text = str(value).strip()
    if text.lower() in _CODES or (len(text) <= 40 and _TIME_OR_NUMBER.match(text)):
        return repr(text)
    return f"<{len(text):,} characters of text, not shown>" if text else "<an empty cell>"


def default_cohort_path() -> Path:
    """The synthetic virtual cohort shipped inside the package."""
    return Path(str(files("tailorml") / "data" / "default_cohort" / DEFAULT_COHORT_NAME))


@dataclass(frozen=True)
class Individual:
    id: str
    group: str
    traits: dict[str, float] = field(default_factory=dict)  # numeric, constant per person
    # any other text column constant per person (e.g. sex, sensor model): a categorical trait
    # the fairness tables disaggregate by, like the age group
    categories: dict[str, str] = field(default_factory=dict)


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

    def is_synthetic(self, individual_id: str) -> bool:
        """Whether this individual's readings are simulated: a synthetic cohort may carry
        real people (`real_individuals`), e.g. the service's uploads beside the shipped
        general data, whose own figures must not be called simulated."""
        return self.synthetic and individual_id not in self.metadata.get("real_individuals", [])

    def of(self, individual_id: str) -> pd.DataFrame:
        if individual_id not in self.ids:
            raise CohortError(
                f"individual {quoted_id(individual_id)} is not in {self.source}; "
                f"valid ids: {listed_ids(self.ids)}"
            )
        return self.readings[self.readings["patient_id"] == individual_id]

    def individual(self, individual_id: str) -> Individual:
        self.of(individual_id)
        return next(item for item in self.individuals if item.id == individual_id)

    def subset(self, individual_ids: list[str]) -> Cohort:
        """The same cohort restricted to these individuals (in the cohort's order)."""
        for individual_id in individual_ids:
            self.of(individual_id)  # an unknown id is a clear error, not an empty cohort
        chosen = set(individual_ids)
        readings = self.readings[self.readings["patient_id"].isin(chosen)]
        people = [person for person in self.individuals if person.id in chosen]
        return Cohort(
            readings.reset_index(drop=True),
            self.sample_minutes,
            people,
            self.source,
            self.metadata,
            self.notes,
        )

    def category(self, name: str) -> dict[str, str | None]:
        """Each individual's value of a categorical trait (None where it has none)."""
        return {person.id: person.categories.get(name) for person in self.individuals}


def _schema_columns(columns) -> str:
    """The file's columns for an error: those of the cohort schema by name, the others only
    counted — a raw export given as a cohort has its preamble (a person's name, a serial) in
    the header row, and that must not reach a terminal or a log."""
    schema = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    known = [str(column) for column in columns if str(column) in schema]
    others = len(columns) - len(known)
    named = ", ".join(known) if known else "none of the schema's columns"
    return named + (f" and {others} other column(s), not shown" if others else "")


def _read_table(path: Path) -> pd.DataFrame:
    try:
        exists = path.exists()
    except OSError as error:  # e.g. a name longer than the file system allows
        raise CohortError(
            f"cannot use {str(path)[:80]}… as a cohort file: {error.strerror}"
        ) from None
    if not exists:
        hint = f" (a shipped cohort is one of {', '.join(SHIPPED_COHORTS)})" * (not path.suffix)
        raise CohortError(f"cohort file not found: {path}{hint}")
    if path.is_dir():
        raise CohortError(f"cohort file {path} is a directory; give a .parquet or .csv file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".csv":  # ids and groups are text: "001" must not become 1
            text = decode_text(path.read_bytes())  # UTF-8, or UTF-8/16 with a BOM
            return pd.read_csv(io.StringIO(text), dtype={"patient_id": str, "group": str})
    except UnicodeDecodeError as error:
        raise CohortError(NOT_UTF8.format(path=path, position=error.start)) from None
    except Exception as error:  # the reader's own message, with the file named
        raise CohortError(f"cannot read cohort file {path}: {error}") from None
    raise CohortError(f"cohort file {path} must be .parquet or .csv, not '{suffix}'")


EPOCH_SECONDS = (1e8, 1e10)  # 1973-03 .. 2286-11: plausible Unix times in seconds
_OFFSET = r"(?:Z|[+-]\d\d:?\d\d)$"
_DATES = ("%d/%m/%Y", "%m/%d/%Y", "%d-%m-%Y", "%m-%d-%Y", "%d.%m.%Y", "%d/%m/%y", "%m/%d/%y")
_CLOCKS = (" %H:%M:%S", " %H:%M", " %I:%M:%S %p", " %I:%M %p", "T%H:%M:%S", "T%H:%M", "")
TIME_FORMATS = tuple(date + clock for date in _DATES for clock in _CLOCKS)
AMBIGUOUS_DATES = (
    "{path}: column 'time' is ambiguous: it parses as {formats}, which give different dates "
    "(e.g. row {row}: {value!r}); write ISO 8601 like 2025-01-06T07:30:00"
)


def _bad_time(path: str | Path, times: pd.Series, parsed: pd.Series) -> CohortError:
    bad = (parsed.isna() & times.notna()) | times.isna()
    row = int(np.flatnonzero(bad.to_numpy())[0])
    return CohortError(
        f"{path}: column 'time' has a value that is not a timestamp "
        f"(row {row}: {cell_shape(times.iloc[row])}); use ISO 8601 like 2025-01-06T07:30:00"
    )


def _parse_text_times(times: pd.Series, path: str | Path) -> pd.Series:
    """One format for the whole column: ISO 8601, else the formats of TIME_FORMATS that
    read every value (refused if they disagree), else pandas' own reading when day-first
    and month-first agree."""
    text = times.astype(str).str.strip()
    aware = text.str.contains(_OFFSET)
    if aware.any() and not aware.all():
        row = int(np.flatnonzero((~aware).to_numpy())[0])
        raise CohortError(
            f"{path}: column 'time' mixes times with and without a UTC offset (row {row}: "
            f"{cell_shape(times.iloc[row])}); give every reading an offset (like +01:00) or none"
        )
    iso = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=bool(aware.any()))
    if iso.notna().all():
        return iso
    readings = {}
    for fmt in TIME_FORMATS:
        parsed = pd.to_datetime(text, format=fmt, errors="coerce")
        if parsed.notna().all():
            readings[fmt] = parsed
    if not readings:
        month_first = pd.to_datetime(text, format="mixed", errors="coerce")
        day_first = pd.to_datetime(text, format="mixed", errors="coerce", dayfirst=True)
        if month_first.isna().any():
            raise _bad_time(path, times, month_first)
        readings = {"month first": month_first, "day first": day_first}
    first = next(iter(readings.values()))
    differ = {name: (values != first) for name, values in readings.items()}
    if not any(mask.any() for mask in differ.values()):
        return first
    # the value parsed as a date in every format: a date, safe to quote
    mask = np.logical_or.reduce([m.to_numpy() for m in differ.values()])
    row = int(np.flatnonzero(mask)[0])
    raise CohortError(
        AMBIGUOUS_DATES.format(
            path=path, formats=" and ".join(readings), row=row, value=times.iloc[row]
        )
    )


def _parse_time(frame: pd.DataFrame, path: str | Path) -> tuple[pd.Series, pd.Series | None]:
    """(local wall-clock times, UTC times or None when the file has no time zone)."""
    times = frame["time"]
    if times.isna().any():
        raise _bad_time(path, times, times)
    if pd.api.types.is_numeric_dtype(times) and not pd.api.types.is_bool_dtype(times):
        low, high = EPOCH_SECONDS
        if times.min() < low or times.max() > high:
            unit = "milliseconds: divide by 1000" if times.max() > high else "not Unix seconds"
            raise CohortError(
                f"{path}: column 'time' holds numbers; they are read as Unix epoch seconds "
                f"(UTC) but range {times.min():g}-{times.max():g} looks like {unit}, "
                "or write ISO 8601 like 2025-01-06T07:30:00"
            )
        times = pd.to_datetime(times, unit="s", utc=True)
    elif not pd.api.types.is_datetime64_any_dtype(times):
        times = _parse_text_times(times, path)
    if getattr(times.dt, "tz", None) is None:
        return times.astype("datetime64[ns]"), None
    utc = times.dt.tz_convert("UTC")
    if frame["time"].dtype == object or pd.api.types.is_string_dtype(frame["time"]):
        # each reading's own offset: its wall time is the time as written
        offsets = frame["time"].astype(str).str.strip().str.extract(r"([+-]\d\d):?(\d\d)$")
        sign = np.where(offsets[0].str.startswith("-"), -1, 1)
        minutes = offsets[0].str[1:].astype(float).fillna(0) * 60 + offsets[1].astype(float).fillna(
            0
        )
        wall = utc.dt.tz_localize(None) + pd.to_timedelta(sign * minutes, unit="min")
    else:  # a tz-aware column: wall time in its zone; epoch seconds: UTC
        wall = times.dt.tz_localize(None)
    return wall.astype("datetime64[ns]"), utc.dt.tz_localize(None).astype("datetime64[ns]")


def _check_finite(frame: pd.DataFrame, path: str | Path) -> None:
    """No inf anywhere in a numeric column (cgm, insulin, cho, traits): an infinite dose or
    trait would silently turn every model output into NaN. Empty cells stay missing."""
    for column in frame.columns:
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        infinite = np.isinf(values.to_numpy(dtype=float))
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0])
            raise CohortError(
                NOT_FINITE.format(path=path, column=column, count=int(infinite.sum()), row=row)
            )


def _check_cgm(frame: pd.DataFrame, path: str | Path) -> pd.Series:
    cgm = pd.to_numeric(frame["cgm"], errors="coerce")
    text = cgm.isna() & frame["cgm"].notna()
    if text.any():
        row = int(np.flatnonzero(text.to_numpy())[0])
        raise CohortError(
            f"{path}: column 'cgm' has non-numeric values ({int(text.sum())} rows, first at "
            f"row {row}: {cell_shape(frame['cgm'].iloc[row])}); replace device codes like "
            "'Low'/'High' by numbers in mg/dL or leave the cell empty for a missing reading"
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
            f"{quoted_id(frame['patient_id'].iloc[row])}, value {cgm.iloc[row]:g}); fix or "
            "blank them"
        )
    return cgm.astype(float)


def _check_monotonic(frame: pd.DataFrame, path: str | Path, column: str = "time") -> None:
    same_patient = frame["patient_id"].to_numpy()[1:] == frame["patient_id"].to_numpy()[:-1]
    steps = np.diff(frame[column].to_numpy()).astype("timedelta64[s]").astype(np.int64)
    bad = np.flatnonzero(same_patient & (steps <= 0))
    if len(bad):
        row = int(bad[0]) + 1
        kind = "repeats" if steps[bad[0]] == 0 else "goes back in time"
        raise CohortError(
            f"{path}: column 'time' {kind}{' (in UTC)' if column != 'time' else ''} for patient "
            f"{quoted_id(frame['patient_id'].iloc[row])} at row {row} "
            f"({frame[column].iloc[row - 1]} "
            f"then {frame[column].iloc[row]}); "
            "sort the file by patient_id then time and remove duplicate readings"
        )
    starts = pd.Series(frame["patient_id"]).ne(pd.Series(frame["patient_id"]).shift())
    if starts.sum() != frame["patient_id"].nunique():
        raise CohortError(
            f"{path}: the rows of a patient are not contiguous; sort the file by patient_id "
            "then time"
        )


MIXED_SAMPLING = (
    "{path}: individuals are sampled at different intervals ({groups}); tailorml needs one "
    "grid per cohort: resample them to one interval or load them as separate cohorts"
)


def _sample_minutes(frame: pd.DataFrame, path: str | Path) -> int:
    """The sampling interval: the median step of each individual, which must agree."""
    steps = frame.groupby("patient_id", sort=False)["time"].diff()
    medians = steps.groupby(frame["patient_id"], sort=False).median()
    if medians.isna().any():
        alone = list(medians.index[medians.isna()])
        lone = ", ".join(map(quoted_id, alone[:IDS_SHOWN]))
        lone += f" and {len(alone) - IDS_SHOWN:,} more" if len(alone) > IDS_SHOWN else ""
        raise CohortError(f"{path}: every patient needs at least two readings (not {lone})")
    intervals: dict[int, list[str]] = {}
    for patient, median in medians.items():
        minutes = median.total_seconds() / 60.0
        rounded = round(minutes)
        if rounded < 1 or abs(minutes - rounded) > 0.25:
            raise CohortError(
                f"{path}: cannot infer a whole-minute sampling interval for patient "
                f"{quoted_id(patient)} (median {minutes:.2f} min)"
            )
        intervals.setdefault(int(rounded), []).append(str(patient))
    if len(intervals) > 1:
        groups = "; ".join(
            f"{minutes} min: {listed_ids(ids)}" for minutes, ids in sorted(intervals.items())
        )
        raise CohortError(MIXED_SAMPLING.format(path=path, groups=groups))
    return next(iter(intervals))


def _drop_local_repeats(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Readings whose wall-clock time does not advance (the DST fall-back hour, once they
    are ordered by UTC): dropped, and counted."""
    latest = frame.groupby("patient_id", sort=False)["time"].cummax()
    previous = latest.groupby(frame["patient_id"], sort=False).shift()
    repeat = (frame["time"] <= previous).to_numpy()
    return frame.loc[~repeat].reset_index(drop=True), int(repeat.sum())


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
    """Load, validate and regularise a cohort: a file, or a shipped cohort by name (`real`,
    `azt1d`, `t1d_uom`, `physiocgm`, `synthetic`; see `tailorml.data.real`); default:
    `DEFAULT_COHORT`."""
    name = str(path) if path else DEFAULT_COHORT
    if is_shipped_name(name) and name != SYNTHETIC:
        frame, metadata = real_cohort_frame(name)
        return cohort_from_frame(frame, name, metadata, individuals, max_days)
    path = default_cohort_path() if name == SYNTHETIC else Path(path)
    frame = _read_table(path)
    metadata = _read_metadata(path.with_suffix(".json"))
    return cohort_from_frame(frame, str(path), metadata, individuals, max_days)


def cohort_sha256(path: str | Path | None) -> str:
    """The content identity of a cohort as `load_cohort` names it: the file's SHA-256, or
    for a shipped real cohort the digest of the files it is built from."""
    from tailorml.io import sha256_file

    name = str(path) if path else DEFAULT_COHORT
    if is_shipped_name(name) and name != SYNTHETIC:
        return shipped_sha256(name)
    return sha256_file(default_cohort_path() if name == SYNTHETIC else Path(path))


def cohort_from_frame(
    frame: pd.DataFrame,
    source: str,
    metadata: dict[str, Any],
    individuals: list[str] | None = None,
    max_days: float | None = None,
) -> Cohort:
    """Validate and regularise a cohort frame read from `source` (named in every message)."""
    path = source
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise CohortError(
            f"{path}: missing required column(s) {', '.join(missing)}; the file has "
            f"{_schema_columns(frame.columns)}. Required: {', '.join(REQUIRED_COLUMNS)} "
            f"(optional: {', '.join(OPTIONAL_COLUMNS)}); see README 'Cohort file schema' "
            "(a raw export: `tailorml cohort import` reads it)"
        )
    if frame.empty:
        raise CohortError(f"{path}: the file has no rows")
    if frame["patient_id"].isna().any():
        row = int(np.flatnonzero(frame["patient_id"].isna().to_numpy())[0])
        raise CohortError(f"{path}: column 'patient_id' is empty at row {row}")
    frame = frame.copy()
    frame["patient_id"] = frame["patient_id"].astype(str)
    blank = frame["patient_id"].str.strip() == ""
    if blank.any():
        row = int(np.flatnonzero(blank.to_numpy())[0])
        raise CohortError(
            f"{path}: column 'patient_id' is blank at row {row}; give every row an id"
        )
    _check_finite(frame, path)
    frame["time"], utc = _parse_time(frame, path)
    frame["cgm"] = _check_cgm(frame, path)
    for column in ("bg", "cho", "insulin"):
        if column in frame.columns:
            values = pd.to_numeric(frame[column], errors="coerce")
            if (values.isna() & frame[column].notna()).any():
                raise CohortError(f"{path}: column '{column}' must be numeric")
            if column != "bg" and (values < 0).any():
                raise CohortError(f"{path}: column '{column}' has negative amounts")
            limit = PLAUSIBLE_AMOUNTS.get(column)
            if limit is not None and (values > limit[0]).any():
                row = int(np.flatnonzero((values > limit[0]).to_numpy())[0])
                raise CohortError(
                    f"{path}: column '{column}' has {values.iloc[row]:g} {limit[1]} in one "
                    f"interval (row {row}, patient {quoted_id(frame['patient_id'].iloc[row])}), "
                    "more "
                    f"than the {limit[0]:g} any person takes at once; fix the export or its units"
                )
            frame[column] = values.astype(float)
    if "group" not in frame.columns:
        frame["group"] = "unknown"
    frame["group"] = frame["group"].fillna("unknown").astype(str)
    repeats = 0
    if utc is None:
        _check_monotonic(frame, path)
    else:  # aware times: ordered in UTC; the wall clock may repeat an hour at DST
        frame["_utc"] = utc
        _check_monotonic(frame, path, "_utc")
        frame, repeats = _drop_local_repeats(frame.drop(columns="_utc"))

    if individuals:
        unknown = sorted(set(individuals) - set(frame["patient_id"]))
        if unknown:
            raise CohortError(
                f"{path}: unknown individual(s) {listed_ids(unknown)}; the file has "
                f"{listed_ids(frame['patient_id'].unique())}"
            )
        frame = frame[frame["patient_id"].isin(individuals)]
    sample_minutes = _sample_minutes(frame, path)
    frame, notes = _regular_grid(frame, sample_minutes)
    notes["local_time_repeats_dropped"] = repeats
    if max_days is not None:
        first = frame.groupby("patient_id", sort=False)["time"].transform("min")
        frame = frame[frame["time"] < first + pd.Timedelta(days=max_days)].reset_index(drop=True)

    known = {"patient_id", "time", "cgm", "group", "bg", "cho", "insulin"}
    extra = [column for column in frame.columns if column not in known]
    trait_columns = [c for c in extra if pd.api.types.is_numeric_dtype(frame[c])]
    category_columns = [
        c
        for c in extra
        if c not in trait_columns and not pd.api.types.is_datetime64_any_dtype(frame[c])
    ]
    people = []
    for patient, rows in frame.groupby("patient_id", sort=False):
        traits = {
            column: float(rows[column].iloc[0])
            for column in trait_columns
            if rows[column].nunique(dropna=False) == 1
        }
        categories = {
            column: str(rows[column].iloc[0])
            for column in category_columns
            if rows[column].nunique(dropna=False) == 1 and pd.notna(rows[column].iloc[0])
        }
        people.append(Individual(str(patient), str(rows["group"].iloc[0]), traits, categories))
    notes = {**metadata.get("counts", {}), **notes} if metadata.get("retrospective") else notes
    return Cohort(frame, sample_minutes, people, source, metadata, notes)


BAD_METADATA = (
    "{path} (the metadata beside the cohort file) {problem}; fix it, or delete it (it is "
    "optional; `cohort simulate`/`cohort import` write it)"
)


def _read_metadata(path: Path) -> dict[str, Any]:
    """The optional JSON object beside a cohort file. Its `synthetic` flag decides whether
    every output says "not clinical evidence", so it must be a real true/false."""
    if not path.exists():
        return {}
    try:
        metadata = json.loads(path.read_bytes().decode("utf-8-sig"))
    except IsADirectoryError:
        raise CohortError(BAD_METADATA.format(path=path, problem="is a folder")) from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        problem = f"is not readable JSON ({error})"
        raise CohortError(BAD_METADATA.format(path=path, problem=problem)) from None
    if not isinstance(metadata, dict):
        problem = f"is a JSON {type(metadata).__name__}, not an object"
        raise CohortError(BAD_METADATA.format(path=path, problem=problem))
    if not isinstance(metadata.get("synthetic", False), bool):
        problem = f'has "synthetic": {metadata["synthetic"]!r}, not true or false'
        raise CohortError(BAD_METADATA.format(path=path, problem=problem))
    real = metadata.get("real_individuals", [])
    if not isinstance(real, list) or not all(isinstance(i, str) for i in real):
        problem = f'has "real_individuals": {real!r}, not a list of individual ids'
        raise CohortError(BAD_METADATA.format(path=path, problem=problem))
    return metadata
