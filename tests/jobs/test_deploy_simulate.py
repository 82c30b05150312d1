"""`tailorml deploy simulate`: a device lives through three days of a simulated patient,
next to the predefined and a cloud-personalized model."""

import copy
import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from tailorml.cli import app
from tailorml.config import config_from_dict
from tailorml.deploy.learner.ondevice import LearnerSettings
from tailorml.errors import DeployError
from tailorml.jobs import deploy_simulate
from tailorml.models.cnn import save_model
from tailorml.runs import Run

runner = CliRunner()
PERSON = "adolescent-003"
PATIENTS = ["adolescent-003", "adult-008", "child-004"]  # the shared model's (conftest)


@pytest.fixture(scope="module")
def run_dir(trained, tmp_path_factory):
    """A run directory holding the shared test model and the config it was trained with."""
    config = config_from_dict(
        {"cohort": {"path": "synthetic", "individuals": PATIENTS, "max_days": 3.0}}
    )
    run = Run.create(config, "train", tmp_path_factory.mktemp("runs"))
    save_model(trained.model, run.file("model.pt"))
    return run.path


def with_deploy(run_dir, learner=None, **simulate):
    """The run's config with `[deploy.simulate]` options and `[deploy.learner]` settings."""
    section = {"simulate": simulate, "learner": learner or {}}
    return (
        Run.open(run_dir)
        .config()
        .model_copy(update={"deploy": config_from_dict({"deploy": section}).deploy})
    )


def test_the_device_lives_three_days_and_is_compared_with_both_models(run_dir, tmp_path):
    learner = dict(min_days=0, min_hypo_train=8, min_held=4, held_out_block=1, near_low_mgdl=100)
    config = with_deploy(run_dir, learner, emulate=True, cloud_iterations=5)
    result = deploy_simulate.run(run_dir, PERSON, config, tmp_path / "sim")
    out = result.path
    summary = json.loads((out / "simulate.json").read_text())
    # the job wrote its file from the result it returns, and the file records the settings:
    # the five [deploy.learner] keys given, the other sixteen at their defaults
    assert result.summary == summary and result.to_json()["kind"] == "deploy simulate"
    settings = LearnerSettings().to_dict() | learner
    assert summary["deploy"] == {
        "target": "cortex-m4",
        "calibration_windows": 4096,
        "simulate": {"days": None, "emulate": True, "cloud_iterations": 5},
        "learner": settings,
    }
    assert summary["settings"] == settings and len(settings) == 21
    assert "--emulate" in summary["command"] and result.report == out / "simulate.html"
    assert summary["days_lived"] == 3 and summary["synthetic"] is True
    assert [u["gate_name"] for u in summary["updates"]] == ["data", "data", "accepted"]
    assert "accepted: " in summary["updates"][-1]["reason"]
    # the emulated Cortex-M4F lived the same three days; its cost is measured
    emulated = summary["cost"]["emulated"]
    assert summary["emulated"]["identical_to_host"] is True
    assert emulated["update_instructions_max"] > emulated["step_instructions"] > 0
    memory = summary["memory"]
    assert memory["state_bytes"] == sum(memory["state_parts"].values()) <= 16384
    assert memory["firmware"]["flash"] > sum(memory["flash_parts"].values())
    days = summary["days"]
    assert [day["head"] for day in days] == ["factory"] * 3  # the new head starts on day 4
    assert days[0]["cloud"] is None  # the cloud model trained on this day's labels
    test = summary["summary"]["test"]["models"]
    assert sorted(test) == ["cloud", "device", "predefined"]
    assert test["device"] == test["predefined"]  # the factory head served the test part
    # a day's figures add up to the period's (events by start day, alerts snoozed once)
    lived = summary["summary"]["lived"]["models"]["predefined"]
    assert sum(d["predefined"]["hypo_events"] for d in days) == lived["hypo_events"]
    html = (out / "simulate.html").read_text()
    assert "not clinical evidence" in html
    assert html.count('class="pass">accepted') == 2  # the day table and the attempts
    assert "data:image/png;base64," in html
    # `tailorml report` draws the same page again from simulate.json
    from tailorml.jobs.report import render
    from tailorml.runs import kind_of

    (out / "simulate.html").unlink()
    assert kind_of(out) == "deploy_simulate" and render(out) == out / "simulate.html"
    assert (out / "simulate.html").read_text().count('class="pass">accepted') == 2


def test_cli_prints_the_comparison_and_refuses_bad_requests(run_dir, trained, tmp_path):
    out = tmp_path / "cli"
    arguments = ["deploy", "simulate", "--run", str(run_dir), "--individual", PERSON]
    result = runner.invoke(app, [*arguments, "--out", str(out), "--cloud-iterations", "0"])
    assert result.exit_code == 0, result.output
    assert "alerts on the test part" in result.output
    assert "3 nightly updates: 3 without enough data" in result.output
    assert "not clinical evidence" in result.output
    summary = json.loads((out / "simulate.json").read_text())  # the option over [deploy]
    assert summary["deploy"]["simulate"]["cloud_iterations"] == 0 and summary["cloud"] is None
    assert "--cloud-iterations 0" in summary["command"]
    result = runner.invoke(app, [*arguments[:4], "--individual", "nobody", "--out", str(out)])
    assert isinstance(result.exception, DeployError)
    assert str(result.exception).startswith("unknown individual 'nobody'; valid: adolescent-003")
    result = runner.invoke(app, [*arguments, "--days", "0"])
    assert result.exit_code == 2  # refused by the option itself
    other = copy.deepcopy(trained.model)
    other.policy = replace(other.policy, channels=("cgm", "iob"))
    save_model(other, run_dir / "model.pt")
    try:
        with pytest.raises(DeployError, match=r"CGM only; this model reads channels cgm, iob"):
            deploy_simulate.run(
                run_dir, PERSON, with_deploy(run_dir, cloud_iterations=0), tmp_path / "iob"
            )
    finally:
        save_model(trained.model, run_dir / "model.pt")


def test_simulation_folders_never_trust_an_id_or_a_foreign_folder(tmp_path):
    from tailorml.deploy.target.mcu import profile
    from tailorml.errors import DeployError
    from tailorml.jobs.deploy_simulate import _prepare_out, default_out

    out = default_out(tmp_path / "run", profile("cortex-m4"), "../../etc/passwd")
    assert out.parent == tmp_path / "run" and "/" not in out.name
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "simulate.json").write_text("{not json")
    with pytest.raises(DeployError, match="missing or unreadable"):
        _prepare_out(stranger, "child-004")
