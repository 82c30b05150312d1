"""Shared helpers: small hand-made cohorts whose windows and events can be counted by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

START = pd.Timestamp("2025-01-06 00:00:00")


def cohort_frame(traces: dict[str, list[float]], sample_minutes: int = 3, **extra) -> pd.DataFrame:
    """One row per reading: `traces` maps patient id to its CGM values (NaN = missing)."""
    frames = []
    for patient, values in traces.items():
        n = len(values)
        frame = pd.DataFrame(
            {
                "patient_id": patient,
                "group": extra.get("group", "adult"),
                "time": START + pd.to_timedelta(np.arange(n) * sample_minutes, unit="min"),
                "cgm": np.asarray(values, dtype=float),
                "cho": 0.0,
                "insulin": 0.0,
            }
        )
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def write_cohort(tmp_path: Path):
    """Write a frame to a Parquet (or CSV) file and return its path."""

    def write(frame: pd.DataFrame, name: str = "cohort.parquet") -> Path:
        path = tmp_path / name
        if path.suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        return path

    return write


TINY_RUN = """
[cohort]
individuals = ["adolescent-003", "adult-008", "child-004"]
max_days = 3.0

[train]
epochs = 1

[run]
runs_dir = "{runs}"
name = "tiny"
"""


@pytest.fixture(scope="session")
def tiny_run_config():
    """A train config for a run in seconds: 3 simulated patients, 3 days, one epoch.
    Format with runs=<directory for the run>."""
    return TINY_RUN
