"""tailorml: personalize small deep-learning models for human-centric sensing, safely.

The public face a notebook imports (docs/python_api.md)::

    import tailorml as tm

    config = tm.load_config("experiments/tiny.toml")
    prepared = tm.prepare(config)
    training = tm.GlobalTraining.from_config(config, prepared.windows.sample_minutes)
    fit = tm.fit_global_model(prepared, training)
    evaluation = tm.evaluate_model(fit.model, prepared)
    outcome = tm.personalize_one(config, prepared, fit.model, "adult-008", "transfer", n=20)

Every name below is loaded on first use (PEP 562), so `import tailorml` stays cheap: the CLI
imports it on every command, and torch loads only when a name that needs it is used.
"""

import os
from importlib import import_module
from typing import Any

# torch's OpenMP threads spin while they wait for each other (GNU OpenMP's default). Our
# ops are small, so they wait at every op; when another process holds one of the two
# cores, a training step took 20x longer on 2 threads than on 1 (BENCHMARKS.md, "Speed
# under load"). Passive waiting sleeps instead. Set before torch loads OpenMP, which is why
# it lives here; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# public name -> (module, name there)
_EXPORTS: dict[str, tuple[str, str]] = {
    # configuration
    "Config": ("tailorml.config", "Config"),
    "load_config": ("tailorml.config", "load_config"),
    # cohorts: a file or shipped name, a data frame, the simulator
    "load_cohort": ("tailorml.data.cohort", "load_cohort"),
    "cohort_from_frame": ("tailorml.data.cohort", "cohort_from_frame"),
    "simulate_cohort": ("tailorml.data.simulate", "simulate_cohort"),
    "prepare": ("tailorml.data.prepared", "prepare"),
    # the predefined model, how it decides, and its file
    "fit_global_model": ("tailorml.pipeline", "fit_global_model"),
    "GlobalTraining": ("tailorml.pipeline", "GlobalTraining"),
    "AlertPolicy": ("tailorml.policy", "AlertPolicy"),
    "load_model": ("tailorml.models.cnn", "load_model"),
    "save_model": ("tailorml.models.cnn", "save_model"),
    # evaluation and personalization
    "evaluate_model": ("tailorml.evaluate.individuals", "evaluate_model"),
    "Evaluation": ("tailorml.evaluate.individuals", "Evaluation"),
    "personalize_one": ("tailorml.api", "personalize_one"),
    "Personalized": ("tailorml.api", "Personalized"),
    "STRATEGIES": ("tailorml.personalize", "REGISTRY"),
    # soft personalization in memory: candidates, gates, the proposal (no registry, no file)
    "personal_data": ("tailorml.personalize.dataset", "from_prepared"),
    "propose": ("tailorml.soft.session", "propose"),
    "SoftSettings": ("tailorml.soft.session", "SoftSettings"),
    # which model each person uses
    "Registry": ("tailorml.registry.models", "Registry"),
    "TailormlError": ("tailorml.errors", "TailormlError"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tailorml' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
