"""`tailorml lodo`: leave one dataset out — the generalization figure of a shipped model.

For each dataset of the cohort in turn, the predefined model is trained with THE recipe on the
other datasets (their chronological training parts; threshold on their validation parts) and
judged on the people of the dataset left out, whom it never saw: their first days set
personal thresholds, the rest judge every rule (`evaluate.rules`). A new dataset is a
new population and often a new sensor, which later days of the same people never test.

Run directory: `folds/<dataset>/` (model.pt, training.json, per_person.csv, alert_curve.csv,
predictions.parquet, readings.parquet) per fold, finished folds kept for `--resume`;
`summary.csv` (one row per left-out dataset and rule), `metrics.json`, `report.html`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tailorml.config import Config, threshold_grid
from tailorml.data.cohort import Cohort, load_cohort
from tailorml.data.prepared import prepare_calibration, prepare_split
from tailorml.errors import ConfigError
from tailorml.evaluate.report import optional_table
from tailorml.evaluate.rules import evaluate_rules, population_priors, summarize
from tailorml.io import atomic_write_json, atomic_write_parquet, atomic_write_text, sha256_file
from tailorml.jobs.lodo_report import fold_folder, render
from tailorml.models.cnn import count_parameters, load_model, save_model
from tailorml.models.train import use_threads
from tailorml.pipeline import GlobalTraining, fit_global_model
from tailorml.progress import SILENT, Reporter
from tailorml.runs import Run

KIND = "lodo"
DATASET = "dataset"  # the categorical trait that names each person's dataset


@dataclass
class LodoResult:
    """What `tailorml lodo` found: one summary row per left-out dataset and rule."""

    run_dir: Path
    summary: pd.DataFrame
    synthetic: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "synthetic": self.synthetic,
            "summary": json.loads(self.summary.to_json(orient="records")),
        }


def folds_of(cohort: Cohort, chosen: list[str]) -> dict[str, list[str]]:
    """Left-out dataset -> its people; refused unless the cohort has two datasets or more."""
    owner = cohort.category(DATASET)
    datasets = sorted({name for name in owner.values() if name})
    if len(datasets) < 2:
        found = ", ".join(datasets) or "no `dataset` column"
        raise ConfigError(
            f"{cohort.source} has {len(datasets)} dataset(s) ({found}); leaving one out needs "
            "two or more: use --cohort real, or a cohort file with a per-person `dataset` column"
        )
    unknown = sorted(set(chosen) - set(datasets))
    if unknown:
        raise ConfigError(
            f"lodo.datasets: {', '.join(unknown)} not in the cohort; it has {', '.join(datasets)}"
        )
    return {
        name: [person for person, dataset in owner.items() if dataset == name]
        for name in (chosen or datasets)
    }


def require_evaluation_days(cohort: Cohort, folds: dict[str, list[str]], config: Config) -> None:
    """Each left-out dataset has someone with days after their calibration days (and the
    gap of window + horizon); checked before any training, not after it."""
    task = config.task
    needed = config.lodo.calibration_days + 2 * (task.window_minutes + task.horizon_minutes) / 1440
    for held_out, people in folds.items():
        longest = max(len(cohort.of(person)) for person in people) * cohort.sample_minutes / 1440
        if longest <= needed:
            raise ConfigError(
                f"lodo.calibration_days = {config.lodo.calibration_days:g} leaves the people of "
                f"{held_out} no day to be judged on (the longest has {longest:.1f} days); "
                "lower it, or use longer recordings"
            )


def run_fold(
    config: Config, cohort: Cohort, held_out: list[str], folder: Path, reporter: Reporter
) -> pd.DataFrame:
    """Train without `held_out`, judge on them; write the fold's files; return its rows."""
    training = cohort.subset([person for person in cohort.ids if person not in held_out])
    prepared = prepare_split(training, config.task, config.split)
    model_path = folder / "model.pt"
    if model_path.exists():
        model = load_model(model_path)
    else:
        reporter.log(f"training on {len(training.ids)} people ({len(prepared.windows):,} windows)")
        plan = GlobalTraining.from_config(config, prepared.windows.sample_minutes, reporter)
        fit = fit_global_model(prepared, plan, reporter)
        model = fit.model
        atomic_write_json(
            folder / "training.json",
            {
                "trained_on": training.ids,
                "operating_point": fit.operating_point.to_dict() if fit.operating_point else None,
                "parameters": count_parameters(model),
                "best_step": fit.result.best_step,
            },
        )
        save_model(model, model_path)
    new_people = prepare_calibration(
        cohort.subset(held_out), model.policy.task(), config.lodo.calibration_days
    )
    knobs = threshold_grid()
    priors = population_priors(model, prepared, "val", knobs, config.alerts.personal_prior_days)
    judged = evaluate_rules(
        model,
        new_people,
        config.alerts.max_false_alerts_per_day,
        knobs,
        priors=priors,
    )
    atomic_write_text(folder / "per_person.csv", judged.per_person.to_csv(index=False))
    atomic_write_text(folder / "alert_curve.csv", judged.curve.to_csv(index=False))
    atomic_write_parquet(folder / "predictions.parquet", judged.predictions)
    atomic_write_parquet(folder / "readings.parquet", judged.readings)
    return judged.per_person


def run(
    config: Config, reporter: Reporter = SILENT, resume: str | Path | None = None
) -> LodoResult:
    """Every fold (resumable), then the summary, metrics.json and the report."""
    run_dir = Run.resume(resume, KIND) if resume else None
    config = run_dir.config() if run_dir else config
    cohort = load_cohort(
        config.cohort.path or None, config.cohort.individuals or None, config.cohort.max_days
    )
    folds = folds_of(cohort, config.lodo.datasets)  # refused before a run directory exists
    require_evaluation_days(cohort, folds, config)
    if run_dir is None:
        run_dir = Run.create(config, KIND)
    use_threads(config.train.threads)
    reporter.log(f"{'resuming' if resume else 'run directory:'} {run_dir.path}")
    summaries = []
    for held_out, people in folds.items():
        folder = fold_folder(run_dir.path, held_out)
        folder.mkdir(parents=True, exist_ok=True)
        step = f"fold:{held_out}"
        reporter.log(f"leaving out {held_out} ({len(people)} people)")
        if run_dir.done(step):
            per_person = optional_table(folder / "per_person.csv")
        else:
            per_person = run_fold(config, cohort, people, folder, reporter)
            run_dir.mark_done(step)
        curve = optional_table(folder / "alert_curve.csv")
        summary = summarize(per_person, curve, config.lodo.bootstrap_samples, config.train.seed)
        summaries.append(summary.assign(held_out=held_out)[["held_out", *summary.columns]])
    summary = pd.concat(summaries, ignore_index=True)
    atomic_write_text(run_dir.file("summary.csv"), summary.to_csv(index=False))
    atomic_write_json(
        run_dir.file("metrics.json"),
        {
            "synthetic": cohort.synthetic,
            "cohort": cohort.source,
            "datasets": cohort.metadata.get("datasets", {}),
            "budget": config.alerts.max_false_alerts_per_day,
            "calibration_days": config.lodo.calibration_days,
            "folds": {
                held_out: {
                    "people": people,
                    "model_sha256": sha256_file(fold_folder(run_dir.path, held_out) / "model.pt"),
                }
                for held_out, people in folds.items()
            },
        },
    )
    render(run_dir.path)
    run_dir.mark_done("report")
    return LodoResult(run_dir.path, summary, cohort.synthetic)
