import numpy as np
import pandas as pd
import pytest

from conftest import cohort_frame
from tailorml.data.cohort import default_cohort_path, load_cohort
from tailorml.errors import CohortError


def test_shipped_cohort_is_the_synthetic_30_patient_cohort():
    cohort = load_cohort()
    assert cohort.source == str(default_cohort_path())
    assert cohort.synthetic
    assert cohort.sample_minutes == 3
    assert len(cohort.individuals) == 30
    groups = pd.Series([individual.group for individual in cohort.individuals]).value_counts()
    assert groups.to_dict() == {"adolescent": 10, "adult": 10, "child": 10}
    assert {"body_weight_kg", "age_years"} <= set(cohort.individuals[0].traits)
    for column in ("patient_id", "group", "time", "cgm", "bg", "cho", "insulin"):
        assert column in cohort.readings.columns
    # 14 days of 3-minute readings per patient
    assert (cohort.readings.groupby("patient_id").size() == 14 * 480).all()


def test_missing_required_column_names_file_and_columns(write_cohort):
    frame = cohort_frame({"a": [100.0] * 5}).drop(columns=["cgm"])
    path = write_cohort(frame)
    with pytest.raises(CohortError, match=r"cohort\.parquet: missing required column\(s\) cgm"):
        load_cohort(path)


def test_time_going_back_is_reported_with_patient_and_row(write_cohort):
    frame = cohort_frame({"a": [100.0] * 5})
    frame.loc[3, "time"] = frame.loc[1, "time"]
    with pytest.raises(CohortError, match=r"goes back in time for patient 'a' at row 3"):
        load_cohort(write_cohort(frame))


def test_duplicate_timestamp_is_reported(write_cohort):
    frame = cohort_frame({"a": [100.0] * 5})
    frame.loc[2, "time"] = frame.loc[1, "time"]
    with pytest.raises(CohortError, match="repeats"):
        load_cohort(write_cohort(frame))


def test_impossible_glucose_is_rejected_with_the_value(write_cohort):
    frame = cohort_frame({"a": [100.0, 100.0, -5.0, 100.0]})
    with pytest.raises(CohortError, match=r"impossible glucose.*row 2.*value -5"):
        load_cohort(write_cohort(frame))


def test_mmol_per_litre_gets_a_conversion_hint(write_cohort):
    frame = cohort_frame({"a": [5.5, 6.0, 7.2, 8.1]})
    with pytest.raises(CohortError, match=r"mmol/L.*18\.016"):
        load_cohort(write_cohort(frame))


def test_text_device_codes_are_rejected_with_a_fix(write_cohort):
    frame = cohort_frame({"a": [100.0] * 4})
    frame["cgm"] = frame["cgm"].astype(object)
    frame.loc[1, "cgm"] = "Low"
    with pytest.raises(CohortError, match=r"non-numeric.*'Low'"):
        load_cohort(write_cohort(frame, "cohort.csv"))


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(CohortError, match="not found"):
        load_cohort(tmp_path / "none.parquet")
    other = tmp_path / "cohort.xlsx"
    other.write_text("x")
    with pytest.raises(CohortError, match=r"must be \.parquet or \.csv"):
        load_cohort(other)


def test_nan_is_a_missing_reading_and_absent_slots_become_nan(write_cohort):
    frame = cohort_frame({"a": [100.0, np.nan, 110.0, 120.0, 130.0]})
    frame = frame.drop(index=3)  # the 09-minute reading is absent from the file
    cohort = load_cohort(write_cohort(frame, "cohort.csv"))
    readings = cohort.of("a")
    assert len(readings) == 5
    assert np.isnan(readings["cgm"].to_numpy()[[1, 3]]).all()
    assert readings["cgm"].to_numpy()[4] == 130.0
    assert cohort.notes["missing_slots_inserted"] == 1


def test_jittered_timestamps_snap_to_the_grid(write_cohort):
    frame = cohort_frame({"a": [100.0, 101.0, 102.0, 103.0]}, sample_minutes=5)
    frame.loc[2, "time"] += pd.Timedelta(seconds=40)
    cohort = load_cohort(write_cohort(frame))
    assert cohort.sample_minutes == 5
    steps = np.diff(cohort.of("a")["time"].to_numpy()) / np.timedelta64(1, "m")
    assert steps.tolist() == [5.0, 5.0, 5.0]


def test_unknown_individual_lists_the_valid_ones(write_cohort):
    path = write_cohort(cohort_frame({"a": [100.0] * 4, "b": [100.0] * 4}))
    with pytest.raises(CohortError, match=r"unknown individual.*z.*the file has a, b"):
        load_cohort(path, individuals=["z"])
    assert load_cohort(path, individuals=["b"]).ids == ["b"]
