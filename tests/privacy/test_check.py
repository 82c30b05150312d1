"""The HE-friendly model through the normal path (`tailorml train`), then the encrypted
round trip of `tailorml privacy check` on test windows of several individuals."""

import hashlib
import json

import pytest
import torch
from typer.testing import CliRunner

from tailorml.cli import app
from tailorml.config import ModelConfig, config_from_dict
from tailorml.errors import ConfigError, TailormlError
from tailorml.models.cnn import build_model, load_model, save_model
from tailorml.policy import AlertPolicy
from tailorml.privacy.check import LOGIT_TOLERANCE
from tailorml.privacy.params import PrivacyError
from tailorml.privacy.plan import compile_plan

runner = CliRunner()

HE_MODEL = """
[model]
architecture = "he_friendly"
conv_channels = [4]
hidden = 0
"""


@pytest.fixture(scope="module")
def he_run(tmp_path_factory, tiny_run_config):
    base = tmp_path_factory.mktemp("he")
    config = base / "he.toml"
    config.write_text(tiny_run_config.format(runs=(base / "runs").as_posix()) + HE_MODEL)
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    (run,) = (base / "runs").iterdir()
    return run


def test_the_trained_model_is_he_friendly_and_carries_its_policy(he_run):
    model = load_model(he_run / "model.pt")
    assert model.spec.architecture == "he_friendly"
    assert model.policy is not None and model.policy.alert_class == "hypo"
    metrics = json.loads((he_run / "metrics.json").read_text())
    assert "sensitivity_early" in metrics["alerting"]  # the same alert metrics as any model


