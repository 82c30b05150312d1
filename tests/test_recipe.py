"""One recipe for the predefined model: `[train]`, used by `tailorml train`, experiments and
soft personalization alike."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tailorml.config import Config, config_from_dict, load_config
from tailorml.errors import ConfigError
from tailorml.personalize.grid import expand
from tailorml.recipe import Recipe

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def tiny_writers(**train) -> Config:
    return config_from_dict(
        {
            "experiment": {"dataset": "writers", "min_individual_samples": 10},
            "writers": {"individuals": 3, "general_writers": 2, "samples_per_class": 2},
            "model": {"conv_channels": [4, 8], "kernel_size": 3, "hidden": 16},
            "train": {"epochs": 1, "batch_size": 16, **train},
        }
    )


def test_the_job_and_the_experiment_train_their_global_model_with_the_same_recipe(
    monkeypatch, tmp_path
):
    import tailorml.experiment.tasks as tasks
    import tailorml.pipeline as pipeline

    seen = {}

    def spy(name, real):
        def fit(model, general, recipe, **kwargs):
            seen[name] = (recipe, kwargs["seed"])
            return real(model, general, recipe, **kwargs)

        return fit

    monkeypatch.setattr(pipeline, "fit_predefined", spy("job", pipeline.fit_predefined))
    monkeypatch.setattr(tasks, "fit_predefined", spy("experiment", tasks.fit_predefined))
    config = tiny_writers(learning_rate=1e-3, weight_decay=0.0, class_weighting="none")
    individual = tasks.load_data(config).ids[0]
    tasks.run_global(config.model_dump_json(), str(tmp_path), individual, 0)

    rng = np.random.default_rng(0)
    windows = SimpleNamespace(  # the job reads x, y and the grid (for the policy)
        x=rng.normal(size=(40, 1, 24)).astype(np.float32),
        y=rng.integers(0, 3, size=40),
        sample_minutes=5,
    )
    parts = {"train": np.arange(40), "val": np.arange(0)}
    splits = SimpleNamespace(pooled=lambda part: parts[part])
    training = pipeline.GlobalTraining.from_config(config, windows.sample_minutes)
    pipeline.fit_global_model(SimpleNamespace(windows=windows, splits=splits), training)

    expected = Recipe.from_config(config.train)
    assert seen["job"][0] == seen["experiment"][0] == expected
    assert expected == Recipe(1, 16, 1e-3, 0.0, "none", "none")
    assert seen["job"][1] == config.train.seed  # the job's seed; an experiment's own seeds
    assert seen["experiment"][1] == 0


def test_an_experiment_overriding_train_epochs_changes_only_that_experiment():
    table1 = load_config(EXPERIMENTS / "table1.toml")
    assert table1.train.epochs == 4
    assert Config().train.epochs == 10  # `tailorml train` without a config: unchanged
    assert load_config(EXPERIMENTS / "tiny.toml").train.epochs == 2
    # only the keys the experiment sets differ from the job's recipe (the synthetic Table I
    # pins the window stride and checkpoint choice its figures were measured with)
    defaults = Config().train.model_dump()
    changed = {k for k, v in table1.train.model_dump().items() if v != defaults[k]}
    assert changed == {"epochs", "weight_decay", "window_stride", "checkpoint_by"}


@pytest.mark.parametrize(
    ("name", "batch_size", "class_weighting", "robust"),
    [
        ("table1", 256, "balanced", "none"),
        ("writers", 128, "none", "none"),
        ("robust", 256, "balanced", "crown-ibp"),
    ],
)
def test_shipped_experiments_keep_the_recipe_they_had(name, batch_size, class_weighting, robust):
    # before [train] was the one recipe, experiments trained 4 epochs, lr 2e-3, no decay
    config = load_config(EXPERIMENTS / f"{name}.toml")
    expected = Recipe(4, batch_size, 2e-3, 0.0, class_weighting, robust)
    assert Recipe.from_config(config.train) == expected


def test_moved_experiment_keys_name_their_new_place():
    with pytest.raises(ConfigError, match=r"'experiment\.epochs' moved: set 'train\.epochs'"):
        config_from_dict({"experiment": {"epochs": 4}})
    with pytest.raises(ConfigError, match=r"'experiment\.global_robust' moved.*'train\.robust'"):
        config_from_dict({"experiment": {"global_robust": "ibp"}})


def test_strategies_declare_that_they_need_latents():
    settings = expand(
        {"baseline": {}, "random_grouping": {"n": [5]}, "single_sample_grouping": {"n": [5]}}
    )
    assert {s.method: s.needs for s in settings} == {
        "baseline": frozenset(),
        "random_grouping": frozenset(),
        "single_sample_grouping": frozenset({"latents"}),
    }
    (individual,) = expand({"individual_grouping": {"n": [2]}})
    assert individual.needs == {"latents"}


def test_soft_personalization_does_not_import_experiments():
    code = (
        "import sys, tailorml.soft.session; "
        "print(sorted(m for m in sys.modules if m.startswith('tailorml.experiment')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
