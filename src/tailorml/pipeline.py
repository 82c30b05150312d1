"""The global-model job: cohort -> windows -> splits -> global model -> evaluation -> report.

This is what `tailorml train` and `tailorml demo` run; it orchestrates (the work is in
data.prepared, models, evaluate.individuals and evaluate.report). Each step writes its
outputs into the run directory atomically and is recorded in run.json, so `--resume RUN`
skips the steps that already finished with the same config.
"""

from __future__ import annotations

import numpy as np
import torch

from tailorml.config import Config
from tailorml.data.glucose import CLASSES, WindowSet
from tailorml.data.prepared import prepare
from tailorml.errors import TailormlError
from tailorml.evaluate.individuals import data_summary, write_evaluation
from tailorml.evaluate.metrics import classification_metrics
from tailorml.io import atomic_write_json, sha256_file
from tailorml.models.cnn import SmallCNN, count_parameters, load_model, save_model
from tailorml.models.predict import predict_proba
from tailorml.models.recipe import Recipe, fit_predefined, fresh_model
from tailorml.models.train import EpochProgress, LabeledData, TrainResult, use_threads
from tailorml.policy import AlertPolicy
from tailorml.progress import SILENT, Reporter
from tailorml.runs import Run


def fit_global_model(
    config: Config,
    windows: WindowSet,
    train_indices: np.ndarray,
    val_indices: np.ndarray,
    reporter: Reporter = SILENT,
) -> tuple[SmallCNN, TrainResult]:
    """The predefined (global) model: the `[train]` recipe on all `train_indices` windows,
    keeping the checkpoint with the best balanced accuracy on `val_indices` (if any)."""
    if len(train_indices) == 0:
        raise TailormlError("no training windows: the cohort is too short for the split")
    recipe = Recipe.from_config(config.train)
    seed = config.train.seed
    x_train, y_train = windows.x[train_indices], windows.y[train_indices]
    model = fresh_model(config.model, x_train, len(CLASSES), seed)
    policy = AlertPolicy.from_config(config, windows.sample_minutes)
    model.policy = policy
    perturbation = None
    if recipe.robust != "none":
        from tailorml.robust.evaluate import perturbation_for

        perturbation = perturbation_for(config, policy)
        reporter.log(f"robust training: {recipe.robust_training(perturbation).describe()} mg/dL")
    validate = None
    if len(val_indices):
        x_val, y_val = windows.x[val_indices], windows.y[val_indices]

        def validate(candidate: torch.nn.Module) -> float:
            predicted = policy.decide(predict_proba(candidate, x_val))
            return classification_metrics(y_val, predicted)["balanced_accuracy"]

    total = len(recipe.schedule(len(y_train), seed))
    with reporter.task("training global model", total=total) as task:
        result = fit_predefined(
            model,
            LabeledData.from_numpy(x_train, y_train),
            recipe,
            n_classes=len(CLASSES),
            seed=seed,
            perturbation=perturbation,
            validate=validate,
            plugins=[EpochProgress(task, recipe.steps_per_epoch(len(y_train)))],
        )
    return model, result


def run_global(config: Config, reporter: Reporter = SILENT, resume: str | None = None) -> Run:
    """Train and evaluate the global model; write everything into a run directory."""
    if resume:
        run = Run.resume(resume, "train")
        config = run.config()
        reporter.log(f"resuming {run.path}")
    else:
        run = Run.create(config, "train")
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
        model, result = fit_global_model(config, windows, train_idx, val_idx, reporter)
        save_model(model, model_path)
        atomic_write_json(
            run.file("training.json"),
            {
                "best_step": result.best_step,
                "best_val_balanced_accuracy": result.best_score,
                "steps": result.steps,
                "history": result.history,
            },
        )
        run.mark_done("train")

    with reporter.task("evaluating individuals", total=1) as task:
        evaluation = write_evaluation(run.path, model, prepared, "test")
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
            k: training.get(k) for k in ("best_step", "best_val_balanced_accuracy", "steps")
        },
        **evaluation,
    }
    atomic_write_json(run.file("metrics.json"), metrics)
    run.mark_done("evaluate")

    from tailorml.evaluate.report import render_report

    report = render_report(run.path)
    run.mark_done("report")
    reporter.log(f"report: {report}")
    return run


def _read_json(path) -> dict:
    import json

    return json.loads(path.read_text()) if path.exists() else {}
