"""Run directories: always inside runs_dir, never left empty by a failed command."""

import re

import pytest

from tailorml import runs
from tailorml.config import Config, RunConfig
from tailorml.errors import TailormlError
from tailorml.io import UNSAFE_NAME
from tailorml.runs import RUNS_DIR_NOT_A_FOLDER, Run, discard_unfinished


def _config(tmp_path, name="demo"):
    return Config(run=RunConfig(runs_dir=str(tmp_path / "runs"), name=name))


def test_an_unsafe_name_is_refused_even_past_the_config(tmp_path):
    config = _config(tmp_path)
    object.__setattr__(config.run, "name", "/../../../x")  # as if the config check were skipped
    with pytest.raises(TailormlError) as error:
        Run.create(config, "train")
    assert str(error.value) == UNSAFE_NAME.format(what="run.name", name="/../../../x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "runs").exists()


def test_the_run_directory_is_directly_inside_runs_dir(tmp_path):
    run = Run.create(_config(tmp_path, "my.run-1"), "train")
    assert run.path.parent == tmp_path / "runs"
    assert run.path.name.endswith("-my.run-1")


@pytest.mark.parametrize("layout", ["file", "inside_file"])
def test_runs_dir_that_is_a_file_is_a_clear_error(tmp_path, layout):
    (tmp_path / "taken").write_text("not a folder")
    base = tmp_path / "taken" if layout == "file" else tmp_path / "taken" / "runs"
    with pytest.raises(TailormlError) as error:
        Run.create(_config(tmp_path), "train", runs_dir=base)
    assert str(error.value) == RUNS_DIR_NOT_A_FOLDER.format(path=base)


def test_a_failed_command_leaves_no_empty_run_but_keeps_finished_work(tmp_path):
    runs._created.clear()
    empty = Run.create(_config(tmp_path, "empty"), "train")
    (empty.path / "cache").mkdir()  # folders alone are not work
    (empty.path / ".model.pt.x.tmp").write_text("")  # nor a temporary file
    stepped = Run.create(_config(tmp_path, "stepped"), "train")
    stepped.mark_done("train")
    cached = Run.create(_config(tmp_path, "cached"), "train")
    (cached.path / "cache" / "results").mkdir(parents=True)
    (cached.path / "cache" / "results" / "a.json").write_text("{}")
    opened = Run.open(Run.create(_config(tmp_path, "resumed"), "train").path)
    runs._created.remove(opened.path)  # opened for resuming, not created by this command

    assert discard_unfinished() == [empty.path]
    assert not empty.path.exists()
    assert stepped.path.is_dir() and cached.path.is_dir() and opened.path.is_dir()
    assert discard_unfinished() == []  # each directory is considered once


def test_resume_checks_the_kind_and_that_the_config_was_not_edited(tmp_path):
    from tailorml.runs import RESUME_EDITED, RESUME_OTHER_KIND

    run = Run.create(_config(tmp_path, "kinds"), "train")
    assert Run.resume(run.path, "train").path == run.path
    with pytest.raises(TailormlError) as error:
        Run.resume(run.path, "experiment")
    assert str(error.value) == RESUME_OTHER_KIND.format(
        path=run.path, found="train", kind="experiment"
    )
    config = run.file("config.toml")
    config.write_text(config.read_text().replace("epochs = 10", "epochs = 11"))
    with pytest.raises(TailormlError) as error:
        Run.resume(run.path, "train")
    assert str(error.value) == RESUME_EDITED.format(path=run.path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [("{not json", "Expecting property name"), ('{"kind": "train", "steps": []}', "it lacks kind")],
)
def test_a_damaged_run_json_is_a_clear_error_not_a_traceback(tmp_path, content, problem):
    run = Run.create(_config(tmp_path, "damaged"), "train")
    run.file("run.json").write_text(content)
    with pytest.raises(TailormlError, match=re.escape(f"run.json is damaged ({problem}")):
        Run.resume(run.path, "train")
