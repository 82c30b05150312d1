"""The experiment runner end to end, its Table I and its backends."""

import json
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tailorml.cli import app
from tailorml.config import config_from_dict
from tailorml.errors import ConfigError
from tailorml.evaluate.significance import paired_p_value
from tailorml.experiment.summary import table_one
from tailorml.jobs.experiment import run as run_experiment
from tailorml.personalize.grid import expand

runner = CliRunner()

GLUCOSE = """
[cohort]
path = "synthetic"
individuals = ["adolescent-006", "adult-007", "child-005"]
max_days = 3.0

[experiment]
name = "tiny-glucose"
seeds = [0, 1]
workers = 1

[train]
epochs = 1
weight_decay = 0.0

[methods.baseline]
[methods.early_shaping]
n = [5]
[methods.transfer]
n = [5]
[methods.single_sample_grouping]
n = [50]

[run]
runs_dir = "{runs}"
"""


def writers_config(runs, backend="local", workers=1):
    return config_from_dict(
        {
            "experiment": {
                "dataset": "writers",
                "name": f"tiny-{backend}",
                "seeds": [0],
                "workers": workers,
                "backend": backend,
                "min_individual_samples": 10,
                "required_classes": [],
            },
            "train": {
                "epochs": 1,
                "batch_size": 16,
                "class_weighting": "none",
                "weight_decay": 0.0,
            },
            "writers": {"individuals": 3, "general_writers": 2, "samples_per_class": 2},
            "model": {"conv_channels": [4, 8], "kernel_size": 3, "hidden": 16},
            "methods": {
                "baseline": {},
                "sample_weighing": {"n_i": [2]},
                "transfer": {"n": [4]},
                "individual_grouping": {"n": [1]},
            },
            "run": {"runs_dir": str(runs)},
        }
    )


@pytest.fixture(scope="module")
def glucose_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("experiment")
    config = base / "tiny.toml"
    config.write_text(GLUCOSE.format(runs=(base / "runs").as_posix()))
    result = runner.invoke(app, ["experiment", str(config)])
    assert result.exit_code == 0, result.output
    (run,) = (base / "runs").iterdir()
    return run, result.output


def test_results_table_has_one_row_per_individual_setting_and_seed(glucose_run):
    run, output = glucose_run
    results = pd.read_csv(run / "results.csv")
    assert len(results) == 3 * 4 * 2
    assert set(results["setting"]) == {
        "Baseline",
        "ES(n=5)",
        "TL(n=5, frozen_layers=0)",
        "SG(n=50)",
    }
    ok = results[results["status"] == "ok"]
    assert ok["acc_individual"].between(0, 1).all() and ok["acc_general"].between(0, 1).all()
    assert {"hypo_sensitivity", "false_alerts_per_day", "median_lead_minutes"} <= set(results)
    assert (run / "results.parquet").is_file() and (run / "report.html").is_file()
    assert "Table I" in output


def test_an_individual_missing_a_class_is_skipped_with_the_reason(glucose_run):
    run, _ = glucose_run
    results = pd.read_csv(run / "results.csv", keep_default_na=False)
    skipped = results[results["individual"] == "adult-007"]
    assert (skipped["status"] == "skipped").all() and len(skipped) == 8
    assert "no 'hyper' sample" in skipped["reason"].iloc[0]
    html = (run / "report.html").read_text()
    assert "Skipped individuals" in html and "Synthetic data." in html


def test_summary_is_table_one_with_p_values_against_the_baseline(glucose_run):
    run, _ = glucose_run
    summary = pd.read_csv(run / "summary.csv")
    assert summary["setting"].tolist()[0] == "Baseline"
    assert (summary["individuals"] == 2).all()
    assert np.isnan(summary.loc[0, "acc_individual_p"])
    assert summary["acc_individual_rank"].min() == 1


