"""Units of work of an experiment; each runs in a worker process and writes its result into
the run's cache atomically, so an interrupted experiment keeps everything it finished.

- autoencoder task (seed): the latent space for data grouping;
- global task (individual, seed): the predefined model (the `[train]` recipe, as in
  `tailorml train`) on that individual's D_G (shared by every individual with the same D_G);
- individual task (individual, seed): every method setting not yet cached.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from tailorml.config import Config
from tailorml.io import atomic_write, atomic_write_json, encode_component, fingerprint
from tailorml.models.cnn import load_model, save_model
from tailorml.models.train import LabeledData, use_threads
from tailorml.personalize.base import Context, execute
from tailorml.personalize.dataset import PersonalData, from_glucose, from_writers
from tailorml.personalize.evaluate import evaluate_personalized, policy_of
from tailorml.personalize.factory import (
    StrategyTraining,
    context_for,
    latents_of,
    model_factory,
)
from tailorml.personalize.fair import sample_groups
from tailorml.personalize.grid import Setting, expand
from tailorml.recipe import Recipe, fit_predefined
from tailorml.robust.evaluate import perturbation_for


def data_fingerprint(config: Config) -> str:
    parts = {"dataset": config.experiment.dataset, "stride": config.experiment.general_stride}
    if config.experiment.dataset == "glucose":
        parts |= {
            key: getattr(config, key).model_dump(mode="json") for key in ("cohort", "task", "split")
        }
    else:
        parts["writers"] = config.writers.model_dump(mode="json")
    return fingerprint(parts)


def load_data(config: Config) -> PersonalData:
    """The experiment's data set, built once per process for a configuration (every task
    of an experiment run in one worker shares it)."""
    return _data_of(config.model_dump_json())


@functools.lru_cache(maxsize=1)
def _data_of(config_json: str) -> PersonalData:
    config = Config.model_validate_json(config_json)
    if config.experiment.dataset == "glucose":
        return from_glucose(config, config.experiment.general_stride)
    return from_writers(config.writers)


class CachePaths:
    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir) / "cache"

    @property
    def life(self) -> Path:
        """The life-change cohorts every method is evaluated on (`experiment.life_days`)."""
        return self.root / "life"

    def latents(self, seed: int) -> Path:
        return self.root / f"latents-seed{seed}.npy"

    def global_model(self, key: str, seed: int) -> Path:
        return self.root / "global" / f"{encode_component(key)}-seed{seed}.pt"

    def result(self, individual: str, setting: Setting, seed: int) -> Path:
        folder = self.root / "results" / encode_component(individual)  # ids are data
        return folder / f"{setting.key}-seed{seed}.json"


def _setup(config_json: str) -> tuple[Config, PersonalData]:
    config = Config.model_validate_json(config_json)
    use_threads(config.experiment.threads_per_worker)
    return config, load_data(config)


def make_context(
    config: Config, data: PersonalData, run_dir: str, individual: str, seed: int
) -> Context:
    """The individual's strategy context, its predefined model and latents read from the
    run's cache (written by the global and autoencoder tasks)."""
    paths = CachePaths(run_dir)
    key = data.general_key(individual)
    return context_for(
        StrategyTraining.from_config(config),
        data,
        individual,
        seed,
        global_model=functools.cache(lambda: load_model(paths.global_model(key, seed))),
        latents=functools.cache(lambda: np.load(paths.latents(seed))),
    )


def run_autoencoder(config_json: str, run_dir: str, seed: int) -> str:
    config, data = _setup(config_json)
    latents = latents_of(StrategyTraining.from_config(config), data, seed)
    atomic_write(CachePaths(run_dir).latents(seed), lambda path: _save_npy(path, latents))
    return f"autoencoder seed {seed}"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, array)


def run_global(config_json: str, run_dir: str, individual: str, seed: int) -> str:
    """The predefined model of `individual`'s D_G: `fit_predefined` with the `[train]`
    recipe, as `tailorml train` does, on every `general_stride`-th D_G window, without
    validation."""
    config, data = _setup(config_json)
    general = data.general_train(individual)
    model = model_factory(config.model, data, individual, seed)()
    recipe = Recipe.from_config(config.train)
    fit = fit_predefined(
        model,
        LabeledData.from_numpy(data.x[general], data.y[general]),
        recipe,
        n_classes=data.n_classes,
        seed=seed,
        perturbation=perturbation_for(config.robust, data.policy),
        groups=sample_groups(data)[general] if recipe.group_dro_eta else None,
    )
    save_model(fit.model, CachePaths(run_dir).global_model(data.general_key(individual), seed))
    return f"global model {data.general_key(individual)} seed {seed}"


def result_row(data: PersonalData, individual: str, setting: Setting, seed: int) -> dict[str, Any]:
    return {
        "dataset": data.name,
        "synthetic": data.synthetic,
        "individual": individual,
        "group": data.groups.get(individual, ""),
        "method": setting.method,
        "setting": setting.label,
        "params": json.dumps(dict(setting.params)),
        "seed": seed,
    }


def run_individual(config_json: str, run_dir: str, individual: str, seed: int) -> int:
    """Every setting of one individual and seed that is not cached yet; returns how many."""
    config, data = _setup(config_json)
    paths = CachePaths(run_dir)
    context = make_context(config, data, run_dir, individual, seed)
    done = 0
    for setting in expand(config.methods):
        target = paths.result(individual, setting, seed)
        if target.exists():
            continue
        strategy = setting.strategy()
        start = time.perf_counter()
        plan = strategy.plan(context)
        model = execute(plan, context)
        seconds = time.perf_counter() - start
        row = result_row(data, individual, setting, seed) | {
            "status": "ok",
            "reason": "",
            "seconds": seconds,
            "train_steps": len(plan.schedule),
            "personal_samples": len(plan.sources.get("individual", context.own)),
        }
        row |= evaluate_personalized(model, data, individual, config)
        if config.experiment.life_days and data.policy.is_alert:
            from tailorml.shift.life import life_columns

            row |= life_columns(model, policy_of(model, data), paths.life, individual)
        atomic_write_json(target, row)
        done += 1
    return done


def record_skipped(
    config: Config, data: PersonalData, run_dir: str, individual: str, reason: str
) -> None:
    paths = CachePaths(run_dir)
    for seed in config.experiment.seeds:
        for setting in expand(config.methods):
            target = paths.result(individual, setting, seed)
            if not target.exists():
                row = result_row(data, individual, setting, seed)
                atomic_write_json(target, row | {"status": "skipped", "reason": reason})
