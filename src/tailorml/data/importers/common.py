"""Shared by every importer: the parsed-export value, units, and export -> cohort file.

A format module only *parses*: it returns `ImportedReadings` (raw timestamped readings in
mg/dL as local wall time, carb and insulin events, counts of what it skipped or changed).
Everything a cohort needs beyond that happens here, once, for every format:

1. **Person ids.** A file's person key is `--id` when given; else an id the export carries
   (OhioT1DM `patient id`, a generic CSV `--id-column`); else, for exports that carry a name
   and birth date (Dexcom Clarity, Tandem t:connect), a key built from them that is only ever
   hashed; else the file name without extension (and `.gz`) and without a trailing
   `entries`/`treatments` token (so `alice_entries.json` and `alice_treatments.json` are one
   person; a bare `entries.json` takes its folder's name). Ids are pseudonymised as `p` + the
   first 12 hex digits of SHA-256(salt, key) unless `keep_ids`; names and birth dates are
   never written, and with `keep_ids` a name-derived key is replaced by the file-name key.
2. **De-duplication.** Readings of one person with the same timestamp (overlapping exports,
   or an uploader that sent a value twice) keep the first file's first value; each dropped
   copy is counted (`duplicate_readings_dropped`), and copies whose value differs are counted
   again in `duplicate_readings_conflicting`. Carb/insulin events repeated identically in
   a later file are dropped and counted (`duplicate_events_dropped`); repeats within one file
   are kept (two equal boluses at one minute can be real).
   A value below 39 mg/dL (no CGM reports one: a line cut off mid-number, a fault) is
   not a reading: dropped and counted (`artefact_readings_blanked`).
3. **The grid** (`grid_minutes`, default 5; `tailorml.data.grid`, shared with the shipped
   real cohorts). Each person's grid starts at their first reading, floored to the minute;
   every reading snaps to the nearest slot (at most half an interval away). Empty slots are
   missing readings (NaN); nothing is interpolated. Two readings in one slot keep the lower
   rank, then the earlier, and count the other (`slot_collisions_dropped`).
4. **Events** (carbs g, insulin U) are summed into the interval ending at each slot
   (slot - step, slot]; events outside a person's readings are counted, not placed.
5. **Writing**: the cohort Parquet and a JSON beside it (formats, file hashes, counts,
   choices, `"synthetic": false`), both atomically; input file *names* are not recorded,
   as they often contain a person's name.
"""

from __future__ import annotations

import csv
import hashlib
import re
import secrets
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from tailorml.data.cohort import MMOL_TO_MGDL
from tailorml.data.grid import place_readings, sum_events
from tailorml.data.schema import ARTEFACT_BELOW_MGDL, SENSOR_HIGH_MGDL, SENSOR_LOW_MGDL
from tailorml.errors import CohortError
from tailorml.io import InflatesTooLarge, bounded_gunzip, text_encoding

# Dexcom G6/G7 and FreeStyle Libre 2/3 report 40-400 mg/dL; outside it the device says
# Low/High (LO/HI) instead of a number.
# No CGM reading predates 2000 or lies days ahead; a reading this far from the rest of a
# person's readings (a receiver clock reset, a date in seconds read as milliseconds) is a
# clock error, not a reading; and one person's readings spanning more than this many days
# would be a grid of mostly empty slots (the 5-minute grid of 25 years is 880 MB).
EARLIEST_READING = pd.Timestamp("2000-01-01")
AHEAD_DAYS = 2
ISOLATION_DAYS = 30
MAX_SPAN_DAYS = 3 * 366
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # CSV injection (OWASP)
OutOfRange = Literal["limits", "missing"]
OUT_OF_RANGE_CHOICES = ("limits", "missing")
# Below this median a glucose column in mg/dL is really mmol/L (70 mg/dL = 3.9 mmol/L).
MMOL_SUSPECT_BELOW = 35.0
EVENT_KINDS = ("cho", "insulin")
GZIP_MAGIC = b"\x1f\x8b"
_TRAILING_TOKEN = re.compile(r"[\s._-]*(entries|treatments)$", re.IGNORECASE)


