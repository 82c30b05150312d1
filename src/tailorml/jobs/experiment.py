"""`tailorml experiment`: run a methods x settings x seeds grid over individuals.

Phases: (1) autoencoder latents (only when a grouping method needs them) and the global
models, (2) every individual x seed. Each finished unit is cached in the run directory and
skipped on rerun (`--resume RUN`), so an interrupted experiment loses nothing it finished.
Outputs: results.parquet/.csv (one row per individual x setting x seed), summary.csv
(Table I, with the age-group gaps), fairness.csv and fairness_traits.csv (does
personalization decrease fairness? `experiment.fairness`), robustness.csv (with
`experiment.stress`: each method under the sensor faults; with `experiment.life_days`, also
under re-simulated life changes) and report.html. The run is of kind "experiment"; the
CLI prints Table I from the result object (`ExperimentResult`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tailorml.config import Config
from tailorml.errors import ConfigError
from tailorml.experiment import tasks
from tailorml.experiment.backends import make_backend
from tailorml.experiment.fairness import (
    add_gap_columns,
    cohort_categories,
    cohort_traits,
    write_fairness,
)
from tailorml.experiment.generalization import robustness_table
from tailorml.experiment.summary import table_one
from tailorml.io import atomic_write_parquet, atomic_write_text, encode_component
from tailorml.jobs.result import InRun, as_json
from tailorml.personalize.dataset import PersonalData
from tailorml.personalize.grid import Setting, expand
from tailorml.progress import SILENT, Reporter
from tailorml.recipe import require_dense, require_train_only_options
from tailorml.runs import Run

KIND = "experiment"


@dataclass
class ExperimentResult(InRun):
    """A finished experiment: every result row (individual x setting x seed), Table I
    (`summary`, with the group gaps) and the robustness table."""

    run: Run
    results: pd.DataFrame
    summary: pd.DataFrame
    robustness: pd.DataFrame

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "run_dir": str(self.path),
            "summary": as_json(self.summary.to_dict("records")),
            "robustness": as_json(self.robustness.to_dict("records")),
        }

    def write(self) -> None:
        """results.parquet/.csv, robustness.csv and summary.csv into the run directory."""
        atomic_write_parquet(self.run.file("results.parquet"), self.results)
        atomic_write_text(self.run.file("results.csv"), self.results.to_csv(index=False))
        atomic_write_text(self.run.file("robustness.csv"), self.robustness.to_csv(index=False))
        atomic_write_text(self.run.file("summary.csv"), self.summary.to_csv(index=False))


def select_individuals(config: Config, data: PersonalData) -> list[str]:
    wanted = config.experiment.individuals
    unknown = sorted(set(wanted) - set(data.ids))
    if unknown:
        raise ConfigError(
            f"experiment.individuals: unknown {', '.join(unknown)}; valid: {', '.join(data.ids)}"
        )
    chosen = [i for i in data.ids if i in wanted] if wanted else list(data.ids)
    if config.experiment.max_individuals:
        chosen = chosen[: config.experiment.max_individuals]
    return chosen


def check_inputs(config: Config, settings: Sequence[Setting]) -> None:
    """A method that cannot use the model's inputs (multi-modal co-teaching on a CGM-only
    model) fails before any work, not after the global models have trained."""
    glucose = config.experiment.dataset == "glucose"
    channels = tuple(config.task.channels) if glucose else ()
    for setting in settings:
        try:
            setting.strategy().check_inputs(channels)
        except ValueError as error:
            raise ConfigError(f"[methods.{setting.method}]: {error}") from None


def check_reference(config: Config, settings: Sequence[Setting]) -> None:
    reference = config.experiment.reference
    count = sum(setting.method == reference for setting in settings)
    if count != 1:
        raise ConfigError(
            f"experiment.reference = '{reference}' must name a method with exactly one setting "
            f"in [methods] (found {count}); e.g. 'baseline'"
        )


def _run_phase(
    reporter: Reporter,
    backend,
    title: str,
    function: Callable,
    arguments: list[tuple],
) -> None:
    if not arguments:
        return
    with reporter.task(title, total=len(arguments)) as task:
        backend.map(function, arguments, lambda _: task.advance())


NOTHING_TO_RUN = (
    "no individual can be personalized: all {count} would be skipped ({reasons}); lower "
    "experiment.min_individual_samples, set experiment.required_classes, or use a cohort "
    "with more days per individual"
)


def collect(run: Run) -> pd.DataFrame:
    """Every cached result row. A row counts only in its individual's folder as this
    version names it (`encode_component`): a run resumed across the change that escaped
    upper-case letters ("Alice" -> "%41lice") has the old folder too, whose rows are redone."""
    rows = []
    for path in sorted(run.path.glob("cache/results/*/*.json")):
        row = json.loads(path.read_text())
        if path.parent.name == encode_component(str(row.get("individual", ""))):
            rows.append(row)
    return pd.DataFrame(rows)


def run(
    config: Config | None,
    reporter: Reporter = SILENT,
    resume: str | Path | None = None,
) -> ExperimentResult:
    """The grid of `config` (or, with `resume`, of the interrupted run's own config) over
    its individuals: phase one (latents, global models), phase two (every individual x
    seed), then the tables and the report."""
    if resume:
        run = Run.resume(resume, KIND)
        config = run.config()
        reporter.log(f"resuming {run.path}")
    require_dense(
        config.train,
        "`tailorml experiment`",
        "its methods would not keep pruned weights at zero; the sparse_finetuning method "
        "prunes personalized models",
    )
    require_train_only_options(config.train, "`tailorml experiment`")
    settings = expand(config.methods)  # bad methods fail here, before any work
    check_reference(config, settings)
    check_inputs(config, settings)
    if not resume:
        named = config.run.model_copy(update={"name": config.experiment.name})
        run = Run.create(config.model_copy(update={"run": named}), KIND)
    reporter.log(f"run directory: {run.path}")
    experiment = config.experiment
    data = tasks.load_data(config)
    if data.synthetic:
        reporter.log("data set is SYNTHETIC; results are not clinical evidence", style="yellow")
    individuals = select_individuals(config, data)
    required = (
        list(data.class_names)
        if experiment.required_classes is None
        else experiment.required_classes
    )
    bad = sorted(set(required) - set(data.class_names))
    if bad:
        raise ConfigError(
            f"experiment.required_classes: unknown {', '.join(bad)}; "
            f"classes: {', '.join(data.class_names)}"
        )
    reasons = {
        individual: data.skip_reason(individual, experiment.min_individual_samples, required)
        for individual in individuals
    }
    runnable = [individual for individual, reason in reasons.items() if not reason]
    if not runnable:  # else every step would run on nothing and Table I would have no rows
        shown = "; ".join(f"{who}: {why}" for who, why in list(reasons.items())[:3])
        raise ConfigError(NOTHING_TO_RUN.format(count=len(reasons), reasons=shown))
    for individual, reason in reasons.items():
        if reason:
            tasks.record_skipped(config, data, str(run.path), individual, reason)
            reporter.log(f"skipping {individual}: {reason}")
    reporter.log(
        f"{data.name}: {len(runnable)} individuals x {len(settings)} settings x "
        f"{len(experiment.seeds)} seeds"
    )

    paths = tasks.CachePaths(run.path)
    if experiment.life_days:
        _simulate_life(paths, runnable, experiment.life_days, experiment.seeds[0], reporter)
    config_json = config.model_dump_json()
    root = str(run.path)
    backend = make_backend(experiment.backend, experiment.workers, experiment.ray_address)
    seeds = experiment.seeds
    phase_one: list[tuple[Callable, tuple]] = []
    if any("latents" in setting.needs for setting in settings):
        phase_one += [
            (tasks.run_autoencoder, (config_json, root, seed))
            for seed in seeds
            if not paths.latents(seed).exists()
        ]
    seen_keys = set()
    for individual in runnable:
        key = data.general_key(individual)
        if key in seen_keys:
            continue
        seen_keys.add(key)
        phase_one += [
            (tasks.run_global, (config_json, root, individual, seed))
            for seed in seeds
            if not paths.global_model(key, seed).exists()
        ]
    _run_phase(
        reporter,
        backend,
        "global models and latents",
        _dispatch,
        [(function, arguments) for function, arguments in phase_one],
    )
    pending = [
        (config_json, root, individual, seed)
        for individual in runnable
        for seed in seeds
        if any(not paths.result(individual, setting, seed).exists() for setting in settings)
    ]
    _run_phase(reporter, backend, "personalizing", tasks.run_individual, pending)

    results = collect(run)
    wanted = {(s.method, s.label) for s in settings}
    results = results[
        [(m, s) in wanted for m, s in zip(results["method"], results["setting"], strict=True)]
    ]
    results = results[results["individual"].isin(individuals) & results["seed"].isin(seeds)]
    summary = table_one(results, experiment.reference, [s.label for s in settings])
    cohort = getattr(data.glucose, "cohort", None)
    fairness, _ = write_fairness(
        run.path,
        results,
        experiment.reference,
        cohort_traits(cohort) if cohort is not None else pd.DataFrame(),
        seeds[0],
        cohort_categories(cohort) if cohort is not None else None,
    )
    summary = add_gap_columns(summary, fairness, experiment.reference)
    robustness = robustness_table(results, experiment.reference)
    result = ExperimentResult(run, results.reset_index(drop=True), summary, robustness)
    result.write()
    run.mark_done(KIND)

    from tailorml.experiment.report import render_experiment_report

    report = render_experiment_report(run.path)
    reporter.log(f"report: {report}")
    return result


def _simulate_life(
    paths: tasks.CachePaths, individuals: list[str], days: int, seed: int, reporter: Reporter
) -> None:
    """The life-change cohorts of every virtual patient of the run, simulated once (kept in
    the cache: a resumed run reuses them)."""
    from tailorml.shift.life import is_virtual_patient, simulate_life

    done = paths.life / "DONE"
    if done.exists():
        return
    patients = [individual for individual in individuals if is_virtual_patient(individual)]
    if not patients:
        raise ConfigError(
            "experiment.life_days needs UVA/Padova virtual patients (ids like adult-001) in "
            "the cohort; set it to 0 for this cohort"
        )
    with reporter.task(f"life changes ({len(patients)} patients, {days} days)", total=1) as task:
        simulate_life(patients, days, seed, paths.life)
        atomic_write_text(done, "life\n")
        task.advance()


def _dispatch(function: Callable, arguments: tuple):
    """Lets one phase mix task kinds (a backend maps one function)."""
    return function(*arguments)
