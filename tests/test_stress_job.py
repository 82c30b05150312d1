"""`tailorml stress` end to end on a small slice of the synthetic cohort, and its errors."""

import json

import numpy as np
import pandas as pd
import pytest

from tailorml.config import StressConfig
from tailorml.data.cohort import default_cohort_path
from tailorml.errors import TailormlError
from tailorml.jobs import stress
from tailorml.models.cnn import save_model
from tailorml.runs import Run
from tailorml.shift.life import simulate_life
from tailorml.shift.sources import from_files
from tailorml.shift.suite import CLEAN, sensor_shifts

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
    first = stress.run(from_files([model]), small_cohort, tmp_path / "a", StressConfig(seed=3)).path
    second = stress.run(
        from_files([model]), small_cohort, tmp_path / "b", StressConfig(seed=3)
    ).path
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
    # a run directory like every job's: its kind, finished steps and what it was run on
    stressed = Run.open(first)
    assert stressed.kind == "stress" and stressed.done("stress") and stressed.done("report")
    assert stressed.config().cohort.path == str(small_cohort)
    assert stressed.config().stress == StressConfig(seed=3)  # what it was run with


def test_model_labels_are_short_and_distinct(trained, tmp_path):
    paths = [tmp_path / "run1" / "model.pt", tmp_path / "x" / "alice.pt", tmp_path / "alice.pt"]
    for path in paths:
        path.parent.mkdir(exist_ok=True)
        save_model(trained.model, path)
    assert [s.label for s in from_files(paths)] == ["run1", "alice", "alice-2"]


def test_stress_refuses_a_missing_model_and_an_out_that_is_a_file(tmp_path, tailorml_in_process):
    tailorml = tailorml_in_process  # cli.main: exit code and stderr, without a subprocess
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
        stress.run(
            from_files([model]),
            small_cohort,
            tmp_path / "o",
            StressConfig(life=True, life_patients=["alice"]),
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


def test_a_persons_session_is_stressed_on_their_data_at_each_candidates_threshold(
    trained, small_cohort, tmp_path
):
    from tailorml.models.cnn import model_bytes
    from tailorml.registry.models import CandidateRecord, Registry
    from tailorml.shift.sources import from_session

    registry = Registry(tmp_path / "registry")
    save_model(trained.model, tmp_path / "predefined.pt")
    registry.register_predefined(tmp_path / "predefined.pt", "h", {}, "abc", "test")
    gates = [{"gate": "g", "passed": True, "numbers": {}, "reason": "ok"}]
    records = [
        CandidateRecord("predefined", b"", 0.7, False, {}, gates, {}, registry.predefined().id),
        CandidateRecord("TL", model_bytes(trained.model), 0.25, True, {}, gates, {}),
    ]
    registry.register_session("adult-008", registry.predefined().id, "h", records, 1, {})
    sources = from_session(registry.root, "adult-008")
    assert [s.label for s in sources] == ["predefined [failed_gates]", "TL [pending_review]"]
    assert [s.model.policy.threshold for s in sources] == [0.7, 0.25]
    result = stress.run(sources, small_cohort, tmp_path / "out", individuals=["adult-008"])
    out = result.path
    table = pd.read_csv(out / "per_individual.csv")
    assert set(table["patient_id"]) == {"adult-008"}  # the person's own data only
    assert set(table["model"]) == {"predefined [failed_gates]", "TL [pending_review]"}
    assert "Models side by side" in (out / "report.html").read_text()
    with pytest.raises(TailormlError, match="'child-004' has no personalization session"):
        from_session(registry.root, "child-004")
    from tailorml.shift.sources import session_cohort

    assert session_cohort(registry.root, "adult-008") is None  # its summary names no cohort
    summary = {"cohort": str(small_cohort)}
    registry.register_session("adult-008", registry.predefined().id, "h", records, 1, summary)
    assert session_cohort(registry.root, "adult-008") == small_cohort


def test_models_side_by_side_lists_each_reference_then_its_shifts():
    from tailorml.shift.report import side_by_side

    summary = pd.DataFrame(
        {
            "model": ["a", "b", "a", "b"],
            "shift": ["dropouts", "dropouts", "life_meals", "life_meals"],
            "metric": ["hypo_sensitivity"] * 4,
            "reference": [0.9, 1.0, 0.8, 0.7],
            "shifted": [0.5, 0.75, 0.6, 0.65],
        }
    )
    rows = side_by_side(summary, ["a", "b"], "hypo_sensitivity")
    assert rows == [
        {"shift": "unshifted test part", "reference": True, "a": 0.9, "b": 1.0},
        {"shift": "dropouts", "reference": False, "a": 0.5, "b": 0.75},
        {"shift": "life_unchanged", "reference": True, "a": 0.8, "b": 0.7},
        {"shift": "life_meals", "reference": False, "a": 0.6, "b": 0.65},
    ]
    assert side_by_side(summary, ["a", "b"], "false_alerts_per_day") == []


def test_a_single_pair_has_no_p_value():
    from tailorml.evaluate.significance import paired_p_value

    one = pd.Series([0.5], index=["x"])
    assert np.isnan(paired_p_value(one, pd.Series([1.0], index=["x"])))
    two = pd.Series([0.5, 0.4], index=["x", "y"])
    assert paired_p_value(two, pd.Series([1.0, 1.0], index=["x", "y"])) == pytest.approx(0.5)


def test_life_columns_give_each_scenario_for_one_individual(trained, tmp_path):
    from tailorml.shift.life import life_columns

    simulate_life(["adult-001"], days=1, seed=0, out_dir=tmp_path)
    columns = life_columns(trained.model, trained.model.policy, tmp_path, "adult-001")
    scenarios = ["life_unchanged", "life_meals", "life_exercise", "life_illness"]
    metrics = ["hypo_sensitivity", "false_alerts_per_day", "balanced_accuracy"]
    assert sorted(columns) == sorted(f"{s}__{m}" for s in scenarios for m in metrics)
    assert 0 <= columns["life_unchanged__balanced_accuracy"] <= 1
    assert life_columns(trained.model, trained.model.policy, tmp_path, "child-001") == {}
    # read once per process (cached), and again when the scenario files are rewritten
    again = life_columns(trained.model, trained.model.policy, tmp_path, "adult-001")
    assert pd.Series(again).equals(pd.Series(columns))  # NaN (no low) equals NaN here
    simulate_life(["adult-001"], days=1, seed=5, out_dir=tmp_path)
    other = life_columns(trained.model, trained.model.policy, tmp_path, "adult-001")
    assert not pd.Series(other).equals(pd.Series(columns))  # other days, other figures
