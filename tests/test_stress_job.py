"""`tailorml stress` end to end on a small slice of the synthetic cohort, and its errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tailorml.data.cohort import default_cohort_path
from tailorml.errors import TailormlError
from tailorml.models.cnn import save_model
from tailorml.shift.job import model_labels, stress_models
from tailorml.shift.life import simulate_life
from tailorml.shift.suite import CLEAN, sensor_shifts

ENV = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}


def tailorml(*args):
    return subprocess.run(
        [sys.executable, "-m", "tailorml", *args], capture_output=True, text=True, env=ENV
    )


PATIENTS = ["adolescent-003", "adult-008", "child-004"]


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory):
    """Three simulated patients, three days, marked synthetic as the shipped file is."""
    frame = pd.read_parquet(default_cohort_path())
    frame = frame[frame["patient_id"].isin(PATIENTS)]
    first = frame.groupby("patient_id")["time"].transform("min")
    frame = frame[frame["time"] < first + pd.Timedelta(days=3)]
    path = tmp_path_factory.mktemp("stress") / "small.parquet"
    frame.to_parquet(path, index=False)
    path.with_suffix(".json").write_text(json.dumps({"synthetic": True}))
    return path


def test_stress_writes_paired_tables_and_is_deterministic(trained, small_cohort, tmp_path):
    model = tmp_path / "m.pt"
    save_model(trained.model, model)
    first = stress_models([model], small_cohort, tmp_path / "a", seed=3)
    second = stress_models([model], small_cohort, tmp_path / "b", seed=3)
    per_individual = pd.read_csv(first / "per_individual.csv")
    shifts = [CLEAN] + [shift.name for shift in sensor_shifts()]
    assert list(dict.fromkeys(per_individual["shift"])) == shifts
    # the same windows under every shift: a paired comparison
    assert per_individual.groupby("patient_id")["windows"].nunique().eq(1).all()
    assert (per_individual.loc[per_individual["shift"] == CLEAN, "undecided_fraction"] == 0).all()
    dropout = per_individual[per_individual["shift"] == "dropouts"]["undecided_fraction"]
    assert (dropout > 0).any()  # a window with a missing reading gets no decision
    pd.testing.assert_frame_equal(
        pd.read_csv(first / "summary.csv"), pd.read_csv(second / "summary.csv")
    )
    html = (first / "report.html").read_text()
    assert "Synthetic data." in html and "iCGM" in html
    assert json.loads((first / "metrics.json").read_text())["synthetic"] is True


def test_model_labels_are_short_and_distinct(tmp_path):
    paths = [tmp_path / "run1" / "model.pt", tmp_path / "x" / "alice.pt", tmp_path / "alice.pt"]
    assert model_labels(paths) == ["run1", "alice", "alice-2"]


def test_stress_refuses_a_missing_model_and_an_out_that_is_a_file(tmp_path):
    out = tmp_path / "out"
    result = tailorml("stress", "--model", str(tmp_path / "none.pt"), "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "none.pt" in result.stderr
    assert not out.exists()  # a refused command leaves no folder behind
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = tailorml("stress", "--model", str(tmp_path / "m.pt"), "--out", str(blocker))
    assert result.returncode == 2
    assert (
        result.stderr
        == f"error: --out {blocker} is a file; give a folder (it is created if missing)\n"
    )


def test_an_unknown_life_patient_is_refused_before_any_work(trained, small_cohort, tmp_path):
    model = tmp_path / "m.pt"
    save_model(trained.model, model)
    with pytest.raises(TailormlError, match="--life-patient 'alice' is not a UVA/Padova"):
        stress_models(
            [model], small_cohort, tmp_path / "o", with_life=True, life_patients=["alice"]
        )
    assert not (tmp_path / "o").exists()


def test_life_scenarios_change_only_what_they_say(tmp_path):
    cohorts = simulate_life(["adult-001"], days=1, seed=0, out_dir=tmp_path)
    # growth is for children only: an adult-only study has no growth scenario
    assert set(cohorts) == {"life_unchanged", "life_meals", "life_exercise", "life_illness"}
    assert all(cohort.synthetic for cohort in cohorts.values())
    unchanged = cohorts["life_unchanged"].readings["bg"].to_numpy()
    ill = cohorts["life_illness"].readings["bg"].to_numpy()
    assert ill.mean() > unchanged.mean()  # halved insulin sensitivity raises glucose
