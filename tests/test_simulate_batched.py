"""The batched engine against the reference engine (simglucose's own T1DPatient)."""

import json

import numpy as np
import pandas as pd
import pytest

from tailorml.config import SimulationConfig
from tailorml.data import simulate, simulate_batched
from tailorml.data.cohort import default_cohort_path
from tailorml.data.simulate_batched import simulate_patients
from tailorml.errors import SimulationError


def assert_same_cohort(batched: pd.DataFrame, reference: pd.DataFrame) -> None:
    """Same rows; BG within one unit of its 0.01 mg/dL rounding, everything else equal.

    Both engines take the same integration steps with the same arithmetic, so they differ
    by floating-point rounding at most (far inside the 1 mg/dL the issue allows); a CGM
    reading could only move by its own rounding unit if a BG landed on a .5 boundary."""
    assert len(batched) == len(reference)
    assert np.abs(batched["bg"] - reference["bg"]).max() <= 0.01 + 1e-9
    assert np.nanmax(np.abs(batched["cgm"] - reference["cgm"])) <= 1.0
    assert batched["cgm"].isna().equals(reference["cgm"].isna())
    pd.testing.assert_frame_equal(
        batched.drop(columns=["bg", "cgm"]), reference.drop(columns=["bg", "cgm"])
    )


def test_reproduces_the_shipped_cohort_for_fourteen_hours():
    # The shipped file was made by the reference engine with the default scenario (its
    # metadata lists the meals sorted by name, but they are drawn in the config's order,
    # so the default config, not the metadata, is what made the file).
    shipped = pd.read_parquet(default_cohort_path())
    names = ["adolescent#003", "adult#007", "child#004"]
    results = simulate_patients(names, SimulationConfig(), minutes=14 * 60)
    for name, (frame, info) in zip(names, results, strict=True):
        expected = shipped[shipped["patient_id"] == simulate.patient_id(name)].head(168)
        assert frame["cho"].sum() > 0 and frame["insulin"].max() > 1  # meals and a bolus
        assert_same_cohort(frame, expected.reset_index(drop=True))
        assert info["simglucose_name"] == name


def test_matches_the_reference_engine_when_everything_happens():
    # Every behaviour within 14 hours: occlusions, dropouts, exercise, missed and late
    # boluses, lows treated (a high basal) and highs corrected (a low threshold).
    config = SimulationConfig(
        days=1,
        occlusion_per_week=7.0,
        dropout_per_day=4.0,
        exercise_per_week=7.0,
        missed_bolus_probability=0.5,
        late_bolus_probability=0.5,
        correction_threshold_mgdl=160.0,
        correction_probability=1.0,
        basal_factor_range=(1.2, 2.0),
        correction_gain_range=(1.5, 2.0),
    )
    names = ["adolescent#002", "adolescent#007", "child#002"]
    minutes = 14 * 60
    treated = corrected = 0
    batched = simulate_patients(names, config, minutes=minutes)
    for name, (frame, info) in zip(names, batched, strict=True):
        reference, reference_info = simulate.simulate_patient(name, config, minutes=minutes)
        assert_same_cohort(frame, reference)
        assert info == reference_info
        setup = simulate.setup_patient(name, config, minutes)
        eaten = sum(grams for minute, grams in setup.meals_at.items() if minute < minutes - 5)
        treated += frame["cho"].sum() > eaten + 1  # fast carbs beyond the planned meals
        meal_rows = {minute // 5 + 1 for minute in setup.meal_bolus_grams}
        corrected += any(row not in meal_rows for row in frame.index[frame["insulin"] > 0.5])
    child = batched[2][0]
    assert treated >= 1 and corrected >= 1
    assert child["cgm"].isna().any() and (child["insulin"] == 0).any()  # dropout, occlusion


def test_a_blow_up_is_an_error_naming_the_patient(monkeypatch):
    real = simulate_batched.uva_padova.derivatives
    weight = simulate_batched.uva_padova.ROWS["BW"]
    adult_002 = simulate.parameter_tables()[0].set_index("Name").loc["adult#002", "BW"]

    def poisoned(x, c):
        dx = real(x, c)
        dx[:, c[weight] == adult_002] = np.nan  # this patient's model breaks
        return dx

    monkeypatch.setattr(simulate_batched.uva_padova, "derivatives", poisoned)
    with pytest.raises(SimulationError, match=r"simulation of adult#002 failed at minute 0"):
        simulate_patients(["adult#001", "adult#002"], SimulationConfig(days=1), minutes=10)


def test_cohort_records_its_engine_and_keeps_the_reference_fingerprint(tmp_path):
    shipped = json.loads(simulate.metadata_path(default_cohort_path()).read_text())
    assert shipped["engine"] == "reference"
    reference = SimulationConfig(engine="reference")
    # the shipped cohort stays up to date for `make simulate` (--engine reference)
    assert simulate.cohort_fingerprint(reference) == shipped["fingerprint"]
    batched = SimulationConfig(engine="batched", days=1, patients=["child-005"])
    assert simulate.cohort_fingerprint(batched) != simulate.cohort_fingerprint(
        batched.model_copy(update={"engine": "reference"})
    )

    progress, done = [], []
    out = simulate.simulate_cohort(
        batched,
        tmp_path / "c.parquet",
        workers=1,
        on_patient_done=lambda name, reused: done.append((name, reused)),
        on_progress=progress.append,
    )
    metadata = json.loads(simulate.metadata_path(out).read_text())
    assert metadata["engine"] == "batched" and metadata["synthetic"] is True
    assert "SYNTHETIC" in metadata["description"] and "batched" in metadata["description"]
    assert sum(progress) == 1 and done == [("child#005", False)]  # one patient-day
    assert len(pd.read_parquet(out)) == 288
