"""The jobs wing: one result object per command, one run-directory convention, and the
library below never importing a job."""

import ast
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tailorml.config import config_from_dict
from tailorml.errors import TailormlError
from tailorml.jobs import report
from tailorml.jobs.result import MetricsResult, as_json
from tailorml.jobs.stress import StressResult
from tailorml.runs import STRESS_MARKER, Run, kind_of

SRC = Path(__file__).resolve().parents[2] / "src" / "tailorml"


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any depth (a function's import counts)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_the_library_below_the_wing_imports_no_job():
    """Jobs import the library; the library never imports a job (the CLI, the command
    line's entry point, sits above the wing)."""
    above = {SRC / "cli.py", SRC / "__main__.py"}
    offenders = [
        str(path.relative_to(SRC))
        for path in sorted(SRC.rglob("*.py"))
        if path not in above
        and "jobs" not in path.relative_to(SRC).parts
        and any(name.startswith("tailorml.jobs") for name in imported_modules(path))
    ]
    assert offenders == []


def test_as_json_is_what_the_json_file_holds(tmp_path):
    from tailorml.io import atomic_write_json

    data = {"a": np.float64(0.5), "b": float("nan"), "c": [3, math.inf], "d": Path("x")}
    atomic_write_json(tmp_path / "f.json", data)
    assert as_json(data) == json.loads((tmp_path / "f.json").read_text())
    assert as_json(data) == {"a": 0.5, "b": None, "c": [3, None], "d": "x"}


def test_run_json_records_the_kind_and_the_report_goes_by_it(tmp_path, monkeypatch):
    config = config_from_dict({"run": {"runs_dir": str(tmp_path), "name": "x"}})
    made = {kind: Run.create(config, kind) for kind in ("train", "evaluate", "experiment")}
    for kind, run in made.items():
        assert run.kind == kind == kind_of(run.path)
    stress = tmp_path / "stress"
    stress.mkdir()
    (stress / STRESS_MARKER).write_text("stress\n")
    assert kind_of(stress) == "stress"
    rendered = []
    for kind in report.RENDERERS:
        monkeypatch.setitem(report.RENDERERS, kind, lambda path, kind=kind: rendered.append(kind))
    # an experiment run is rendered as one by its kind, whatever files it holds (the files
    # used to be sniffed: a run without results.parquet was drawn as a train run)
    for path in (*(run.path for run in made.values()), stress):
        report.render(path)
    assert rendered == ["train", "evaluate", "experiment", "stress"]
    with pytest.raises(TailormlError, match="not a tailorml run directory"):
        report.render(tmp_path / "nothing")


def test_results_say_their_kind_folder_and_figures(tmp_path):
    config = config_from_dict({"run": {"runs_dir": str(tmp_path), "name": "x"}})
    run = Run.create(config, "evaluate")
    result = MetricsResult(run, {"synthetic": False})
    assert result.report == run.path / "report.html"
    assert result.to_json() == {
        "kind": "evaluate",
        "run_dir": str(run.path),
        "metrics": {"synthetic": False},
    }
    summary = pd.DataFrame({"model": ["m"], "drop": [float("nan")]})
    empty = pd.DataFrame()
    stress = StressResult(tmp_path / "s", empty, empty, summary, empty, empty, {"seed": 0})
    assert stress.report == tmp_path / "s" / "report.html"
    assert stress.to_json()["summary"] == [{"model": "m", "drop": None}]
    json.dumps(stress.to_json(), allow_nan=False)  # plain JSON: no NaN, no numpy types


def test_stress_refuses_an_out_that_is_another_job_s_run(tmp_path, tailorml_in_process):
    """A stress run keeps run.json like every job: it would overwrite a train run's."""
    config = config_from_dict({"run": {"runs_dir": str(tmp_path), "name": "x"}})
    trained = Run.create(config, "train")
    result = tailorml_in_process("stress", "--model", "m.pt", "--out", str(trained.path))
    assert result.returncode == 2
    assert result.stderr == (
        f"error: --out {trained.path} is a train run directory; give a new folder for the "
        "stress run\n"
    )
    assert trained.kind == "train"


def test_a_run_from_before_a_section_existed_still_resumes(tmp_path):
    """A run written before `[stress]` existed has no such section in config.toml and a
    fingerprint without it: it resumes (the section takes its defaults); an edit does not."""
    from tailorml.io import atomic_write_json, fingerprint

    config = config_from_dict({"run": {"runs_dir": str(tmp_path), "name": "x"}})
    run = Run.create(config, "train")
    older = {name: value for name, value in config.to_dict().items() if name != "stress"}
    text = run.file("config.toml").read_text()
    start = text.index("[stress]\n")
    end = text.index("\n[", start) + 1  # the next section's header
    run.file("config.toml").write_text(text[:start] + text[end:])
    atomic_write_json(
        run.file("run.json"), {"kind": "train", "fingerprint": fingerprint(older), "steps": {}}
    )
    assert "[stress]" not in run.file("config.toml").read_text()
    assert Run.resume(run.path, "train").config().stress.seed == 0
    run.file("config.toml").write_text(
        run.file("config.toml").read_text().replace("epochs = 10", "epochs = 9")
    )
    with pytest.raises(TailormlError, match="was edited after the run started"):
        Run.resume(run.path, "train")


def test_a_run_from_before_a_subsection_existed_still_resumes(tmp_path):
    """A run written before `[deploy.learner]` existed: its `[deploy]` holds target,
    calibration_windows, export and simulate (whose `days` is unset, so not written) but no
    learner; its fingerprint is of that config. It resumes with the learner's defaults; a
    changed key inside `[deploy]` does not."""
    from tailorml.io import atomic_write_json, fingerprint

    config = config_from_dict({"run": {"runs_dir": str(tmp_path), "name": "x"}})
    run = Run.create(config, "train")
    older = config.to_dict()
    del older["deploy"]["learner"]
    assert older["deploy"]["simulate"]["days"] is None
    text = run.file("config.toml").read_text()
    start = text.index("[deploy.learner]\n")
    end = text.find("\n[", start) + 1 or len(text)  # the next section's header, or the end
    run.file("config.toml").write_text(text[:start] + text[end:])
    assert "learner" not in run.file("config.toml").read_text()
    atomic_write_json(
        run.file("run.json"), {"kind": "train", "fingerprint": fingerprint(older), "steps": {}}
    )
    assert Run.resume(run.path, "train").config().deploy.learner.min_days == 7
    edited = (
        run.file("config.toml")
        .read_text()
        .replace("cloud_iterations = 300", "cloud_iterations = 30")
    )
    run.file("config.toml").write_text(edited)
    with pytest.raises(TailormlError, match="was edited after the run started"):
        Run.resume(run.path, "train")