def test_privacy_check_agrees_on_every_test_window(he_run):
    result = runner.invoke(
        app,
        [
            "privacy",
            "check",
            "--run",
            str(he_run),
            "--individuals",
            "2",
            "--max-windows",
            "6",
            "--batch",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "every decision agrees" in result.output
    check = json.loads((he_run / "privacy_check.json").read_text())
    assert check["windows"] == 12 and len(check["individuals"]) == 2
    assert check["settings"] == {"individuals": 2, "max_windows": 6, "batch": 4}  # [privacy]
    assert check["decisions_differ"] == 0 and check["passed"] is True
    assert check["max_logit_difference"] < LOGIT_TOLERANCE
    assert check["parameters"]["security_bits"] == 128 and check["depth"] == 3
    assert check["sizes"]["public_context_bytes"] > check["sizes"]["upload_bytes"] > 0


def test_privacy_check_refuses_a_relu_model_by_name(he_run, tmp_path):
    cnn = build_model(ModelConfig(), 1, 24, 3, torch.tensor([150.0]), torch.tensor([50.0]))
    cnn.policy = AlertPolicy()
    save_model(cnn, tmp_path / "cnn.pt")
    result = runner.invoke(
        app, ["privacy", "check", "--run", str(he_run), "--model", str(tmp_path / "cnn.pt")]
    )
    assert isinstance(result.exception, PrivacyError)  # main() prints it as one line, exit 2
    message = str(result.exception)
    assert "cnn.pt is a 'cnn' model" in message and "he_friendly" in message


def test_privacy_check_refuses_a_batch_larger_than_a_ciphertext(he_run):
    result = runner.invoke(app, ["privacy", "check", "--run", str(he_run), "--batch", "64"])
    assert isinstance(result.exception, TailormlError)
    assert "--batch 64: one ciphertext holds 1 to 32 windows" in str(result.exception)


def test_privacy_check_shows_its_figures_when_it_cannot_save_them(he_run):
    target = he_run / "privacy_check.json"
    saved = target.read_bytes() if target.is_file() else None
    target.unlink(missing_ok=True)
    target.mkdir()  # unwritable for anyone, root included
    try:
        arguments = ["--individuals", "1", "--max-windows", "2", "--batch", "2"]
        result = runner.invoke(app, ["privacy", "check", "--run", str(he_run), *arguments])
    finally:
        target.rmdir()
        if saved is not None:
            target.write_bytes(saved)
    assert result.exit_code == 2, result.output
    assert "up to 2 windows per ciphertext" in result.output  # the table came first
    assert "2 windows, every decision agrees" in result.output
    assert f"could not write {target}" in " ".join(result.output.split())


def test_privacy_check_names_a_missing_model_option(he_run, tmp_path):
    missing = tmp_path / "nope.pt"
    result = runner.invoke(app, ["privacy", "check", "--run", str(he_run), "--model", str(missing)])
    assert str(result.exception) == f"--model {missing}: no such model file"
    result = runner.invoke(app, ["privacy", "check", "--run", str(he_run), "--model", str(he_run)])
    assert str(result.exception) == (
        f"--model {he_run} is a folder, not a model file; pass {he_run / 'model.pt'}"
    )


def test_another_model_s_check_does_not_overwrite_the_run_s_own(he_run, tmp_path):
    other = tmp_path / "other.pt"
    model = load_model(he_run / "model.pt")
    with torch.no_grad():
        model.head[-1].bias.add_(0.01)  # another model: same network, other bytes
    save_model(model, other)
    copy = tmp_path / "copy.pt"  # the run's own model under another name
    copy.write_bytes((he_run / "model.pt").read_bytes())
    own = he_run / "privacy_check.json"
    own.unlink(missing_ok=True)
    arguments = ["--individuals", "1", "--max-windows", "1", "--model"]
    result = runner.invoke(app, ["privacy", "check", "--run", str(he_run), *arguments, str(other)])
    assert result.exit_code == 0, result.output
    named = he_run / f"privacy_check_{hashlib.sha256(other.read_bytes()).hexdigest()[:12]}.json"
    assert json.loads(named.read_text())["model"] == str(other)
    assert not own.exists()
    named.unlink()
    # a copy (or a link) of the run's model is the run's model: its record is the run's own
    result = runner.invoke(app, ["privacy", "check", "--run", str(he_run), *arguments, str(copy)])
    assert result.exit_code == 0, result.output
    record = json.loads(own.read_text())
    assert record["model"] == str(copy)
    assert record["model_sha256"] == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert sorted(p.name for p in he_run.glob("privacy_check*.json")) == ["privacy_check.json"]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (
            {"model": {"architecture": "he_friendly"}},
            r"model.*has one convolution.*conv_channels = \[16, 32, 32\]",
        ),
        (
            {
                "model": {"architecture": "he_friendly", "conv_channels": [4]},
                "train": {"robust": "ibp"},
            },
            r"train.robust = 'ibp' needs bounds through ReLU",
        ),
        (
            {
                "model": {"architecture": "he_friendly", "conv_channels": [4]},
                "train": {"sparsity": 0.5},
            },
            "train.sparsity: pruning compacts SmallCNN channels only",
        ),
        ({"model": {"hidden": 0}}, "hidden = 0 is for architecture = 'he_friendly'"),
    ],
)
def test_configs_the_he_model_cannot_honour_are_refused(data, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data)


@pytest.mark.parametrize(
    ("name", "channels"), [("he_friendly", ["cgm"]), ("he_friendly_iob_cob", ["cgm", "iob", "cob"])]
)
def test_the_shipped_experiments_are_three_level_he_models(name, channels):
    from pathlib import Path

    from tailorml.config import load_config
    from tailorml.models.he_cnn import multiplicative_depth

    config = load_config(Path(__file__).resolve().parents[2] / "experiments" / f"{name}.toml")
    assert config.model.architecture == "he_friendly"
    assert config.task.channels == channels
    n = len(channels)
    packed = n + len(config.model.cgm_levels)  # the levels are the client's extra channels
    model = build_model(
        config.model, n, 24, 3, torch.full((packed,), 150.0), torch.full((packed,), 50.0)
    )
    assert multiplicative_depth(model.spec) == 3
    layout = compile_plan(model).layout
    assert layout.window_channels == n and layout.channels == packed
