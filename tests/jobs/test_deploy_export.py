"""`tailorml deploy export` and `deploy report` end to end on a tiny run (3 simulated
patients, 3 days, one epoch): the jobs (`tailorml.jobs.deploy_export`) and their commands."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from tailorml.cli import app
from tailorml.config import config_from_dict, load_config
from tailorml.errors import ConfigError, DeployError, TailormlError
from tailorml.jobs import deploy_export

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run_config):
    base = tmp_path_factory.mktemp("deploy")
    config = base / "tiny.toml"
    # the run's [deploy] section gives --emulate; the command's option overrides another key
    section = "\n[deploy]\ncalibration_windows = 100\n\n[deploy.export]\nemulate = 1\n"
    config.write_text(tiny_run_config.format(runs=(base / "runs").as_posix()) + section)
    assert runner.invoke(app, ["train", "--config", str(config)]).exit_code == 0
    (run,) = (base / "runs").iterdir()
    out = base / "export"
    arguments = ["deploy", "export", "--run", str(run), "--out", str(out)]
    result = runner.invoke(app, [*arguments, "--calibration-windows", "300"])
    assert result.exit_code == 0, result.output
    return run, out, result.output


def test_export_writes_the_c_the_ladder_and_the_budget(exported):
    _, out, output = exported
    for name in ("tailorml_model.h", "tailorml_model.c", "deploy.json", "deploy.html"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "deploy.json").read_text())
    float_rung, host_rung, target_rung = summary["parity"]
    assert float_rung["decision_agreement"] >= 0.95
    assert host_rung["identical_logits"] is True
    assert target_rung["identical_logits"] is True
    assert target_rung["individuals"] == 1
    check = np.load(out / "check_windows.npz")
    assert target_rung["windows"] == len(check["readings"]) > 0
    budget = summary["budgets"]["stm32f401"]
    assert budget["flash"] == budget["text"] + budget["rodata"] + budget["data"]
    assert budget["ram"] == budget["static_ram"] + budget["peak_stack"]
    assert budget["checks"]["flash"] == (budget["flash"] <= 32 * 1024)
    # the build for a core that traps unaligned access ran its first windows trapping
    assert budget["strict_alignment"]["windows_trapping_unaligned_access"] == min(
        3, target_rung["windows"]
    )
    assert summary["synthetic"] is True
    assert "bit for bit" in output and "not clinical evidence" in output
    assert "not clinical evidence" in (out / "deploy.html").read_text()
    # the settings it was made with: the option over the run's section over the defaults
    assert summary["deploy"] == {
        "target": "cortex-m4",
        "calibration_windows": 300,
        "export": {"emulate": 1},
    }
    assert summary["calibration"]["windows"] == 300
    assert "--calibration-windows 300 --emulate 1" in summary["command"]


def test_report_measures_every_profile_from_the_export(exported):
    _, out, _ = exported
    result = runner.invoke(app, ["deploy", "report", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "deploy.json").read_text())
    assert sorted(summary["budgets"]) == ["stm32f401", "stm32l151"]
    m3 = summary["budgets"]["stm32l151"]
    assert m3["windows_identical"] == m3["windows_run"]
    # same C on a slower core without the DSP extension: more instructions, longer latency
    assert m3["instructions"] > summary["budgets"]["stm32f401"]["instructions"]


def test_the_job_returns_what_it_wrote_and_report_renews_it(exported, tmp_path):
    _, out, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    result = deploy_export.report(copy, ["cortex-m4"])
    summary = json.loads((copy / "deploy.json").read_text())
    assert result.summary == summary and result.report == copy / "deploy.html"
    # the export's own target renews the ladder's last rung, once
    assert [rung["name"] for rung in summary["parity"]][1:] == [
        "int8 reference -> host C",
        "host C -> emulated cortex-m4",
    ]
    figures = result.to_json()
    assert figures["kind"] == "deploy export" and figures["out"] == str(copy)
    assert [row["individual"] for row in figures["per_individual"]] == list(
        result.parity["individual"]
    )
    json.dumps(figures, allow_nan=False)  # plain JSON: no NaN, no numpy types


def test_the_deploy_section_is_checked_and_older_runs_load_without_it(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'deploy\.export\.emulated'"):
        config_from_dict({"deploy": {"export": {"emulated": 1}}})
    with pytest.raises(ConfigError, match=r"'deploy\.target'"):
        config_from_dict({"deploy": {"target": "esp32"}})
    with pytest.raises(ConfigError, match=r"'deploy\.calibration_windows'"):
        config_from_dict({"deploy": {"calibration_windows": 0}})
    older = tmp_path / "config.toml"  # a run's config from before [deploy] existed
    older.write_text('[run]\nname = "x"\n')
    assert load_config(older).deploy == config_from_dict({}).deploy


def test_bad_requests_are_one_line_errors(exported, tmp_path):
    run, out, _ = exported
    export_run, report_export = deploy_export.run, deploy_export.report

    result = runner.invoke(app, ["deploy", "export", "--run", str(run), "--target", "esp32"])
    assert isinstance(result.exception, DeployError)
    assert "unknown target 'esp32'; choose one of: stm32f401" in str(result.exception)
    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "a.jpg").write_text("x")
    with pytest.raises(DeployError, match="holds no tailorml export"):
        export_run(run, out=stranger)
    assert [p.name for p in stranger.iterdir()] == ["a.jpg"]  # nothing written there
    with pytest.raises(DeployError, match=r"deploy\.json missing"):
        report_export(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "tailorml_model.c").unlink()
    with pytest.raises(DeployError, match=r"incomplete export \(tailorml_model\.c missing\)"):
        report_export(broken)
    (broken / "deploy.json").write_text("{not json")
    with pytest.raises(DeployError, match="unreadable"):
        report_export(broken)


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_an_out_that_cannot_be_written_is_refused_before_quantizing(exported, tmp_path, where):
    run, _, _ = exported
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "export" if where == "under_a_file" else "/proc/tailorml-export"
    result = runner.invoke(app, ["deploy", "export", "--run", str(run), "--out", str(out)])
    message = str(result.exception)  # main() prints it in one line and exits 2
    assert isinstance(result.exception, TailormlError) and "--out" in message
    assert ("is a file, not a folder" if where == "under_a_file" else "cannot write in") in message
    assert "quantizing" not in result.stdout  # refused before the work


def test_report_refuses_an_export_marker_without_its_keys_before_emulating(tmp_path):
    (tmp_path / "deploy.json").write_text('{"target": "stm32f401", "parity": [], "budgets": {}}')
    result = runner.invoke(app, ["deploy", "report", str(tmp_path)])
    assert isinstance(result.exception, TailormlError)
    assert "lacks model_sha256" in str(result.exception)


@pytest.mark.parametrize("where", ["/proc/x.key", "FILE/k.key"])
def test_keygen_refuses_an_out_it_cannot_write_in_one_line(tmp_path, where):
    (tmp_path / "FILE").write_text("x")
    out = where.replace("FILE", str(tmp_path / "FILE"))
    result = runner.invoke(app, ["keygen", "--out", out])
    assert isinstance(result.exception, TailormlError)
    assert "--out" in str(result.exception)


def test_tailorml_report_draws_an_export_again_from_its_files(exported, tmp_path):
    from tailorml.jobs.report import render
    from tailorml.runs import kind_of

    _, out, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "deploy.html").unlink()
    assert kind_of(copy) == "deploy_export"
    assert render(copy) == copy / "deploy.html"
    page = (copy / "deploy.html").read_text()
    summary = json.loads((copy / "deploy.json").read_text())
    assert summary["model_sha256"][:12] in page  # drawn from this export's summary
    (copy / "parity.parquet").unlink()
    with pytest.raises(TailormlError, match=r"incomplete export \(parity.parquet missing\)"):
        render(copy)
