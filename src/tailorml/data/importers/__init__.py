"""Importers: CGM exports people already have -> a tailorml cohort file.

One module per format, each with a pure `parse(path_or_text, ...) -> ImportedReadings`:
`dexcom` (Dexcom Clarity CSV), `libreview` (LibreView CSV), `nightscout` (entries and
treatments JSON), `ohio` (OhioT1DM XML), `tconnect` (Tandem t:connect CSV: CGM, boluses,
carbs, basal), `generic` (any CSV with column mapping). Any of them may be gzip-compressed
(`.gz`; `common.read_source`). The shared
`common` module puts readings on the grid without inventing values, sums carbs and insulin
per interval, de-duplicates overlapping files, pseudonymises ids and builds the metadata;
`import_cohort` here detects formats and writes the cohort atomically. User-facing guide:
docs/importers.md.

Why our own parsers and not `cgm-format` (PyPI, GlucoseDAO, evaluated at 0.13.0): it is
active, MIT and handles Dexcom/Libre/Nightscout quirks, but (1) it is built on polars
(`polars>=1.39`), a second data-frame engine next to pandas for ~600 lines of parsing;
(2) it has no OhioT1DM reader; (3) its Nightscout reader keeps `dateString` as naive UTC and
ignores `utcOffset`, while tailorml needs each reading's local wall time; (4) it converts
mmol/L with 18.0182 (tailorml uses 18.016, `tailorml.data.cohort.MMOL_TO_MGDL`), maps
Low/High to 39/401, and its processing stage interpolates gaps, which tailorml must never
do silently; (5) it does not report the per-file counts (codes, skipped types,
duplicates) that tailorml records beside every cohort. Adapting its output would have
cost as much as the parsers, with a heavy dependency on top, so the parsers are ours,
small, and tested on fixtures written by the tests.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tailorml.data.importers import dexcom, generic, libreview, nightscout, ohio, tconnect
from tailorml.data.importers.common import (
    OUT_OF_RANGE_CHOICES,
    ImportedReadings,
    ImportResult,
    build_cohort,
    header_line,
    line_shape,
    read_source,
    split_fields,
)
from tailorml.errors import CohortError

FORMATS = {
    "dexcom": dexcom,
    "libreview": libreview,
    "nightscout": nightscout,
    "ohio": ohio,
    "tconnect": tconnect,
    "csv": generic,
}
FORMAT_CHOICES = ("auto", *FORMATS)
__all__ = [
    "FORMATS",
    "FORMAT_CHOICES",
    "OUT_OF_RANGE_CHOICES",
    "ImportResult",
    "ImportedReadings",
    "detect_format",
    "import_cohort",
    "parse_file",
]


def detect_format(path: str | Path, csv_options: dict | None = None) -> str:
    """The format of one file, from its content (never from its name)."""
    text, name, _ = read_source(Path(path))
    for key in ("nightscout", "ohio", "dexcom", "libreview", "tconnect"):
        if FORMATS[key].sniff(text):
            return key
    if text.lstrip()[:1] in "[{":
        reason = nightscout.not_records(text)
        if reason is None:
            return "nightscout"
        raise CohortError(f"{name}: {reason}")
    options = csv_options or {}
    columns, _ = split_fields(header_line(text))  # comma, semicolon (Excel, EU) or tab
    columns = [c.strip() for c in columns]
    wanted = [options.get("time_column", "time"), options.get("glucose_column", "cgm")]
    if all(column in columns for column in wanted):
        return "csv"
    # the first line is described, never quoted: it can hold a person's name
    raise CohortError(
        f"{name}: unknown export format ({line_shape(text)}); tried Dexcom Clarity CSV, "
        f"LibreView CSV, Nightscout JSON, OhioT1DM XML, Tandem t:connect CSV and CSV with "
        f"columns {wanted[0]!r}/{wanted[1]!r}. Pass --format, or --time-column/"
        "--glucose-column for a plain CSV"
    )


def parse_file(
    path: str | Path,
    format: str = "auto",
    out_of_range: str = "limits",
    libre_scans: str = "ignore",
    timezone: str | None = None,
    csv_options: dict | None = None,
) -> ImportedReadings:
    """Parse one export (format "auto" detects it) with the options that format takes."""
    if out_of_range not in OUT_OF_RANGE_CHOICES:
        raise CohortError(
            f"--out-of-range must be one of {', '.join(OUT_OF_RANGE_CHOICES)}, not {out_of_range!r}"
        )
    if libre_scans not in ("ignore", "fill"):
        raise CohortError(f"--libre-scans must be ignore or fill, not {libre_scans!r}")
    path = Path(path)
    if not path.exists():
        raise CohortError(f"import file not found: {path}")
    chosen = detect_format(path, csv_options) if format == "auto" else format
    if chosen not in FORMATS:
        raise CohortError(f"--format must be one of {', '.join(FORMAT_CHOICES)}, not {format!r}")
    if chosen == "dexcom":
        return dexcom.parse(path, out_of_range=out_of_range)
    if chosen == "libreview":
        dayfirst = (csv_options or {}).get("dayfirst")  # --dayfirst/--monthfirst
        return libreview.parse(
            path, out_of_range=out_of_range, scans=libre_scans, dayfirst=dayfirst
        )
    if chosen == "nightscout":
        return nightscout.parse(path, timezone=timezone)
    if chosen == "ohio":
        return ohio.parse(path)
    if chosen == "tconnect":
        return tconnect.parse(path, out_of_range=out_of_range)
    return generic.parse(path, out_of_range=out_of_range, **(csv_options or {}))


def import_cohort(
    files: Sequence[str | Path],
    out: str | Path,
    format: str = "auto",
    grid_minutes: int | None = None,
    person_id: str | None = None,
    keep_ids: bool = False,
    salt: str | None = None,
    force: bool = False,
    out_of_range: str = "limits",
    libre_scans: str = "ignore",
    timezone: str | None = None,
    csv_options: dict | None = None,
) -> ImportResult:
    """Parse every file, build one cohort, validate it with the cohort loader, write it.

    `grid_minutes` None means the exports' own interval: 5, or 15 when every file is
    LibreView; mixing LibreView with 5-minute exports needs an explicit grid. The cohort
    (.parquet or .csv) and its .json are written atomically, only after the cohort loaded
    back cleanly from a temporary copy.
    """
    from tailorml.data.cohort import load_cohort
    from tailorml.io import (
        atomic_write_json,
        atomic_write_parquet,
        atomic_write_text,
        check_writable,
    )

    out = Path(out)
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise CohortError(f"--out {out} must end in .parquet or .csv")
    if not files:
        raise CohortError("give at least one export file to import")
    if out.is_dir():
        raise CohortError(f"--out {out} is a folder; pass a file name ending in .parquet or .csv")
    for written in (out, out.with_suffix(".json")):  # the cohort and its metadata beside it
        if written.exists() and not force:
            raise CohortError(
                f"--out {out}: {written} exists; pass --force to replace it, or choose another name"
            )
    check_writable(out.parent, "--out", f"--out {out}")  # before parsing, not after
    folders = [str(f) for f in files if Path(f).is_dir()]
    if folders:
        raise CohortError(
            f"{folders[0]} is a folder; pass the export files in it (e.g. {folders[0]}/*.csv)"
        )
    if person_id is not None and not person_id.strip():
        raise CohortError("--id is empty; give the person an id, or leave --id out")
    if timezone is not None:  # checked here, not only when a Nightscout file needs it
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CohortError(
                f"--timezone {timezone!r} is not an IANA time zone (e.g. Europe/Berlin, UTC)"
            ) from None
    salt = salt or None  # an empty salt would make pseudonyms guessable: use a random one
    resolved = {Path(f).resolve() for f in files}
    if out.resolve() in resolved or out.with_suffix(".json").resolve() in resolved:
        raise CohortError(f"--out {out} would overwrite an input file; choose another name")
    parsed = [
        parse_file(f, format, out_of_range, libre_scans, timezone, csv_options) for f in files
    ]
    native = {item.native_minutes for item in parsed}
    if grid_minutes is None:
        if len(native) > 1:
            raise CohortError(
                "the files mix LibreView (15-minute history) with 5-minute exports; pass "
                "--grid-minutes 5 or 15 (nothing is interpolated: on a 5-minute grid Libre "
                "history leaves two of three slots empty)"
            )
        grid_minutes = native.pop()
    choices = {
        "format_option": format,
        "out_of_range": (
            "Low/High codes set to the sensor limits 40/400 mg/dL (counted)"
            if out_of_range == "limits"
            else "Low/High codes imported as missing readings (counted)"
        ),
        "libre_scans": libre_scans,
        "timezone_fallback": timezone,
    }
    result = build_cohort(parsed, grid_minutes, person_id, keep_ids, salt, choices)
    with tempfile.TemporaryDirectory() as scratch:
        trial = Path(scratch) / "cohort.parquet"
        result.frame.to_parquet(trial, index=False)
        try:  # the cohort validator: fail here, before anything is written
            load_cohort(trial)
        except CohortError as error:
            message = str(error).replace(str(trial), str(out))
            raise CohortError(f"the imported cohort fails validation: {message}") from None
    atomic_write_json(out.with_suffix(".json"), result.metadata)
    if out.suffix.lower() == ".csv":
        atomic_write_text(out, result.frame.to_csv(index=False))
    else:
        atomic_write_parquet(out, result.frame)
    return result