@dataclass
class ImportedReadings:
    """What one export holds, before any grid: the output of every format's `parse`.

    readings: columns `time` (naive local wall time), `cgm` (mg/dL, float), `person` (the
        export's own id for the row, or "" when it carries none), `rank` (0; higher ranks
        lose a shared grid slot, e.g. Libre scans against history).
    events: columns `time`, `kind` ("cho" grams or "insulin" units), `amount`, `person`.
    identity: a key that identifies the person but must never be written (name + birth
        date); only its salted hash is used.
    notes: counts of what the parser skipped or changed (Low/High codes, non-CGM rows...).
    choices: decisions the parser made that a reader of the cohort should know.
    native_minutes: the export's own sampling interval (Libre history: 15).
    """

    format: str
    source: str
    readings: pd.DataFrame
    events: pd.DataFrame = field(default_factory=lambda: empty_events())
    identity: str | None = None
    notes: dict[str, int] = field(default_factory=dict)
    choices: dict[str, object] = field(default_factory=dict)
    native_minutes: int = 5
    sha256: str = ""


def empty_readings() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": pd.Series(dtype="datetime64[ns]"),
            "cgm": pd.Series(dtype=float),
            "person": pd.Series(dtype=str),
            "rank": pd.Series(dtype=int),
        }
    )


def empty_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": pd.Series(dtype="datetime64[ns]"),
            "kind": pd.Series(dtype=str),
            "amount": pd.Series(dtype=float),
            "person": pd.Series(dtype=str),
        }
    )


def readings_frame(times, values, person="", rank: int = 0) -> pd.DataFrame:
    """Raw readings; `rank` orders readings that share a grid slot (lower wins)."""
    frame = pd.DataFrame(
        {
            "time": pd.to_datetime(pd.Series(times)).astype("datetime64[ns]").to_numpy(),
            "cgm": np.asarray(values, dtype=float),
            "rank": rank,
        }
    )
    frame["person"] = person if isinstance(person, str) else pd.Series(person).astype(str).values
    return frame


def events_frame(times, kind: str, amounts, person="", notes: dict | None = None):
    """Events with a positive amount. With `notes`, what is dropped is counted: negative
    amounts (`{kind}_negative_dropped`) and cells that are not numbers (pass them as NaN
    with `raw` text via `amounts_of`)."""
    values = np.asarray(amounts, dtype=float)
    if notes is not None:
        negative = int((values < 0).sum())
        if negative:
            notes[f"{kind}_negative_dropped"] = notes.get(f"{kind}_negative_dropped", 0) + negative
    frame = pd.DataFrame(
        {
            "time": pd.to_datetime(pd.Series(times)).astype("datetime64[ns]").to_numpy(),
            "kind": kind,
            "amount": values,
        }
    )
    frame["person"] = person if isinstance(person, str) else pd.Series(person).astype(str).values
    timeless = frame["time"].isna() & frame["amount"].notna() & (frame["amount"] > 0)
    if notes is not None and timeless.any():
        notes[f"{kind}_without_time_dropped"] = notes.get(f"{kind}_without_time_dropped", 0) + int(
            timeless.sum()
        )
    frame = frame[frame["amount"].notna() & (frame["amount"] > 0) & frame["time"].notna()]
    return frame.reset_index(drop=True)


def amounts_of(cells: pd.Series, kind: str, notes: dict) -> pd.Series:
    """Insulin or carb cells as numbers: decimal commas read (counted), empty cells are no
    event, and text that is not a number ("2U", "lots") is counted as
    `{kind}_unreadable_dropped` instead of vanishing."""
    text = decimal_points(cells.astype(str).str.strip(), notes)
    values = pd.to_numeric(text, errors="coerce")
    unreadable = int((values.isna() & text.ne("") & text.str.lower().ne("nan")).sum())
    if unreadable:
        notes[f"{kind}_unreadable_dropped"] = (
            notes.get(f"{kind}_unreadable_dropped", 0) + unreadable
        )
    return values


MAX_IMPORT_BYTES = 1 << 30  # 1 GiB of text: years of 5-minute readings are a few MB


