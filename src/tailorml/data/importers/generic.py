"""Any CSV with a time column and a glucose column (`--format csv` and the mapping options).

Options: `time_column` (default `time`), `glucose_column` (default `cgm`), `id_column`
(optional; rows of several people in one file), `units` (`mgdl` or `mmol`; a mg/dL column
whose median is below 35 is refused as mmol/L), `dayfirst` (for dates such as 05/01/2024),
optional `carbs_column` and `insulin_column` (amounts at the row's time). Times are read
as local wall time; a time with an offset (`...+01:00`) keeps its wall-clock part. `Low`/
`High` text is handled as in the Clarity importer. Blank glucose cells are missing readings.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from tailorml.data.importers.common import (
    SEPARATOR_NAMES,
    ImportedReadings,
    OutOfRange,
    amounts_of,
    columns_shape,
    empty_events,
    events_frame,
    header_line,
    is_known_label,
    read_source,
    readings_frame,
    sensor_codes,
    split_fields,
    to_mgdl,
    value_shape,
    wall_times,
)
from tailorml.errors import CohortError

FORMAT = "csv"
UNITS = {"mgdl": "mg/dL", "mmol": "mmol/L"}


AMBIGUOUS_DATES = (
    "{name}: column {column!r} has dates that read both day-first and month-first (e.g. "
    "{value}); pass --dayfirst or --monthfirst, or write ISO 8601 like 2024-01-05T08:15:00"
)


def parse(
    source: str | Path,
    time_column: str = "time",
    glucose_column: str = "cgm",
    id_column: str | None = None,
    units: str = "mgdl",
    dayfirst: bool | None = None,
    carbs_column: str | None = None,
    insulin_column: str | None = None,
    out_of_range: OutOfRange = "limits",
) -> ImportedReadings:
    text, name, digest = read_source(source)
    if units not in UNITS:
        raise CohortError(f"--units must be one of {', '.join(UNITS)}, not {units!r}")
    # the separator is the header's: comma, semicolon (Excel in EU locales, which also
    # writes decimal commas: read by sensor_codes/amounts_of) or tab
    named, separator = split_fields(header_line(text))
    named = [c.strip() for c in named]
    try:
        frame = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, index_col=False, sep=separator
        )
    except Exception as error:
        raise CohortError(f"{name}: cannot read as CSV: {error}") from None
    wanted = {
        "--time-column": time_column,
        "--glucose-column": glucose_column,
        "--id-column": id_column,
        "--carbs-column": carbs_column,
        "--insulin-column": insulin_column,
    }
    repeated = sorted({c for c in named if c and named.count(c) > 1})
    if repeated:  # pandas would rename the second one and read the first silently
        shown = next((c for c in repeated if is_known_label(c) or c in wanted.values()), None)
        which = repr(shown) if shown else f"number {named.index(repeated[0]) + 1}"
        raise CohortError(
            f"{name}: column {which} appears more than once in the header; rename one"
        )
    frame.columns = [c.strip() for c in frame.columns]
    for option, column in wanted.items():
        if column is not None and column not in frame.columns:
            raise CohortError(
                f"{name}: no column {column!r} ({option}); the header "
                f"({SEPARATOR_NAMES[separator]}-separated) has "
                f"{columns_shape(frame.columns, wanted.values())}"
            )
    if frame.empty:
        raise CohortError(f"{name}: the CSV has a header but no rows")
    stamps = frame[time_column].str.strip()
    times = wall_times(stamps, bool(dayfirst))
    # a value that is no time at all is named first: it also makes ISO 8601 times read
    # differently day-first, which would be reported as ambiguous dates
    if times.isna().any():
        row = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise CohortError(
            f"{name}: column {time_column!r} has a value that is not a time (data row "
            f"{row + 1}: {value_shape(stamps.iloc[row])}; {int(times.isna().sum())} rows); use "
            "ISO 8601 like 2024-01-05T08:15:00"
        )
    if dayfirst is None and not times.equals(wall_times(stamps, True)):
        row = int(np.flatnonzero((times != wall_times(stamps, True)).to_numpy())[0])
        raise CohortError(
            AMBIGUOUS_DATES.format(
                name=name, column=time_column, value=value_shape(stamps.iloc[row])
            )
        )
    notes: dict[str, int] = {}
    raw = frame[glucose_column].str.strip()
    numeric, codes = sensor_codes(raw, out_of_range, notes)
    blank = raw.eq("")
    notes["blank_glucose_cells"] = int(blank.sum())
    bad = numeric.isna() & ~blank & ~raw.str.lower().isin({"low", "high", "lo", "hi"})
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise CohortError(
            f"{name}: column {glucose_column!r} has non-numeric values ({int(bad.sum())} rows, "
            f"first in data row {row + 1}: {value_shape(raw.iloc[row])}); fix them or leave "
            "the cells blank"
        )
    fix = "pass --units mmol"
    values = to_mgdl(numeric, UNITS[units], name, glucose_column, fix).where(codes.isna(), codes)
    person = frame[id_column].str.strip() if id_column else ""
    if id_column and person.eq("").any():
        raise CohortError(
            f"{name}: column {id_column!r} (--id-column) is empty in {int(person.eq('').sum())} "
            "rows; fill them or drop those rows (they would become a person of their own)"
        )
    readings = readings_frame(times, values, person)
    events = [empty_events()]
    for column, kind in ((carbs_column, "cho"), (insulin_column, "insulin")):
        if column:
            amounts = amounts_of(frame[column], kind, notes)
            events.append(events_frame(times, kind, amounts, person, notes=notes))
    return ImportedReadings(
        format=FORMAT,
        source=name,
        readings=readings,
        events=pd.concat(events, ignore_index=True),
        notes=notes,
        choices={
            "time_column": time_column,
            "glucose_column": glucose_column,
            "units": UNITS[units],
            "dayfirst": dayfirst,
            "out_of_range": out_of_range,
        },
        native_minutes=5,
        sha256=digest,
    )