def test_resume_recomputes_only_what_is_missing(glucose_run):
    run, _ = glucose_run
    results = sorted((run / "cache" / "results").glob("*/*.json"))
    removed = results[0]
    kept = {path: path.stat().st_mtime_ns for path in results[1:]}
    removed.unlink()
    time.sleep(0.01)
    result = runner.invoke(app, ["experiment", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert removed.exists()
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in kept.items())


def test_unknown_method_or_parameter_fails_before_any_work(tmp_path):
    config = config_from_dict(
        {"methods": {"baseline": {}, "fine_tune": {"n": [1]}}, "run": {"runs_dir": str(tmp_path)}}
    )
    with pytest.raises(ConfigError, match="unknown method 'fine_tune'; valid methods"):
        run_experiment(config)
    config = config_from_dict(
        {
            "methods": {"baseline": {}, "transfer": {"iterations": [1]}},
            "run": {"runs_dir": str(tmp_path)},
        }
    )
    with pytest.raises(ConfigError, match="no parameter iterations; valid: n, frozen_layers"):
        run_experiment(config)
    assert not any(tmp_path.iterdir())


def test_a_method_that_cannot_use_the_models_inputs_fails_before_any_work(tmp_path):
    # multi-modal co-teaching needs an insulin/carb view; the default model reads only cgm
    config = config_from_dict(
        {
            "methods": {"baseline": {}, "coteaching_mm": {"n": [1]}},
            "run": {"runs_dir": str(tmp_path)},
        }
    )
    with pytest.raises(ConfigError, match=r"coteaching_mm.*task\.channels"):
        run_experiment(config)
    assert not any(tmp_path.iterdir())
    config.task.channels = ["cgm", "iob", "cob"]
    expand(config.methods)[1].strategy().check_inputs(tuple(config.task.channels))  # accepted


def test_methods_table_replaces_the_default_grid():
    config = config_from_dict({"methods": {"baseline": {}, "early_shaping": {"n": [1, 2]}}})
    assert [s.label for s in expand(config.methods)] == ["Baseline", "ES(n=1)", "ES(n=2)"]


def test_wilcoxon_p_value_by_hand():
    individuals = [f"i{k}" for k in range(6)]
    reference = pd.Series([0.5] * 6, index=individuals)
    better = reference + np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    # all six differences positive: exact two-sided p = 2 / 2**6
    assert paired_p_value(better, reference) == pytest.approx(2 / 64)
    assert paired_p_value(reference, reference) == 1.0


def test_table_one_statistics_by_hand():
    rows = []
    for individual, (base, other) in {"a": (0.6, 0.7), "b": (0.8, 0.8), "c": (0.7, 0.9)}.items():
        for seed, shift in ((0, -0.1), (1, 0.1)):  # seeds average to the values above
            rows.append(
                {
                    "method": "baseline",
                    "setting": "Baseline",
                    "individual": individual,
                    "seed": seed,
                    "status": "ok",
                    "acc_individual": base + shift,
                    "acc_general": 0.9,
                }
            )
            rows.append(
                {
                    "method": "transfer",
                    "setting": "TL",
                    "individual": individual,
                    "seed": seed,
                    "status": "ok",
                    "acc_individual": other + shift,
                    "acc_general": 0.8,
                }
            )
    summary = table_one(pd.DataFrame(rows), "baseline", ["Baseline", "TL"]).set_index("setting")
    assert summary.loc["TL", "acc_individual_mean"] == pytest.approx(0.8)
    assert summary.loc["TL", "acc_individual_sd"] == pytest.approx(0.1)
    assert summary.loc["TL", "acc_individual_min"] == pytest.approx(0.7)
    assert summary.loc["Baseline", "acc_individual_mean"] == pytest.approx(0.7)
    assert summary.loc["TL", "acc_individual_rank"] == 1
    assert summary.loc["Baseline", "acc_general_rank"] == 1
    # individual b has the same value under both methods: 2 pairs behind p, 3 for acc D_G
    assert summary.loc["TL", "acc_individual_pairs"] == 2
    assert summary.loc["TL", "acc_general_pairs"] == 3
    assert np.isnan(summary.loc["Baseline", "acc_individual_pairs"])  # the reference itself


def test_a_paired_test_with_too_few_individuals_is_flagged():
    """Exact two-sided Wilcoxon: n same-sign differences give p = 2 / 2**n; 5 give 0.0625,
    so 6 are the fewest that can reach 0.05."""
    from tailorml.evaluate.significance import min_pairs_for_test, smallest_p_value
    from tailorml.experiment.report import flag_weak_tests

    assert smallest_p_value(5) == 0.0625 and smallest_p_value(6) == pytest.approx(2 / 64)
    assert min_pairs_for_test() == 6
    summary = pd.DataFrame(
        {
            "setting": ["Baseline", "TL", "ES"],
            "individuals": [3, 3, 8],
            "acc_individual_p": [np.nan, 0.25, 0.01],
            "acc_individual_pairs": [np.nan, 3, 8],
            "acc_general_p": [np.nan, 1.0, 0.02],
            "acc_general_pairs": [np.nan, 0, 7],  # TL equals the reference on D_G: p = 1
        }
    )
    flagged, warning = flag_weak_tests(summary)
    assert flagged["acc_individual_too_few"].tolist() == [False, True, False]
    assert flagged["acc_general_too_few"].tolist() == [False, False, False]
    assert warning == {"pairs": 3, "smallest_p": 0.25, "needed": 6, "settings": ["TL"]}
    enough = summary.assign(acc_individual_pairs=[np.nan, 6, 8])
    assert flag_weak_tests(enough)[1] is None


def test_writers_experiment_gives_the_same_results_on_ray_as_locally(tmp_path):
    pytest.importorskip("ray")
    import ray

    local = run_experiment(writers_config(tmp_path / "local"))
    try:
        remote = run_experiment(writers_config(tmp_path / "ray", backend="ray", workers=2))
    finally:
        ray.shutdown()
    columns = ["individual", "setting", "seed", "acc_individual", "acc_general"]

    def table(run):
        frame = pd.read_parquet(run.path / "results.parquet")[columns]
        return frame.sort_values(columns[:3]).reset_index(drop=True)

    pd.testing.assert_frame_equal(table(local), table(remote))
    assert len(table(local)) == 3 * 4
    config = json.loads(json.dumps(remote.run.config().experiment.model_dump()))
    assert config["backend"] == "ray"


def test_the_ray_backend_leaves_the_sigterm_handler_to_tailorml():
    """ray.init installs its own SIGTERM handling (a crash report and abort, exit 134): the
    CLI's handler must survive it, so SIGTERM stops a Ray run like Ctrl-C (exit 143)."""
    pytest.importorskip("ray")
    import signal

    import ray

    from tailorml.experiment.backends import RayBackend

    def ours(signal_number, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, ours)
    try:
        RayBackend(workers=1)
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        ray.shutdown()
        signal.signal(signal.SIGTERM, previous)


def test_robust_experiment_reports_verified_accuracy_and_size(tmp_path):
    config = writers_config(tmp_path)
    data = config.model_dump(mode="json")
    data["train"]["robust"] = "ibp"
    data["robust"] |= {"eps": 0.5, "evaluate": True, "max_windows": 8, "method": "crown-ibp"}
    data["methods"] = {
        "baseline": {},
        "certified_finetuning": {"n": [4], "bound": "ibp"},
        "sparse_finetuning": {"n": [8], "sparsity": 0.5, "structured": True},
    }
    run = run_experiment(config_from_dict(data))
    results = pd.read_parquet(run.path / "results.parquet")
    assert len(results) == 3 * 3
    # verified <= PGD <= clean on the same windows: bounds are sound, PGD an upper bound
    assert (results["verified_acc_individual"] <= results["pgd_acc_individual"] + 1e-12).all()
    assert (results["pgd_acc_individual"] <= results["clean_acc_individual"] + 1e-12).all()
    size = results.groupby("method")["parameters"].mean()
    assert size["sparse_finetuning"] <= 0.5 * size["baseline"]
    assert size["certified_finetuning"] == size["baseline"]
    summary = pd.read_csv(run.path / "summary.csv")
    assert {"verified_acc_individual_mean", "verified_acc_individual_min"} <= set(summary)
    html = (run.path / "report.html").read_text()
    assert "Robustness to sensor error and model size" in html
    assert "trained with\n<b>ibp</b>" in html


def test_collect_keeps_case_distinct_ids_and_ignores_a_pre_escaping_folder(tmp_path):
    """ "Alice" and "alice" are two people with two result folders; a folder named the old way
    ("Alice", from before upper case was escaped) is not counted a second time."""
    from tailorml.jobs.experiment import collect
    from tailorml.runs import Run

    def row(folder: str, individual: str, accuracy: float) -> None:
        path = tmp_path / "cache" / "results" / folder / "baseline-seed0.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"individual": individual, "acc_individual": accuracy}))

    row("%41lice", "Alice", 0.75)
    row("alice", "alice", 0.5)
    row("Alice", "Alice", 0.25)  # stale: written under the old encoding
    rows = collect(Run(tmp_path)).sort_values("individual")
    assert rows.to_dict("records") == [
        {"individual": "Alice", "acc_individual": 0.75},
        {"individual": "alice", "acc_individual": 0.5},
    ]


def test_an_experiment_where_everyone_would_be_skipped_stops_before_any_work(tmp_path):
    """It trained the global models, then crashed in Table I (KeyError 'acc_general')."""
    config = writers_config(tmp_path / "runs")
    config.experiment.min_individual_samples = 10**6  # 3 writers with ~40 samples each
    with pytest.raises(ConfigError) as error:
        run_experiment(config)
    message = str(error.value)
    assert message.startswith("no individual can be personalized: all 3 would be skipped (")
    assert "lower experiment.min_individual_samples" in message
    (run,) = (tmp_path / "runs").iterdir()
    assert not (run / "cache").exists() and not (run / "results.csv").exists()