def read_source(source: str | Path) -> tuple[str, str, str]:
    """(text, name for messages, sha256 of the bytes) of a path, or of literal text.

    A gzip file (name ending in `.gz`, or the gzip magic bytes) is decompressed first, so
    exports can be kept compressed; the SHA-256 stays that of the bytes on disk, which is
    what a user can check with `sha256sum`.
    """
    if isinstance(source, Path) or ("\n" not in source and len(source) < 4096):
        path = Path(source)
        if not path.exists():
            raise CohortError(f"import file not found: {path}")
        if not path.is_file():
            raise CohortError(f"{path} is not a regular file; pass an export file")
        if path.stat().st_size > MAX_IMPORT_BYTES:
            raise CohortError(
                f"{path}: {path.stat().st_size:,} bytes is more than an export holds "
                f"(at most {MAX_IMPORT_BYTES:,}); split it or check the file"
            )
        data = path.read_bytes()
        name = str(path)
        compressed = path.suffix.lower() == ".gz" or data[:2] == GZIP_MAGIC
        content = gunzip(data, name) if compressed else data
    else:
        data = content = source.encode("utf-8")
        name = "<text>"
    return decode_export(content, name), name, hashlib.sha256(data).hexdigest()


def decode_export(content: bytes, name: str) -> str:
    """An export's bytes as text. UTF-8, UTF-8 with BOM (Clarity, Excel) or UTF-16 (LibreView)
    as `io.text_encoding` finds them; bytes that are not UTF-8 are Windows-1252 (Excel "CSV"
    in Western locales: `é`, `°`, `µ` as single bytes), read as such rather than as
    replacement characters, so a column named `Glykämie` is found by that name. Repeated
    byte-order marks (a file re-saved) are dropped; binary data (a spreadsheet, an image) is
    refused in one line instead of being searched for a header."""
    encoding, skip = text_encoding(content)
    if encoding == "utf-8":
        try:
            text = content[skip:].decode("utf-8")
        except UnicodeDecodeError:
            text = content[skip:].decode("cp1252", errors="replace")
    else:
        text = content[skip:].decode(encoding, errors="replace")
    text = text.lstrip("\ufeff")
    if not text.strip():
        what = "empty" if not content else "only blank lines"
        raise CohortError(f"{name}: the file is {what}; export the data again")
    sample = text[:4096]
    control = sum(ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\n\r\f") for ch in sample)
    if control > max(4, len(sample) // 20):
        kind = "a zip archive (an .xlsx workbook?)" if content[:2] == b"PK" else "binary data"
        raise CohortError(
            f"{name}: not a text export ({kind}); import the CSV, JSON or XML file as "
            "exported (save a workbook as CSV first)"
        )
    return text


def gunzip(data: bytes, name: str) -> bytes:
    """The decompressed bytes of a gzip file; a damaged one is a clear error, not garbage."""
    try:
        # inflated with a bound: a small file that inflates to gigabytes (a gzip bomb) is
        # refused before it fills the memory; members written one after another are joined
        return bounded_gunzip(data, MAX_IMPORT_BYTES)
    except InflatesTooLarge:
        raise CohortError(
            f"{name}: inflates to more than {MAX_IMPORT_BYTES:,} bytes, more than an export "
            "holds; check the file"
        ) from None
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError
        raise CohortError(
            f"{name}: not a readable gzip file ({error}); check it with `gzip -t`, or import "
            "the uncompressed export"
        ) from None


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:120]
    return "(empty file)"


def header_line(text: str) -> str:
    """The first non-empty line, whole (for finding columns; errors use `line_shape`)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


# Labels the importers know (header cells and preamble keys of the formats, lower case).
# An error may quote these; any other cell of an export may be a person's name, birth date
# or a device serial and is described by its shape instead (`line_shape`, `columns_shape`,
# `value_shape`): errors reach terminals, logs and CI output.
_LABELS = """
    Glucose Data | Generated on | Generated by | Patient report | Device | Serial Number |
    Device Timestamp | Record Type | Historic Glucose mg/dL | Historic Glucose mmol/L |
    Scan Glucose mg/dL | Scan Glucose mmol/L | Non-numeric Rapid-Acting Insulin |
    Rapid-Acting Insulin (units) | Non-numeric Food | Carbohydrates (grams) |
    Carbohydrates (servings) | Non-numeric Long-Acting Insulin |
    Long-Acting Insulin Value (units) | Long-Acting Insulin (units) | Notes |
    Strip Glucose mg/dL | Strip Glucose mmol/L | Ketone mmol/L | Meal Insulin (units) |
    Correction Insulin (units) | User Change Insulin (units) |
    Index | Timestamp (YYYY-MM-DDThh:mm:ss) | Event Type | Event Subtype | Patient Info |
    Device Info | Source Device ID | Glucose Value (mg/dL) | Glucose Value (mmol/L) |
    Insulin Value (u) | Carb Value (grams) | Duration (hh:mm:ss) |
    Glucose Rate of Change (mg/dL/min) | Glucose Rate of Change (mmol/L/min) |
    Transmitter Time (Long Integer) | Transmitter ID |
    Tandem Diabetes Care Inc. | t:connect Therapy Timeline Data Export | Patient Name |
    Patient DOB | Report Generated On | DeviceType | SerialNumber | Description |
    EventDateTime | Readings (CGM / BGM) | BG | IOB | Note | Type | EventID | BasalRate |
    InsulinDelivered | CompletionDateTime | CarbSize |
    time | timestamp | date | datetime | date time | zeit | datum | cgm | glucose | glukose |
    sgv | bg | value | id | patient | patient_id | carbs | cho | insulin
    """
KNOWN_LABELS = frozenset(label.strip().lower() for label in _LABELS.split("|"))
_TIME_OR_NUMBER = re.compile(r"^[\d\s:./,+-]*\d[\d\s:./,+-]*(T[\d:.,+-]+)?\s*(AM|PM|am|pm|Z)?$")


def is_known_label(cell: str) -> bool:
    return cell.strip().strip('"').strip().lower() in KNOWN_LABELS


def split_fields(line: str) -> tuple[list[str], str]:
    """A header-like line's fields and its separator: the one of `,` `;` tab it has most of
    (Excel in EU locales writes `;`; "Text (tab-delimited)" a tab); a line without any is
    one field."""
    counts = {separator: line.count(separator) for separator in (",", ";", "\t")}
    separator = max(counts, key=lambda key: counts[key])
    if not counts[separator]:
        return [line], ","
    return next(csv.reader([line], delimiter=separator), [""]), separator


SEPARATOR_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}


def line_shape(text: str) -> str:
    """The file's first non-empty line described without its content (an export's first
    line can hold a person's name: `Glucose Data,...,Generated by,Jane Doe`): its number of
    fields and separator, and the first field only when it is a label an importer knows."""
    line = next((line for line in text.splitlines() if line.strip()), None)
    if line is None:
        return "the file is empty" if not text else "the file holds only blank lines"
    line = line.strip().lstrip("\ufeff")
    if line[:1] in "[{<":
        return f"its first line starts with {line[:1]!r}"
    if len(line) > 10_000:
        return f"its first line is {len(line):,} characters long, not a CSV header"
    if sum(ch == "\ufffd" or (ord(ch) < 32 and ch != "\t") for ch in line) > len(line) // 10:
        return "it starts with binary data, not text"
    fields, separator = split_fields(line)
    first = fields[0].strip() if fields else ""
    start = (
        f"starting with {first!r}"
        if is_known_label(first)
        else "whose first field is no header tailorml knows"
    )
    if len(fields) == 1:
        return f"its first line is one field of {len(line)} characters, {start}"
    return (
        f"its first line has {len(fields)} {SEPARATOR_NAMES[separator]}-separated fields, {start}"
    )


def columns_shape(columns, wanted=()) -> str:
    """A header described for an error: the columns an importer knows (or the user named
    in `wanted`) by name, the others only counted (a misread header row can be a person's
    name or a device serial)."""
    columns = [str(column).strip() for column in columns]
    named = {str(column).strip().lower() for column in wanted if column}
    shown = [c for c in columns if c and (is_known_label(c) or c.lower() in named)]
    others = len(columns) - len(shown)
    count = f"{len(columns)} column{'s' if len(columns) != 1 else ''}"
    if not shown:
        return (
            f"{count}, none of them a name tailorml knows (not shown: a header row can hold a name)"
        )
    listed = ", ".join(repr(c) for c in shown[:12]) + (" ..." if len(shown) > 12 else "")
    hidden = f"; {others} more not shown (a misread header row can hold a name)" if others else ""
    return f"{count}: {listed}{hidden}"


def value_shape(value) -> str:
    """A cell quoted in an error only when it looks like a number or a time (what the user
    needs to fix a format); other text is described by its length, never echoed."""
    text = str(value).strip()
    if len(text) <= 40 and _TIME_OR_NUMBER.match(text) and not text.isdigit():
        return repr(text)
    if text.isdigit():
        return f"<{len(text):,} digits, not shown>"
    return f"<{len(text):,} characters of text, not shown>" if text else "<an empty cell>"


def to_mgdl(values: pd.Series, unit: str, name: str, column: str, fix: str) -> pd.Series:
    """Convert numeric glucose to mg/dL; catch a mmol/L column read as mg/dL."""
    values = values.astype(float)
    if unit == "mmol/L":
        return values * MMOL_TO_MGDL
    finite = values.dropna()
    if len(finite) and finite.median() < MMOL_SUSPECT_BELOW:
        raise CohortError(
            f"{name}: glucose column {column!r} is read as mg/dL but its values look like "
            f"mmol/L (median {finite.median():.1f}); {fix}"
        )
    return values


def sensor_codes(
    raw: pd.Series, out_of_range: OutOfRange, notes: dict[str, int]
) -> tuple[pd.Series, pd.Series]:
    """Split a glucose column into numbers and Low/High codes.

    Returns (numeric values with codes as NaN, mg/dL value for each code or NaN). Codes
    become the sensor limits (40 / 400 mg/dL) under "limits", missing readings under
    "missing"; either way they are counted in `notes`.
    """
    raw = decimal_points(raw, notes)
    text = raw.astype(str).str.strip().str.lower()
    low = text.isin(["low", "lo"])
    high = text.isin(["high", "hi"])
    notes["low_codes"] = notes.get("low_codes", 0) + int(low.sum())
    notes["high_codes"] = notes.get("high_codes", 0) + int(high.sum())
    numeric = pd.to_numeric(raw.where(~(low | high)), errors="coerce")
    code_values = pd.Series(np.nan, index=raw.index)
    if out_of_range == "limits":
        code_values[low] = SENSOR_LOW_MGDL
        code_values[high] = SENSOR_HIGH_MGDL
    return numeric, code_values


SENSOR_CODE_WORDS = {"low", "high", "lo", "hi"}
DECIMAL_COMMA = re.compile(r"^\s*-?\d+,\d+\s*$")


def decimal_points(raw: pd.Series, notes: dict[str, int]) -> pd.Series:
    """Numbers written with a decimal comma ("6,7", EU exports) as numbers with a point,
    counted (`decimal_commas_read`); without this they would be read as missing, uncounted."""
    text = raw.astype(str)
    comma = text.str.match(DECIMAL_COMMA)
    if comma.any():
        notes["decimal_commas_read"] = notes.get("decimal_commas_read", 0) + int(comma.sum())
        return raw.where(~comma, text.str.replace(",", ".", regex=False))
    return raw


def egv_values(
    raw: pd.Series,
    unit: str,
    out_of_range: OutOfRange,
    notes: dict[str, int],
    name: str,
    column: str,
    fix: str,
) -> pd.Series:
    """An export's CGM (EGV) cells -> mg/dL: numbers converted from `unit`, Low/High codes by
    `out_of_range` (counted), empty cells missing (counted as `empty_egv_values`); any other
    text is refused, naming `column` (`fix`: what to say if the values look like mmol/L)."""
    raw = raw.str.strip()
    numeric, code_values = sensor_codes(raw, out_of_range, notes)
    empty = raw.eq("")
    notes["empty_egv_values"] = int(empty.sum())
    bad = numeric.isna() & code_values.isna() & ~empty & ~raw.str.lower().isin(SENSOR_CODE_WORDS)
    if bad.any():
        raise CohortError(
            f"{name}: column {column!r} has a value that is neither a number nor Low/High "
            f"({int(bad.sum())} rows, first {value_shape(raw[bad].iloc[0])}); fix or blank "
            "those cells"
        )
    return to_mgdl(numeric, unit, name, column, fix).where(code_values.isna(), code_values)


EARLIEST_PARSED = pd.Timestamp("1900-01-01")  # before: not a CGM reading's time
LATEST_PARSED = pd.Timestamp("2200-01-01")


def wall_times(stamps: pd.Series, dayfirst: bool = False) -> pd.Series:
    """Parse times; a time with an offset keeps its wall-clock part (local time). ISO 8601
    (year first) is never read day-first, whatever `dayfirst` says."""
    if pd.to_datetime(stamps, format="ISO8601", errors="coerce", utc=True).notna().all():
        dayfirst = False
    try:
        parsed = pd.to_datetime(stamps, errors="coerce", format="mixed", dayfirst=dayfirst)
    except ValueError:  # offsets differ between rows (a DST change): one at a time
        parsed = pd.Series(
            [pd.to_datetime(s, errors="coerce", dayfirst=dayfirst) for s in stamps],
            index=stamps.index,
        )
        parsed = parsed.map(lambda t: t.tz_localize(None) if t is not pd.NaT and t.tzinfo else t)
        parsed = pd.to_datetime(parsed)
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)
    # a year like 9999 or -1 parses (microsecond precision) but is no reading's time, and
    # would overflow the nanosecond times the cohort keeps: such a cell is not a time
    outside = (parsed < EARLIEST_PARSED) | (parsed > LATEST_PARSED)
    return parsed.mask(outside).astype("datetime64[ns]")


def person_key_from_name(name: str) -> str:
    path = Path(name)
    if path.suffix.lower() == ".gz":  # alice.csv.gz is alice, like alice.csv
        path = path.with_suffix("")
    stem = path.stem if name != "<text>" else "imported"
    key = _TRAILING_TOKEN.sub("", stem).strip(" ._-")
    if not key:
        parent = Path(name).resolve().parent.name
        key = parent or "imported"
    return key


def pseudonym(key: str, salt: str) -> str:
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).hexdigest()
    return f"p{digest[:12]}"


def new_salt() -> str:
    return secrets.token_hex(16)


@dataclass
class ImportResult:
    frame: pd.DataFrame
    metadata: dict
    notes: dict[str, int]


def build_cohort(
    parsed: list[ImportedReadings],
    grid_minutes: int = 5,
    person_id: str | None = None,
    keep_ids: bool = False,
    salt: str | None = None,
    choices: dict | None = None,
) -> ImportResult:
    """Parsed exports -> one cohort frame on a regular grid (see the module docstring)."""
    if grid_minutes < 1:
        raise CohortError(f"--grid-minutes must be a whole number >= 1, not {grid_minutes}")
    notes: Counter = Counter()
    salt = salt if salt is not None else new_salt()
    readings, events, files = [], [], []
    from_cells: set[str] = set()  # keys read from an --id-column (or export) cell
    for index, item in enumerate(parsed):
        notes.update(item.notes)
        fallback = person_key_from_name(item.source)
        if person_id is not None:
            keys = {"": person_id}
        elif item.identity is not None:
            keys = {"": fallback if keep_ids else f"identity:{item.identity}"}
        else:
            keys = {"": fallback}

        def resolve(column: pd.Series, keys=keys) -> pd.Series:
            if person_id is not None:
                return pd.Series(person_id, index=column.index, dtype=object)
            return column.astype(str).map(lambda value: value if value else keys[""])

        rows = item.readings.copy()
        rows["key"] = resolve(rows["person"])
        if person_id is None:
            from_cells.update(cell for cell in rows["person"].astype(str) if cell)
        rows["file"] = index
        readings.append(rows)
        happenings = item.events.copy()
        happenings["key"] = resolve(happenings["person"])
        happenings["file"] = index
        events.append(happenings)
        files.append(
            {
                "format": item.format,
                "sha256": item.sha256,
                "readings": len(item.readings),
                "events": len(item.events),
                "notes": dict(item.notes),
                "choices": dict(item.choices),
            }
        )
    readings = pd.concat(readings, ignore_index=True)
    events = pd.concat(events, ignore_index=True)
    # A reading without a value (a code imported as missing) is already counted by its parser;
    # dropping it here lets a real value from another file fill that time. A value below any
    # CGM's floor (a line cut off mid-number: "123" -> "12") is an artefact, not a low.
    artefact = readings["cgm"] < ARTEFACT_BELOW_MGDL
    notes["artefact_readings_blanked"] += int(artefact.sum())
    readings = readings[readings["cgm"].notna() & ~artefact]
    if readings.empty:
        raise CohortError("the imported files contain no CGM readings")

    # Overlapping files / repeated uploads: same person and timestamp -> first file wins.
    readings = readings.sort_values(["key", "time", "file"], kind="stable")
    offered = readings.groupby("key").size()  # per person, before repeats and clock errors
    repeat = readings.duplicated(["key", "time"], keep="first")
    first_value = readings.groupby(["key", "time"], sort=False)["cgm"].transform("first")
    conflicting = repeat & ~np.isclose(readings["cgm"], first_value, equal_nan=True)
    notes["duplicate_readings_dropped"] += int(repeat.sum())
    notes["duplicate_readings_conflicting"] += int(conflicting.sum())
    readings = readings[~repeat]

    key_columns = ["key", "time", "kind", "amount"]
    first_file = events.groupby(key_columns, sort=False)["file"].transform("min")
    later_copy = events["file"] != first_file
    notes["duplicate_events_dropped"] += int(later_copy.sum())
    events = events[~later_copy]

    pieces = []
    id_of = {}
    for key, rows in readings.groupby("key", sort=True):
        rows = plausible_times(rows, key, notes, from_cells)
        if len(rows) < 2:
            raise CohortError(_too_few(key, from_cells, len(rows), int(offered[key]), notes))
        grid = place_readings(rows, grid_minutes, notes)
        if keep_ids and str(key).startswith(FORMULA_STARTS):
            raise CohortError(
                f"person id {_shown(key, from_cells)} starts with {str(key)[0]!r}: a spreadsheet "
                "would run "
                "it as a formula; rename it, or leave out --keep-ids (pseudonyms are hex)"
            )
        patient = key if keep_ids else pseudonym(key, salt)
        id_of[key] = patient
        piece = pd.DataFrame({"patient_id": patient, "time": grid.times, "cgm": grid.values})
        mine = events[events["key"] == key]
        for kind in EVENT_KINDS:
            if not (events["kind"] == kind).any():
                continue
            chosen = mine[mine["kind"] == kind]
            piece[kind], outside = sum_events(grid, chosen["time"], chosen["amount"].to_numpy())
            notes[f"{kind}_events_outside_readings"] += outside
        pieces.append(piece)
    for key in set(events["key"]) - set(id_of):
        notes["events_of_people_without_readings"] += int((events["key"] == key).sum())
    frame = pd.concat(pieces, ignore_index=True)
    for kind in EVENT_KINDS:
        if kind in frame.columns:
            frame[kind] = frame[kind].fillna(0.0)
    frame = frame.sort_values(["patient_id", "time"], kind="stable").reset_index(drop=True)
    counts = {key: int(value) for key, value in sorted(notes.items()) if value}
    metadata = {
        "synthetic": False,
        "description": "Imported CGM exports (real data); ids "
        + ("as given" if keep_ids else "pseudonymised with a salted SHA-256"),
        "generator": "tailorml.data.importers",
        "formats": sorted({item["format"] for item in files}),
        "files": files,
        "sample_minutes": grid_minutes,
        "patients": sorted(frame["patient_id"].unique().tolist()),
        "readings_per_patient": {
            str(k): int(v) for k, v in frame.groupby("patient_id")["cgm"].count().items()
        },
        "counts": counts,
        "choices": {
            "grid_minutes": grid_minutes,
            "ids": "kept" if keep_ids else "pseudonymised (salted SHA-256, 12 hex)",
            "interpolation": "none: empty grid slots are missing readings",
            "events": "summed into the interval ending at each slot",
            **(choices or {}),
        },
    }
    return ImportResult(frame, metadata, counts)


DROPPED_READINGS = (  # the counts that say where a person's readings went
    "duplicate_readings_dropped",
    "readings_without_time_dropped",
    "readings_dated_before_2000_or_ahead_dropped",
    "readings_far_from_the_rest_dropped",
)


def _too_few(key: str, from_cells: set, left: int, offered: int, notes: Counter) -> str:
    """A person with fewer than two readings, saying where the others went: all dated
    before 2000 (or days ahead) was "has a single CGM reading", which sent users to the
    export's date range instead of its clock."""
    who = f"person {_shown(key, from_cells)}"
    fix = "a cohort needs a series of readings per person"
    if left == offered:
        return f"{who} has a single CGM reading; {fix} (check the export's date range)"
    what = "no CGM reading" if left == 0 else "a single CGM reading"
    dropped = ", ".join(f"{name} {notes[name]:,}" for name in DROPPED_READINGS if notes[name])
    return (
        f"{who} has {what} left of {offered:,} ({dropped}); {fix} (check the export's clock "
        "and date range)"
    )


def plausible(times: pd.Series) -> pd.Series:
    """Which times could be a device's: from 2000 to `AHEAD_DAYS` ahead (for events spread
    per minute, checked before they are spread: one row dated 2090 would be 36 million)."""
    latest = pd.Timestamp.now() + pd.Timedelta(days=AHEAD_DAYS)
    return (times >= EARLIEST_READING) & (times <= latest)


def plausible_times(
    rows: pd.DataFrame, key: str, notes: Counter, from_cells: frozenset | set = frozenset()
) -> pd.DataFrame:
    """One person's readings without clock errors, checked before any grid is built: times
    before 2000 or days ahead are dropped, then readings more than `ISOLATION_DAYS` apart
    from the person's main block (the run with most readings) if they are few (under 5 %
    of the person's readings); what is left must span at most `MAX_SPAN_DAYS`."""
    times = rows["time"]
    inside = plausible(times)
    notes["readings_without_time_dropped"] += int(times.isna().sum())
    notes["readings_dated_before_2000_or_ahead_dropped"] += int((~inside & times.notna()).sum())
    rows = rows[inside].sort_values("time", kind="stable")
    if len(rows) < 2:
        return rows
    gaps = rows["time"].diff() > pd.Timedelta(days=ISOLATION_DAYS)
    run = gaps.cumsum().to_numpy()
    sizes = np.bincount(run)
    main = int(sizes.argmax())
    few = sizes < 0.05 * len(rows)
    far = few[run] & (run != main)
    notes["readings_far_from_the_rest_dropped"] += int(far.sum())
    rows = rows[~far]
    span = rows["time"].iloc[-1] - rows["time"].iloc[0]
    if span > pd.Timedelta(days=MAX_SPAN_DAYS):
        raise CohortError(
            f"person {_shown(key, from_cells)}: readings span {span.days:,} days "
            f"({rows['time'].iloc[0]:%Y-%m-%d} to {rows['time'].iloc[-1]:%Y-%m-%d}); at most "
            f"{MAX_SPAN_DAYS:,} days make one cohort — import each period separately, or check "
            "the export's clock (a receiver reset to another year)"
        )
    return rows


def _shown(key: str, from_cells: frozenset | set = frozenset()) -> str:
    """A person in an error: a key read from a cell (--id-column) is a value of the export,
    described by its shape (it can be a name); a file name or --id, the user's own text,
    escaped and cut."""
    if key.startswith("identity:"):
        return "(named in the export)"
    if key in from_cells:
        return f"{value_shape(key)} (an --id-column value)"
    return repr(key) if len(key) <= 40 else f"{key[:40]!r}…"
