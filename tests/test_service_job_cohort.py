"""The service's personalization worker builds the merged cohort (D_G + one person's
uploads) in memory: the same cohort the former Parquet round trip in /dev/shm gave."""

import numpy as np
import pandas as pd
import pytest

from tailorml.config import config_from_dict
from tailorml.data.cohort import load_cohort
from tailorml.data.importers.common import ImportedReadings, build_cohort, readings_frame
from tailorml.io import atomic_write_json, atomic_write_parquet
from tailorml.service.jobs import COHORT_COLUMNS, with_person

PERSON = "person-1"


def _uploads() -> pd.DataFrame:
    times = pd.Timestamp("2024-03-01") + pd.to_timedelta(np.arange(400) * 5 + 0.3, unit="min")
    values = 140 + 40 * np.sin(np.arange(400) / 20)
    values[50:53] = np.nan  # a gap
    parsed = ImportedReadings("test", "uploads.json", readings_frame(times, values))
    frame = build_cohort([parsed], 5, person_id=PERSON, keep_ids=True).frame
    return frame.assign(group="unknown", cho=0.0, insulin=0.0)[list(COHORT_COLUMNS)]


@pytest.mark.parametrize("individuals", [["adult-008", "child-004"], []])
def test_the_merged_cohort_in_memory_is_the_one_the_file_round_trip_gave(tmp_path, individuals):
    config = config_from_dict(
        {"cohort": {"path": "synthetic", "individuals": individuals, "max_days": 3.0}}
    )
    general = load_cohort(config.cohort.path)
    mine = _uploads()
    cohort = with_person(config, general, mine, PERSON)

    # what the worker did before: the merged frame as Parquet + JSON, loaded back
    base = general.readings.assign(
        **{c: 0.0 for c in ("cho", "insulin") if c not in general.readings}
    )
    merged = pd.concat([base[list(COHORT_COLUMNS)], mine], ignore_index=True)
    path = tmp_path / "cohort.parquet"
    atomic_write_parquet(path, merged)
    atomic_write_json(path.with_suffix(".json"), cohort.metadata)
    chosen = [*individuals, PERSON] if individuals else None
    before = load_cohort(path, individuals=chosen, max_days=config.cohort.max_days)

    pd.testing.assert_frame_equal(cohort.readings, before.readings)
    assert cohort.ids == before.ids and PERSON in cohort.ids
    assert cohort.individuals == before.individuals
    assert cohort.sample_minutes == before.sample_minutes and cohort.notes == before.notes
    assert cohort.is_synthetic("adult-008") and not cohort.is_synthetic(PERSON)
