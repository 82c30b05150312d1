"""`tailorml train` and `tailorml demo`: cohort -> windows -> splits -> global model ->
evaluation -> report, in a run directory of kind "train".

Orchestration only (the work is in data.prepared, pipeline.fit_global_model,
evaluate.individuals and evaluate.report). Each step writes its outputs into the run
directory atomically and is recorded in run.json, so `--resume RUN` skips the steps that
already finished with the same config. The result (`MetricsResult`) holds metrics.json as
written; the CLI prints from it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tailorml.config import Config, threshold_grid
from tailorml.data.prepared import Prepared, prepare
from tailorml.errors import TailormlError
from tailorml.evaluate.individuals import data_summary, write_evaluation
from tailorml.evaluate.rules import population_priors, summary_by_group
from tailorml.io import atomic_write_json, atomic_write_text, sha256_file
from tailorml.jobs.result import MetricsResult, as_json
from tailorml.models.cnn import SmallCNN, count_parameters, load_model, save_model
from tailorml.models.train import use_threads
from tailorml.pipeline import GlobalTraining, fit_global_model
from tailorml.progress import SILENT, Reporter
from tailorml.runs import Run

KIND = "train"


# training.json's name of the best checkpoint's validation score, by train.checkpoint_by
SCORE_KEY = {
    "balanced_accuracy": "best_val_balanced_accuracy",
    "alerts": "best_val_early_sensitivity",
}


def run(
    config: Config, reporter: Reporter = SILENT, resume: str | Path | None = None
) -> MetricsResult:
    """Train and evaluate the global model; write everything into a run directory (a new
    one, or `resume`: an interrupted train run, continued with its own config)."""
    if resume:
        run = Run.resume(resume, KIND)
        config = run.config()
        reporter.log(f"resuming {run.path}")
    else:
        run = Run.create(config, KIND)
    use_threads(config.train.threads)
    reporter.log(f"run directory: {run.path}")
    prepared = prepare(config)
    cohort, windows, splits = prepared.cohort, prepared.windows, prepared.splits
    shown = config.run.report_patient
    if shown and shown not in cohort.ids:
        raise TailormlError(
            f"run.report_patient = {shown!r} is not in the cohort; choose one of "
            f"{', '.join(cohort.ids[:5])}{', …' if len(cohort.ids) > 5 else ''} or leave it empty"
        )
    if cohort.synthetic:
        reporter.log(
            "cohort is SYNTHETIC (simulated); figures are not clinical evidence", style="yellow"
        )
    train_idx, val_idx, test_idx = (splits.pooled(part) for part in ("train", "val", "test"))
    reporter.log(
        f"{len(cohort.individuals)} individuals, {len(windows)} windows "
        f"(train {len(train_idx)}, val {len(val_idx)}, test {len(test_idx)})"
    )

    model_path = run.file("model.pt")
    if run.done("train") and model_path.exists():
        model = load_model(model_path)
        reporter.log("training already finished; reusing model.pt")
    else:
        plan = GlobalTraining.from_config(config, prepared.windows.sample_minutes, reporter)
        fit = fit_global_model(prepared, plan, reporter)
        model, result = fit.model, fit.result
        save_model(model, model_path)
        atomic_write_json(
            run.file("training.json"),
            {
                "best_step": result.best_step,
                "checkpoint_by": config.train.checkpoint_by,
                SCORE_KEY[config.train.checkpoint_by]: result.best_score,
                "steps": result.steps,
                "history": result.history,
                "operating_point": fit.operating_point.to_dict() if fit.operating_point else None,
                "parameters": count_parameters(model),
                "pruning": fit.pruning,
            },
        )
        run.mark_done("train")

    with reporter.task("evaluating individuals", total=1) as task:
        evaluation = write_evaluation(run.path, model, prepared, "test")
        calibration = "val" if len(splits.pooled("val")) else None
        write_rules(run.path, config, model, prepared, calibration, "test")
        task.advance()
    training = _read_json(run.file("training.json"))
    metrics = {
        **data_summary(prepared),
        "model": {
            "file": "model.pt",
            "sha256": sha256_file(model_path),
            "parameters": count_parameters(model),
        },
        "training": {
            k: training.get(k)
            for k in ("best_step", *SCORE_KEY.values(), "checkpoint_by", "steps", "pruning")
            if k in training
        },
        "operating_point": training.get("operating_point"),
        **evaluation,
    }
    metrics = as_json(metrics)
    atomic_write_json(run.file("metrics.json"), metrics)
    run.mark_done("evaluate")

    from tailorml.evaluate.report import render_report

    report = render_report(run.path)
    run.mark_done("report")
    reporter.log(f"report: {report}")
    return MetricsResult(run, metrics)


def write_rules(
    folder, config: Config, model: SmallCNN, prepared: Prepared, calibration, evaluation: str
) -> None:
    """alert_rules.csv: the model (population and personal thresholds) beside every rule
    without learning, for all people and per dataset (`evaluate.rules.summary_by_group`)."""
    knobs, days = threshold_grid(), config.alerts.personal_prior_days
    priors = population_priors(model, prepared, calibration, knobs, days) if calibration else {}
    table = summary_by_group(
        model,
        prepared,
        prepared.cohort.category("dataset"),
        config.alerts.max_false_alerts_per_day,
        knobs,
        calibration,
        evaluation,
        priors,
        seed=config.train.seed,
    )
    atomic_write_text(folder / "alert_rules.csv", table.to_csv(index=False))


def _read_json(path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}
