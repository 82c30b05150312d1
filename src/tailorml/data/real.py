"""The real type-1 diabetes cohorts shipped inside tailorml: retrospective CGM of 51 adults
from three open datasets (attribution: `data/real/ATTRIBUTION.md`, also in every cohort's
metadata and in every report that uses them).

The files are the published data as the authors released them (see ATTRIBUTION for the
few changes made before shipping); putting them on tailorml's 5-minute grid happens here, at
load time, with every choice explicit and counted (`Cohort.notes`):

- readings below 39 mg/dL are sensor artefacts (no CGM reports them; one person of t1d_uom
  has seven, down to 1.8 mg/dL): they become missing readings (`artefact_readings_blanked`)
  instead of refusing the cohort; Dexcom's `Low`/`High` codes, stored as 39/401 mg/dL, are
  kept and counted (`low_codes`, `high_codes`);
- every person goes on a 5-minute grid (`tailorml.data.grid`), nothing interpolated: a
  15-minute sensor fills one slot in three, so its periods give no complete window (counted
  per window as gaps) rather than invented readings;
- two readings closer than 2.5 minutes that differ by more than 20 mg/dL are two sensors
  disagreeing (one t1d_uom person wore two for a month, 80 mg/dL apart): their slots become
  missing (`conflicting_readings_blanked`); agreeing duplicates keep the earlier;
- azt1d's boluses and carbs are summed into the interval ending at each slot; entries no
  person takes at once (above 100 U or 1,000 g: six boluses up to 477 U, one 1,430 g meal)
  are dropped and counted (`implausible_insulin_events_dropped`, `..._cho_...`); the pooled
  cohorts carry insulin/carbs only when every chosen dataset has them.

Each person's traits come from the people tables: `age_years` and `hba1c_percent` (numeric
traits), and the groups fairness disaggregates by: age band (`group`), `sex`, `dataset`,
`sensor` (the device, or the sampling seen in the data where the source does not name it)
and `hba1c_band`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

from tailorml.data.grid import place_readings, sum_events
from tailorml.data.schema import ARTEFACT_BELOW_MGDL, PLAUSIBLE_AMOUNTS

GRID_MINUTES = 5
CONFLICT_MGDL = 20.0  # within half an interval: ~8 mg/dL/min, far beyond physiology
AGE_BANDS = ((0, 40, "18-39"), (40, 60, "40-59"), (60, 200, "60+"))
HBA1C_BANDS = ((0.0, 7.0, "HbA1c < 7 %"), (7.0, 100.0, "HbA1c >= 7 %"))
EVENT_COLUMNS = ("insulin", "cho")


@dataclass(frozen=True)
class Dataset:
    """One shipped dataset and what its attribution must say."""

    name: str
    title: str
    authors: str
    doi: str
    licence: str
    url: str
    sensor: str

    @property
    def citation(self) -> str:
        return f"{self.authors}. {self.title}. doi:{self.doi} ({self.licence})"


DATASETS = {
    "azt1d": Dataset(
        "azt1d",
        "AZT1D: A Real-World Dataset for Type 1 Diabetes (IEEE BSN 2025)",
        "Khamesian, Arefeen, Thompson, Grando, Ghasemzadeh",
        "10.17632/gk9m674wcx.1",
        "CC BY 4.0",
        "https://doi.org/10.17632/gk9m674wcx.1",
        "Dexcom G6 Pro",
    ),
    "t1d_uom": Dataset(
        "t1d_uom",
        "A Longitudinal Multimodal Dataset of Type 1 Diabetes (Sci Data 12, 1379, 2025)",
        "Alsuhaymi et al.",
        "10.5281/zenodo.15806142",
        "CC BY 4.0",
        "https://doi.org/10.5281/zenodo.15806142",
        "not stated (5- and 15-minute sensors)",
    ),
    "physiocgm": Dataset(
        "physiocgm",
        "A multimodal physiological dataset for non-invasive blood glucose estimation "
        "(Sci Data 12, 1822, 2025)",
        "Quamer et al.",
        "10.6084/m9.figshare.28136294.v1",
        "CC0 1.0",
        "https://doi.org/10.6084/m9.figshare.28136294.v1",
        "Dexcom G6",
    ),
}
REAL = "real"  # all three, pooled
SYNTHETIC = "synthetic"  # the simulated virtual cohort
SHIPPED_COHORTS = (REAL, *DATASETS, SYNTHETIC)
RETROSPECTIVE_NOTE = (
    "real people, retrospective CGM data: evidence about models, not clinical evidence"
)


def real_folder() -> Path:
    return Path(str(files("tailorml") / "data" / "real"))


def datasets_of(name: str) -> tuple[str, ...]:
    """The datasets a shipped real cohort name stands for."""
    return tuple(DATASETS) if name == REAL else (name,)


def is_shipped_name(value: object) -> bool:
    """Whether a `cohort.path` / `--cohort` value names a shipped cohort (names have no file
    suffix, so no cohort file can be mistaken for one)."""
    return isinstance(value, str) and value in SHIPPED_COHORTS


def band(value: float, bands) -> str | None:
    if value is None or not np.isfinite(value):
        return None
    return next(label for low, high, label in bands if low <= value < high)


def sampling_of(times: pd.Series) -> str:
    """What the data show of a sensor the source does not name: its sampling interval."""
    steps = times.sort_values().diff().dt.total_seconds().div(60).dropna()
    five = float(((steps > 3.5) & (steps < 6.5)).mean())
    fifteen = float(((steps > 12.5) & (steps < 17.5)).mean())
    if five > 0.2 and fifteen > 0.2:
        return "mixed 5/15-min sensors"
    return "15-min sensor" if fifteen > five else "5-min sensor"


def people_table(dataset: str) -> pd.DataFrame:
    path = real_folder() / f"{dataset}_people.csv"
    return pd.read_csv(path, dtype={"patient_id": str, "sex": str, "cgm_device": str})


def _person_columns(person: pd.Series, raw_times: pd.Series) -> dict[str, object]:
    """The per-person columns (constant over their rows) a cohort reads as traits."""
    age = float(person["age_years"])
    hba1c = float(person["hba1c_percent"]) if pd.notna(person["hba1c_percent"]) else np.nan
    device = person["cgm_device"] if isinstance(person["cgm_device"], str) else None
    return {
        "group": band(age, AGE_BANDS),
        "age_years": age,
        "hba1c_percent": hba1c,
        "sex": person["sex"] if isinstance(person["sex"], str) else None,
        "dataset": person["dataset"],
        "sensor": device or sampling_of(raw_times),
        "hba1c_band": band(hba1c, HBA1C_BANDS),
    }


def dataset_frame(dataset: str, counts: Counter, with_events: bool) -> pd.DataFrame:
    """One dataset's people on the 5-minute grid with their traits (see module docstring)."""
    raw = pd.read_parquet(real_folder() / f"{dataset}.parquet")
    raw["patient_id"] = raw["patient_id"].astype(str)
    raw["time"] = raw["time"].astype("datetime64[ns]")
    people = people_table(dataset).set_index("patient_id")
    pieces = []
    for patient, rows in raw.groupby("patient_id", sort=True):
        readings = rows[rows["cgm"].notna()][["time", "cgm"]]
        artefact = readings["cgm"] < ARTEFACT_BELOW_MGDL
        counts["artefact_readings_blanked"] += int(artefact.sum())
        counts["low_codes"] += int((readings["cgm"] == 39).sum())
        counts["high_codes"] += int((readings["cgm"] == 401).sum())
        readings = readings[~artefact]
        grid = place_readings(readings, GRID_MINUTES, counts, CONFLICT_MGDL)
        piece = pd.DataFrame({"patient_id": patient, "time": grid.times, "cgm": grid.values})
        for column in EVENT_COLUMNS if with_events else ():
            events = rows[rows[column].notna() & (rows[column] > 0)]
            implausible = events[column] > PLAUSIBLE_AMOUNTS[column][0]
            counts[f"implausible_{column}_events_dropped"] += int(implausible.sum())
            events = events[~implausible]
            piece[column], outside = sum_events(grid, events["time"], events[column].to_numpy())
            counts[f"{column}_events_outside_readings"] += outside
        for name, value in _person_columns(people.loc[patient], readings["time"]).items():
            piece[name] = value
        pieces.append(piece)
    return pd.concat(pieces, ignore_index=True)


