"""End to end through the CLI, on a tiny slice of the shipped synthetic cohort."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tailorml.cli import app

runner = CliRunner()


SRC = Path(__file__).resolve().parents[1] / "src"
ENV = os.environ | {"PYTHONPATH": str(SRC)}  # absolute: also right when cwd is elsewhere


@pytest.fixture
def tailorml(tailorml_in_process):
    """`tailorml ARGS` through `cli.main`, with its exit code, stdout and stderr, in this
    process (a subprocess per command paid the torch import each time); the signal tests
    below start the real executable."""
    return tailorml_in_process


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_run_config):
    base = tmp_path_factory.mktemp("e2e")
    config = base / "tiny.toml"
    config.write_text(tiny_run_config.format(runs=(base / "runs").as_posix()))
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    (run,) = (base / "runs").iterdir()
    return run, result.output


def test_train_writes_a_complete_run_directory(tiny_run):
    run, output = tiny_run
    for name in (
        "config.toml",
        "environment.json",
        "run.json",
        "model.pt",
        "training.json",
        "metrics.json",
        "per_individual.csv",
        "predictions.parquet",
        "by_group.csv",
        "glycemia.csv",
        "report.html",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["synthetic"] is True
    assert metrics["cohort"]["individuals"] == 3
    assert len(metrics["model"]["sha256"]) == 64
    per_individual = pd.read_csv(run / "per_individual.csv")
    assert per_individual["patient_id"].tolist() == ["adolescent-003", "adult-008", "child-004"]
    assert per_individual["windows"].sum() == metrics["windows"]["test"]
    environment = json.loads((run / "environment.json").read_text())
    assert environment["packages"]["torch"].startswith("2.")
    assert "report.html" in output
    # the threshold chosen on validation data is the one saved with the model and evaluated
    from tailorml.models.cnn import load_model

    chosen = json.loads((run / "training.json").read_text())["operating_point"]
    assert chosen["chosen_on"] == "the validation parts of 3 individuals"
    assert load_model(run / "model.pt").policy.threshold == chosen["threshold"]
    assert metrics["policy"]["threshold"] == metrics["alerting"]["threshold"] == chosen["threshold"]
    assert metrics["operating_point"] == chosen
    assert f"The threshold {chosen['threshold']:g} was" in (run / "report.html").read_text()


def test_report_is_self_contained_and_labelled_synthetic(tiny_run):
    run, _ = tiny_run
    html = (run / "report.html").read_text()
    assert "Synthetic data." in html and "not clinical evidence" in html
    assert html.count("data:image/png;base64,") >= 5  # trace, bars, confusion, training, AGP
    assert "adult-008" in html
    assert "Clinical CGM summary" in html and "ambulatory glucose profile" in html
    glycemia = pd.read_csv(run / "glycemia.csv")
    assert glycemia["patient_id"].tolist() == ["adolescent-003", "adult-008", "child-004"]
    pooled = json.loads((run / "metrics.json").read_text())["glycemia"]
    assert pooled["people"] == 3 and pooled["readings"] == glycemia["readings"].sum()


def test_report_can_be_re_rendered(tiny_run):
    run, _ = tiny_run
    (run / "report.html").unlink()
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "report.html").is_file()
    # a run from before glycemia.csv: the summary comes from its test readings
    stored = (run / "glycemia.csv").read_text()
    (run / "glycemia.csv").unlink()
    try:
        assert runner.invoke(app, ["report", str(run)]).exit_code == 0
        assert "Clinical CGM summary" in (run / "report.html").read_text()
    finally:
        (run / "glycemia.csv").write_text(stored)


def test_resume_reuses_the_trained_model(tiny_run):
    run, _ = tiny_run
    digest = json.loads((run / "metrics.json").read_text())["model"]["sha256"]
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "training already finished" in result.output
    assert json.loads((run / "metrics.json").read_text())["model"]["sha256"] == digest


def test_certify_writes_sound_results_and_resumes(tiny_run):
    run, _ = tiny_run
    args = ["certify", "--run", str(run), "--eps", "2", "--max-windows", "12"]
    result = runner.invoke(app, [*args, "--sweep-windows", "6"])
    assert result.exit_code == 0, result.output
    out = run / "certify-eps2"
    table = pd.read_csv(out / "robustness.csv")
    assert sorted(table["individual"]) == ["adolescent-003", "adult-008", "child-004"]
    assert (table["windows"] == 12).all()
    # soundness: a certified window survives every attack, an attacked one was correct
    assert (table["verified_acc"] <= table["pgd_acc"] + 1e-12).all()
    assert (table["pgd_acc"] <= table["clean_acc"] + 1e-12).all()
    assert (table["verified_ibp"] <= table["verified_crown"] + 1e-12).all()
    sweep = pd.read_csv(out / "sweep.csv")
    at_zero = sweep[sweep["eps"] == 0].set_index("individual")["verified_acc"]
    assert sweep.groupby("individual")["verified_acc"].is_monotonic_decreasing.all()
    assert (at_zero > 0).all()
    html = (out / "report.html").read_text()
    assert "Synthetic data" in html and "data:image/png;base64," in html
    # the Reproduce line names every option used (it dropped --max-windows and the others)
    command = (
        f"tailorml certify --run {run.resolve()} --eps 2 --relative 0 --method crown "
        "--max-windows 12 --sweep-windows 6"
    )
    assert json.loads((out / "certify.json").read_text())["command"] == command
    assert command in html
    before = (out / "robustness.csv").read_text()
    again = runner.invoke(app, [*args, "--sweep-windows", "6"])  # cached per individual
    assert again.exit_code == 0 and (out / "robustness.csv").read_text() == before
    # another model file gets its own folder and leaves the run model's results alone
    other = runner.invoke(app, [*args, "--sweep-windows", "2", "--model", str(run / "model.pt")])
    assert other.exit_code == 0, other.output
    assert len(list(run.glob("certify-eps2-*"))) == 1
    assert (out / "robustness.csv").read_text() == before
    (other_out,) = run.glob("certify-eps2-*")
    assert json.loads((other_out / "certify.json").read_text())["command"].endswith(
        f"--sweep-windows 2 --model {(run / 'model.pt').resolve()}"
    )


def test_certify_refuses_negative_eps_and_a_missing_run(tiny_run, tmp_path, tailorml):
    run, _ = tiny_run
    for bad in ("-1", "nan", "inf"):  # the option is named, not RUN/config.toml
        result = tailorml("certify", "--run", str(run), "--eps", bad)
        assert result.returncode == 2 and "Invalid value for '--eps'" in result.stderr, bad
        assert "config.toml" not in result.stderr
    result = tailorml("certify", "--run", str(tmp_path))
    assert result.returncode == 2 and "no run.json/config.toml" in result.stderr


def test_an_unknown_report_patient_is_refused_before_training(tmp_path, tiny_run_config, tailorml):
    config = tmp_path / "c.toml"
    config.write_text(
        tiny_run_config.format(runs=(tmp_path / "runs").as_posix())
        + 'report_patient = "nobody-1"\n'
    )
    result = tailorml("train", "--config", str(config))
    assert result.returncode == 2
    assert "run.report_patient = 'nobody-1' is not in the cohort" in result.stderr
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # the failed run left nothing behind


def test_resume_refuses_another_kind_of_run_and_an_edited_config(tiny_run, tmp_path, tailorml):
    import shutil

    run, _ = tiny_run
    result = tailorml("experiment", "experiments/tiny.toml", "--resume", str(run))
    assert result.returncode == 2 and "is a train run, not a experiment run" in result.stderr
    edited = tmp_path / "edited"
    shutil.copytree(run, edited)
    config = edited / "config.toml"
    config.write_text(config.read_text().replace("horizon_minutes = 30", "horizon_minutes = 60"))
    result = tailorml("train", "--resume", str(edited))
    assert (
        result.returncode == 2 and "config.toml was edited after the run started" in result.stderr
    )
    assert (edited / "model.pt").read_bytes() == (run / "model.pt").read_bytes()  # untouched


def test_bad_input_gives_one_clear_line_and_exit_code_2(tmp_path, tailorml):
    config = tmp_path / "bad.toml"
    config.write_text('[cohort]\npath = "no/such/file.parquet"\n')
    result = tailorml("train", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "cohort file not found: no/such/file.parquet" in result.stderr
    assert "Traceback" not in result.stderr

    config.write_text("[train]\nepoch = 1\n")
    result = tailorml("train", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "unknown key 'train.epoch'" in result.stderr


def test_every_command_has_help():
    for command in (
        ["demo"],
        ["train"],
        ["report"],
        ["cohort", "simulate"],
        ["cohort", "describe"],
        ["config", "show"],
        ["certify"],
    ):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, command
        assert "Usage" in result.output
    # a default written in brackets is shown, not swallowed as a markup tag
    shown = " ".join(runner.invoke(app, ["certify", "--help"]).output.split())
    assert "[default: robust.eps, 10]" in shown and "[default: crown]" in shown


def test_describe_and_config_show():
    result = runner.invoke(app, ["cohort", "describe", "synthetic"])
    assert result.exit_code == 0, result.output
    assert "child-010" in result.output and "Synthetic" in result.output
    result = runner.invoke(app, ["config", "show"])
    assert "[train]" in result.output and "epochs = 10" in result.output


def test_describe_shows_the_real_people_and_their_attribution():
    result = runner.invoke(app, ["cohort", "describe"])  # the default cohort: the real one
    assert result.exit_code == 0, result.output
    assert "AZT1D_01" in result.output and "PHYSIO_c2s05" in result.output
    assert "People" in result.output and "Dexcom G6 Pro" in result.output
    assert "doi:10.17632/gk9m674wcx.1" in result.output and "retrospective" in result.output
    assert "artefact_readings_blanked" in result.output  # the counted handling


def test_evaluate_applies_a_saved_model_to_a_whole_file(tiny_run, tmp_path, tailorml):
    from conftest import cohort_frame

    run, _ = tiny_run
    # 300 readings on the model's 5-minute grid: 300 - (24 + 6) + 1 = 271 windows, a 50-min
    # low in the middle (10 readings of 60 mg/dL) is the one hypo event
    values = [130.0] * 150 + [60.0] * 10 + [130.0] * 140
    cohort_frame({"p1": values}, sample_minutes=5).to_csv(tmp_path / "mine.csv", index=False)
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(run / "model.pt"),
            "--cohort",
            str(tmp_path / "mine.csv"),
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
    )
    assert result.exit_code == 0, result.output
    (evaluated,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert metrics["evaluated"] == {
        "part": "all",
        "windows": 271,
        # hypo: the windows whose 6-reading horizon touches the 10 low readings, 10 + 6 - 1
        "class_counts": {"in_range": 271 - 15, "hypo": 15, "hyper": 0},
    }
    assert metrics["synthetic"] is False and metrics["policy"]["sample_minutes"] == 5
    row = pd.read_csv(evaluated / "per_individual.csv").iloc[0]
    assert row["hypo_events"] == 1
    html = (evaluated / "report.html").read_text()
    assert "applied to" in html and "not clinical evidence" not in html
    # a period without any low: the report says so instead of failing
    cohort_frame({"p1": [130.0] * 300}, sample_minutes=5).to_csv(tmp_path / "flat.csv", index=False)
    flat_runs = tmp_path / "flat-runs"
    result = runner.invoke(
        app,
        [
            *("evaluate", "--model", str(run / "model.pt")),
            *("--cohort", str(tmp_path / "flat.csv"), "--runs-dir", str(flat_runs)),
        ],
    )
    assert result.exit_code == 0, result.output
    (flat,) = flat_runs.iterdir()
    assert "No hypo event could be evaluated" in (flat / "report.html").read_text()
    assert json.loads((flat / "metrics.json").read_text())["alerting"]["sensitivity_early"] is None
    # a run that did not finish, or a damaged table, is named
    (flat / "metrics.json").write_text("{not json")
    result = tailorml("report", str(flat))
    assert result.returncode == 2 and "metrics.json is damaged" in result.stderr
    (flat / "metrics.json").unlink()
    result = tailorml("report", str(flat))
    assert result.returncode == 2 and "has no metrics.json: the run did not finish" in result.stderr
    # describe never overwrites its input with the summary
    result = tailorml(
        "cohort", "describe", str(tmp_path / "flat.csv"), "--csv", str(tmp_path / "flat.csv")
    )
    assert result.returncode == 2 and "would overwrite the cohort file" in result.stderr
    # on another grid the model is refused, naming both intervals
    cohort_frame({"p1": values}, sample_minutes=15).to_csv(tmp_path / "libre.csv", index=False)
    result = runner.invoke(
        app, ["evaluate", "--model", str(run / "model.pt"), "--cohort", str(tmp_path / "libre.csv")]
    )
    assert result.exit_code != 0
    assert "CGM interval (minutes) 5 but" in str(result.exception)
    assert "libre.csv has 15" in str(result.exception)


@pytest.mark.parametrize(
    ("signal_number", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
)
def test_ctrl_c_or_sigterm_before_any_step_says_the_empty_run_was_removed(
    tmp_path, signal_number, code, word, tiny_run_config
):
    from tailorml.cli import INTERRUPTED_EARLY, TERMINATED_EARLY

    early = INTERRUPTED_EARLY if signal_number == signal.SIGINT else TERMINATED_EARLY
    runs = tmp_path / "runs"
    config = tmp_path / "slow.toml"
    slow = tiny_run_config.format(runs=runs.as_posix()).replace("epochs = 1", "epochs = 50")
    config.write_text(slow)
    process = subprocess.Popen(
        [sys.executable, "-m", "tailorml", "train", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        # a suite started in the background (`make test &`, nohup) passes SIGINT on ignored,
        # and Python then never raises KeyboardInterrupt: give the child a terminal's default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not (runs.is_dir() and any(runs.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runs.is_dir() and any(runs.iterdir()), "the run directory never appeared"
    process.send_signal(signal_number)  # while it loads the cohort: nothing finished yet
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code
    (removed,) = [line for line in stderr.splitlines() if line.startswith(word)]
    assert removed.startswith(early.split("{path}")[0])
    assert "was removed (run the command again to start over)" in removed
    assert list(runs.iterdir()) == []


def test_a_failed_command_leaves_no_empty_run_directory(tmp_path, tailorml):
    config = tmp_path / "bad.toml"
    config.write_text(f'[cohort]\npath = "missing.parquet"\n[run]\nruns_dir = "{tmp_path}/runs"\n')
    result = tailorml("train", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "cohort file not found" in result.stderr
    assert list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (EOFError("Ran out of input"), "EOFError", "Ran out of input"),
        (RuntimeError("PytorchStreamReader failed"), "RuntimeError", "PytorchStreamReader failed"),
        (pickle.UnpicklingError("invalid load key"), "UnpicklingError", "invalid load key"),
    ],
    ids=["EOFError", "RuntimeError", "UnpicklingError"],
)
def test_an_unexpected_error_is_named_never_a_bare_aborted(
    error, kind, message, monkeypatch, tailorml
):
    from tailorml import cli
    from tailorml.cli import UNEXPECTED

    # a command that fails as a bug would, registered for this test only
    monkeypatch.setattr(cli.app, "registered_commands", list(cli.app.registered_commands))

    @cli.app.command("boom")
    def boom():
        raise error

    result = tailorml("boom")
    assert result.returncode == 1
    assert "Aborted" not in result.stderr
    assert "Traceback" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == "error: " + UNEXPECTED.format(kind=kind, message=message)


def test_brackets_in_data_and_messages_are_printed_as_they_are(tmp_path, write_cohort, tailorml):
    """Output is never read as Rich markup: a file named "[/x].csv" crashed the error
    printer (MarkupError), "[bold]x.csv" was shown as "x.csv", and the "[methods.transfer]"
    of a config error vanished."""
    result = tailorml("cohort", "describe", "[/x].csv", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (2, "error: cohort file not found: [/x].csv\n")
    result = tailorml("cohort", "describe", "[bold]x.csv", cwd=tmp_path)
    assert result.stderr == "error: cohort file not found: [bold]x.csv\n"
    config = tmp_path / "grid.toml"
    config.write_text("[methods.transfer]\nn = []\n")
    result = tailorml("experiment", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "error: [methods.transfer] n = [] gives the method no setting" in result.stderr
    from conftest import cohort_frame

    trace = [100.0 + 10 * (i % 7) for i in range(60)]
    path = write_cohort(cohort_frame({"[/x]": trace, "[red]y": trace}))
    result = runner.invoke(app, ["cohort", "describe", str(path)])
    assert result.exit_code == 0, result.output
    assert "[/x]" in result.output and "[red]y" in result.output


def test_progress_messages_are_plain_text():
    import io

    from tailorml.progress import RichReporter

    out = io.StringIO()
    reporter = RichReporter()
    reporter.console.file = out
    reporter.log("skipping [/x]: no [bold]hypo[/bold] sample", style="yellow")
    assert out.getvalue() == "skipping [/x]: no [bold]hypo[/bold] sample\n"


def test_describe_csv_must_be_a_csv_file(tmp_path, write_cohort, tailorml):
    """--csv out.parquet wrote CSV text into a .parquet file."""
    from conftest import cohort_frame

    path = write_cohort(cohort_frame({"p1": [100.0] * 60}))
    result = tailorml("cohort", "describe", str(path), "--csv", "out.parquet", cwd=tmp_path)
    assert result.returncode == 2
    message = "error: --csv out.parquet must end in .csv (the table is written as CSV)\n"
    assert result.stderr == message
    assert not (tmp_path / "out.parquet").exists()


def test_cohort_simulate_refuses_an_unknown_engine(tmp_path, tailorml):
    out = tmp_path / "c.parquet"
    result = runner.invoke(app, ["cohort", "simulate", "--engine", "fast", "--out", str(out)])
    assert result.exit_code == 2
    assert "--engine" in result.output and "'fast' is not one of batched, reference" in (
        " ".join(result.output.split())  # Rich wraps the usage panel
    )
    config = tmp_path / "sim.toml"
    config.write_text('[simulation]\nengine = "fast"\n')
    result = tailorml("cohort", "simulate", "--config", str(config), "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'simulation.engine'" in result.stderr and "'batched' or 'reference'" in result.stderr
    assert not out.exists() and not (tmp_path / "c.parquet.parts").exists()


def test_describe_keeps_an_existing_csv_unless_forced_and_honours_the_configs_people(
    tmp_path, write_cohort, tailorml
):
    from conftest import cohort_frame

    path = write_cohort(cohort_frame({"a": [120.0] * 40, "b": [130.0] * 40}, sample_minutes=5))
    other = tmp_path / "mine.csv"
    other.write_text("precious\n")
    result = tailorml("cohort", "describe", str(path), "--csv", str(other))
    assert result.returncode == 2 and "exists; pass --force" in result.stderr
    assert other.read_text() == "precious\n"
    config = tmp_path / "one.toml"
    config.write_text('[cohort]\nindividuals = ["b"]\n')
    result = tailorml(
        "cohort", "describe", str(path), "--csv", str(other), "--force", "--config", str(config)
    )
    assert result.returncode == 0, result.stderr
    assert pd.read_csv(other)["patient_id"].tolist() == ["b"]  # cohort.individuals honoured
