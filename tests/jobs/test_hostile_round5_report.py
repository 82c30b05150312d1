"""`tailorml report` and `deploy report` over a tampered summary: text no UTF-8 file can
hold (a lone surrogate "\\ud800", which JSON reads) is one line naming the file, not a
traceback."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from tailorml.cli import app
from tailorml.errors import TailormlError

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run_config):
    base = tmp_path_factory.mktemp("tampered")
    config = base / "tiny.toml"
    section = "\n[deploy]\ncalibration_windows = 100\n\n[deploy.export]\nemulate = 0\n"
    config.write_text(tiny_run_config.format(runs=(base / "runs").as_posix()) + section)
    assert runner.invoke(app, ["train", "--config", str(config)]).exit_code == 0
    (run,) = (base / "runs").iterdir()
    out = base / "export"
    result = runner.invoke(app, ["deploy", "export", "--run", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return run, out


def tampered(folder, tmp_path, name, edit):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    summary = json.loads((copy / name).read_text())
    edit(summary)
    (copy / name).write_text(json.dumps(summary))  # ASCII: "\ud800" as an escape
    return copy


@pytest.mark.parametrize("command", [["report"], ["deploy", "report"]])
def test_a_deploy_json_with_a_lone_surrogate_is_one_line_naming_it(exported, tmp_path, command):
    _, out = exported
    copy = tampered(out, tmp_path, "deploy.json", lambda s: s.update(target="\ud800"))
    result = runner.invoke(app, [*command, str(copy)])
    assert isinstance(result.exception, TailormlError), result.exception
    message = str(result.exception)
    assert message.startswith(f"{copy / 'deploy.json'}: holds text that is not valid Unicode")
    assert "\n" not in message


def test_a_runs_metrics_json_with_a_lone_surrogate_is_one_line_naming_it(exported, tmp_path):
    run, _ = exported
    copy = tampered(run, tmp_path, "metrics.json", lambda s: s["cohort"].update(source="\ud800"))
    result = runner.invoke(app, ["report", str(copy)])
    assert isinstance(result.exception, TailormlError), result.exception
    assert str(result.exception).startswith(f"{copy / 'metrics.json'}: holds text")


def test_a_surrogate_the_report_does_not_show_still_renders(exported, tmp_path):
    run, _ = exported
    copy = tampered(run, tmp_path, "metrics.json", lambda s: s.update({"note\ud800": 1}))
    assert runner.invoke(app, ["report", str(copy)]).exit_code == 0


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda s: s.update(parity="x"), "UndefinedError"),
        (lambda s: s.update(model_sha256=None), "TypeError"),
        (lambda s: s.update(budgets=[1, 2]), "TypeError"),
    ],
)
def test_a_deploy_json_whose_fields_changed_type_is_one_line(exported, tmp_path, edit, said):
    _, out = exported
    copy = tampered(out, tmp_path, "deploy.json", edit)
    result = runner.invoke(app, ["report", str(copy)])
    assert isinstance(result.exception, TailormlError), result.exception
    message = str(result.exception)
    assert message.startswith(f"{copy}: its stored files (deploy.json, parity.parquet)")
    assert said in message and "\n" not in message


def test_a_parity_table_that_is_not_parquet_is_one_line(exported, tmp_path):
    _, out = exported
    copy = tampered(out, tmp_path, "deploy.json", lambda s: None)
    (copy / "parity.parquet").write_bytes(b"garbage")
    for command in (["report"], ["deploy", "report"]):
        result = runner.invoke(app, [*command, str(copy)])
        assert isinstance(result.exception, TailormlError), result.exception
        assert "ArrowInvalid" in str(result.exception)
