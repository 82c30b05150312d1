"""Leave one dataset out (`tailorml lodo`): the calibration split, figures over people, the
fold rules, and the job end to end on a small hand-made two-dataset cohort."""

import json

import numpy as np
import pandas as pd
import pytest

from tailorml.config import TaskConfig
from tailorml.data.cohort import load_cohort
from tailorml.data.glucose import make_windows
from tailorml.data.splits import calibration_split
from tailorml.errors import ConfigError
from tailorml.evaluate.people import mean_interval, worst_decile
from tailorml.jobs.lodo import folds_of


def _cohort_frame(people: dict[str, str], days: float = 3.0) -> pd.DataFrame:
    """Every 6 hours glucose swings 130 ± 70 mg/dL (a low below 70 once per swing); each
    person is phase-shifted; `people` maps id to dataset."""
    rows = int(days * 288)
    frames = []
    for index, (person, dataset) in enumerate(people.items()):
        minutes = np.arange(rows) * 5.0
        cgm = 130 + 70 * np.sin(2 * np.pi * (minutes + 37 * index) / 360)
        frames.append(
            pd.DataFrame(
                {
                    "patient_id": person,
                    "time": pd.Timestamp("2025-01-06") + pd.to_timedelta(minutes, unit="min"),
                    "cgm": np.round(cgm),
                    "dataset": dataset,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_the_calibration_split_gives_the_first_days_then_a_gap_then_the_rest(write_cohort):
    path = write_cohort(_cohort_frame({"a": "one"}, days=2.0))
    cohort = load_cohort(path)
    windows = make_windows(cohort, TaskConfig())  # 24 readings in, 6 ahead: a span of 30
    splits = calibration_split(cohort, windows, days=0.5)  # 144 rows
    # calibration rows [0, 144): windows starting at rows 0..114; evaluation from row
    # 144 + 30 = 174 to 576: windows starting at rows 174..546
    assert splits.boundaries["a"] == {"calibration": (0, 144), "evaluation": (174, 576)}
    calibration, evaluation = (
        windows.row[splits.of("a", p)] for p in ("calibration", "evaluation")
    )
    assert (calibration.min(), calibration.max(), len(calibration)) == (0, 114, 115)
    assert (evaluation.min(), evaluation.max(), len(evaluation)) == (174, 546, 373)


def test_means_over_people_have_a_bootstrap_interval_and_nan_is_no_person():
    mean, low, high = mean_interval([0.0, 1.0, np.nan, 0.5], samples=500)
    assert mean == 0.5 and 0.0 <= low < 0.5 < high <= 1.0
    assert mean_interval([0.3]) == (0.3, 0.3, 0.3)
    assert np.isnan(mean_interval([np.nan])[0])


def test_the_worst_decile_is_at_least_one_person():
    values = np.arange(20) / 20  # 0.00 .. 0.95: the lowest tenth is 0.00 and 0.05
    assert worst_decile(values) == pytest.approx(0.025)
    assert worst_decile(values, higher_is_worse=True) == pytest.approx(0.925)
    assert worst_decile([0.4, np.nan]) == 0.4


def test_a_cohort_of_one_dataset_cannot_leave_one_out(write_cohort):
    cohort = load_cohort(write_cohort(_cohort_frame({"a": "one", "b": "one"}, days=1.0)))
    with pytest.raises(ConfigError, match="leaving one out needs two or more"):
        folds_of(cohort, [])
    two = load_cohort(write_cohort(_cohort_frame({"a": "one", "b": "two"}, days=1.0)))
    assert folds_of(two, []) == {"one": ["a"], "two": ["b"]}
    with pytest.raises(ConfigError, match=r"lodo\.datasets: three not in the cohort"):
        folds_of(two, ["three"])


def test_lodo_end_to_end_trains_without_each_dataset_and_judges_its_people(
    tmp_path, write_cohort, tailorml_in_process
):
    tailorml = tailorml_in_process
    # a dataset name is data, never a path: "../beta" stays inside folds/ as "%2E.%2Fbeta"
    people = {"a1": "alpha", "a2": "alpha", "b1": "../beta", "b2": "../beta"}
    path = write_cohort(_cohort_frame(people, days=4.0))
    config = tmp_path / "lodo.toml"
    config.write_text(
        f'[cohort]\npath = "{path.as_posix()}"\n[train]\nepochs = 1\n'
        f"[lodo]\ncalibration_days = 1.0\nbootstrap_samples = 100\n"
        f'[run]\nruns_dir = "{(tmp_path / "runs").as_posix()}"\n'
    )
    result = tailorml("lodo", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "runs").iterdir()
    summary = pd.read_csv(run / "summary.csv")
    assert set(summary["held_out"]) == {"alpha", "../beta"}
    assert sorted(p.name for p in (run / "folds").iterdir()) == ["%2E.%2Fbeta", "alpha"]
    assert not (run / "beta").exists() and not (tmp_path / "runs" / "beta").exists()
    for held_out, folder, trained_on in (
        ("alpha", "alpha", ["b1", "b2"]),
        ("../beta", "%2E.%2Fbeta", ["a1", "a2"]),
    ):
        training = json.loads((run / "folds" / folder / "training.json").read_text())
        assert training["trained_on"] == trained_on  # never the people it is judged on
        per_person = pd.read_csv(run / "folds" / folder / "per_person.csv")
        judged = set(per_person["patient_id"])
        assert judged == {p for p, d in people.items() if d == held_out}
    rules = set(summary["rule"])
    assert {"model, population threshold", "model, personal threshold"} <= rules
    assert "Nightscout AR2 at horizon ≤ k, personal level" in rules
    html = (run / "report.html").read_text()
    assert "Left out: alpha" in html and "Left out: ../beta" in html
    assert "Goals on each left-out dataset" in html
    assert "Left-out dataset" in result.stdout
    # the report re-renders from the tables alone
    assert tailorml("report", str(run), cwd=tmp_path).returncode == 0


def test_lodo_refuses_a_one_dataset_cohort_in_one_line_and_creates_no_run(
    tmp_path, write_cohort, tailorml_in_process
):
    tailorml = tailorml_in_process
    path = write_cohort(_cohort_frame({"a": "one", "b": "one"}, days=1.0))
    result = tailorml("lodo", "--cohort", str(path), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "leaving one out needs two or more" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_calibration_days_longer_than_the_data_are_refused_before_training(
    tmp_path, write_cohort, tailorml_in_process
):
    tailorml = tailorml_in_process
    path = write_cohort(_cohort_frame({"a": "one", "b": "two"}, days=2.0))
    config = tmp_path / "long.toml"
    config.write_text(f'[cohort]\npath = "{path.as_posix()}"\n[lodo]\ncalibration_days = 3.0\n')
    result = tailorml("lodo", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "calibration_days = 3 leaves the people of one no day" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_an_empty_cohort_option_is_refused_not_read_as_the_default(tmp_path, tailorml_in_process):
    tailorml = tailorml_in_process
    result = tailorml("lodo", "--cohort", "", cwd=tmp_path)
    assert result.returncode == 2 and "--cohort is empty" in result.stderr
    assert not (tmp_path / "runs").exists()
