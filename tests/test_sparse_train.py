"""`train.sparsity`: the predefined model pruned by the one training loop, compacted (structured)
before it is evaluated and saved, on a small hand-made cohort (two patients, three days on
the 5-minute grid, glucose swinging through lows and highs every 8 h). One torch thread:
the tests share two cores with other jobs, and two threads on a busy core wait on each other."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cohort_frame
from tailorml import recipe as recipe_module
from tailorml.config import config_from_dict
from tailorml.data.prepared import prepare
from tailorml.errors import ConfigError
from tailorml.jobs import train as train_job
from tailorml.models.cnn import CNNSpec, count_parameters, load_model, save_model
from tailorml.models.predict import predict_proba
from tailorml.pipeline import GlobalTraining, fit_global_model
from tailorml.robust.training import RobustLoss
from tailorml.sparse.prune import Pruner, _n_parameters, channel_fraction_for, narrower_spec

DENSE = CNNSpec(in_channels=1, length=24, n_classes=3)  # the default network on the 5-min grid
DENSE_PARAMETERS = 14_115  # README: "a 1-D CNN with 14,115 parameters"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def config_of(tmp_path):
    """A config over the hand-made cohort; keyword arguments are `[train]` keys."""
    minutes = np.arange(3 * 288) * 5
    rng = np.random.default_rng(0)
    traces = {
        patient: list(
            150 + 110 * np.sin(2 * np.pi * (minutes + shift) / 480) + rng.normal(0, 5, len(minutes))
        )
        for patient, shift in (("p1", 0), ("p2", 100))
    }
    path = tmp_path / "cohort.csv"
    cohort_frame(traces, sample_minutes=5).to_csv(path, index=False)

    def config_of(**train):
        return config_from_dict(
            {
                "cohort": {"path": str(path)},
                "train": {"epochs": 2, "batch_size": 64, "threads": 1, **train},
                "run": {"runs_dir": str(tmp_path / "runs"), "name": "sparse"},
            }
        )

    return config_of


def fit_configured(config, prepared):
    """The global model as `tailorml train` fits it for `config`."""
    training = GlobalTraining.from_config(config, prepared.windows.sample_minutes)
    return fit_global_model(prepared, training)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1])
def test_sparsity_outside_0_to_1_is_refused_naming_the_key(bad):
    with pytest.raises(ConfigError, match=r"'train\.sparsity'"):
        config_from_dict({"train": {"sparsity": bad}})
    train = config_from_dict({"train": {"sparsity": 0.9}}).train
    assert (train.sparsity, train.structured) == (0.9, True)


def test_structured_pruning_yields_the_compacted_network_narrower_spec_predicts(
    config_of, tmp_path
):
    config = config_of(sparsity=0.9)
    fit = fit_configured(config, prepare(config))
    expected = narrower_spec(DENSE, channel_fraction_for(DENSE, 0.9))
    assert fit.model.spec == expected
    assert count_parameters(fit.model) == _n_parameters(expected) <= 0.1 * DENSE_PARAMETERS
    assert fit.pruning["parameters"] == count_parameters(fit.model)
    assert fit.pruning["dense_parameters"] == DENSE_PARAMETERS
    assert fit.result.best_step is None  # final weights, no checkpoint restored
    save_model(fit.model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    x = prepare(config).windows.x[:200]
    assert np.array_equal(predict_proba(loaded, x), predict_proba(fit.model, x))
    assert loaded.policy == fit.model.policy  # the threshold chosen for the compacted model


def test_the_job_saves_evaluates_and_records_the_compacted_model(config_of):
    run = train_job.run(config_of(sparsity=0.9)).path
    saved = count_parameters(load_model(run / "model.pt"))
    training = json.loads((run / "training.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert saved == training["parameters"] == metrics["model"]["parameters"]
    assert training["pruning"] == metrics["training"]["pruning"]
    assert training["pruning"] | {"zero_weights": None} == {
        "sparsity": 0.9,
        "structured": True,
        "dense_parameters": DENSE_PARAMETERS,
        "parameters": saved,
        "zero_weights": None,
    }
    assert f"{saved} of the dense {DENSE_PARAMETERS} parameters" in _text(run / "report.html")


def test_unstructured_pruning_keeps_the_shape_and_saves_the_zeros(config_of, tmp_path):
    fit = fit_configured(config_of(sparsity=0.8, structured=False), prepare(config_of()))
    save_model(fit.model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.spec == DENSE and count_parameters(loaded) == DENSE_PARAMETERS
    weights = [
        m.weight for m in loaded.modules() if isinstance(m, torch.nn.Conv1d | torch.nn.Linear)
    ]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros >= round(0.8 * total)  # global magnitude pruning cuts exactly this many
    assert fit.pruning["zero_weights"] == zeros / total


def test_the_dense_default_is_unchanged(config_of):
    config = config_of()
    assert (config.train.sparsity, config.train.structured) == (0.0, True)
    fit = fit_configured(config, prepare(config))
    assert fit.model.spec == DENSE and count_parameters(fit.model) == DENSE_PARAMETERS
    assert fit.pruning is None
    assert fit.result.best_step is not None  # the best validation checkpoint is still kept


def test_certified_training_and_pruning_share_the_one_loop(config_of, monkeypatch):
    seen = []

    def spy(*args, plugins, **kwargs):
        seen.extend(type(plugin) for plugin in plugins)
        return real(*args, plugins=plugins, **kwargs)

    real = recipe_module.train
    monkeypatch.setattr(recipe_module, "train", spy)
    config = config_of(robust="crown-ibp", sparsity=0.9, epochs=1)
    fit = fit_configured(config, prepare(config))
    assert seen[:2] == [RobustLoss, Pruner]  # then the progress bar
    assert fit.model.spec == narrower_spec(DENSE, channel_fraction_for(DENSE, 0.9))


def test_experiments_and_soft_personalization_refuse_sparsity_in_one_line(config_of):
    from tailorml.jobs.experiment import run as run_experiment
    from tailorml.soft.session import personalize_individual

    config = config_of(sparsity=0.5)
    for job in (lambda: run_experiment(config), lambda: personalize_individual(config, "p1")):
        with pytest.raises(ConfigError, match=r"^train\.sparsity = 0\.5: `tailorml") as error:
            job()
        assert "\n" not in str(error.value)
    assert not Path(config.run.runs_dir).exists()  # refused before any run directory


def _text(path: Path) -> str:
    return " ".join(path.read_text().split())


def test_the_shipped_certified_sparse_experiment_is_certified_plus_pruning():
    from tailorml.config import load_config

    experiments = Path(__file__).resolve().parents[1] / "experiments"
    certified = load_config(experiments / "certified.toml").to_dict()
    sparse = load_config(experiments / "certified_sparse.toml").to_dict()
    assert (sparse["train"]["sparsity"], sparse["train"]["structured"]) == (0.9, True)
    assert sparse["run"]["name"] == "certified-sparse"
    for config in (certified, sparse):
        config["train"] |= {"sparsity": None, "structured": None}
        config["run"]["name"] = None
    assert sparse == certified