@lru_cache(maxsize=4)
def _real_frame(datasets: tuple[str, ...]) -> tuple[pd.DataFrame, tuple[tuple[str, int], ...]]:
    counts: Counter = Counter()
    with_events = all(dataset == "azt1d" for dataset in datasets)
    frame = pd.concat(
        [dataset_frame(dataset, counts, with_events) for dataset in datasets], ignore_index=True
    )
    return frame, tuple(sorted((key, int(value)) for key, value in counts.items() if value))


def real_cohort_frame(name: str) -> tuple[pd.DataFrame, dict]:
    """The frame of a shipped real cohort (`real` or one dataset) and its metadata: the
    datasets with their attribution, the handling choices and their counts."""
    datasets = datasets_of(name)
    frame, counts = _real_frame(datasets)
    metadata = {
        "synthetic": False,
        "retrospective": True,
        "description": f"shipped real cohort {name!r}: {RETROSPECTIVE_NOTE}",
        "datasets": {
            key: {
                "title": DATASETS[key].title,
                "authors": DATASETS[key].authors,
                "doi": DATASETS[key].doi,
                "licence": DATASETS[key].licence,
                "url": DATASETS[key].url,
            }
            for key in datasets
        },
        "attribution": "see ATTRIBUTION.md in tailorml/data/real/",
        "sample_minutes": GRID_MINUTES,
        "counts": dict(counts),
        "choices": {
            "artefacts": f"readings below {ARTEFACT_BELOW_MGDL:g} mg/dL become missing readings",
            "low_high_codes": "Dexcom Low/High kept as the source stored them (39/401 mg/dL)",
            "grid": f"{GRID_MINUTES}-minute grid per person; nothing interpolated",
            "conflicts": f"readings < {GRID_MINUTES / 2:g} min apart differing by more than "
            f"{CONFLICT_MGDL:g} mg/dL: their slots become missing",
        },
        "sha256": shipped_sha256(name),
    }
    return frame.copy(), metadata


def shipped_sha256(name: str) -> str:
    """One digest of the shipped files a real cohort is built from (its content identity)."""
    digest = hashlib.sha256()
    for dataset in datasets_of(name):
        for suffix in (".parquet", "_people.csv"):
            digest.update((real_folder() / f"{dataset}{suffix}").read_bytes())
    return digest.hexdigest()
