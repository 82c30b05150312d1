"""The global-model job: cohort -> windows -> splits -> global model -> evaluation -> report.

This is what `tailorml train` and `tailorml demo` run. Each step writes its outputs into
the run directory atomically and is recorded in run.json, so `--resume RUN` skips the
steps that already finished with the same config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from tailorml.config import Config
from tailorml.data.cohort import Cohort, load_cohort
from tailorml.data.glucose import CLASSES, HYPO, WindowSet, make_windows
from tailorml.data.splits import Splits, split_windows
from tailorml.errors import TailormlError
from tailorml.evaluate.alerts import alert_metrics, hypo_events
from tailorml.evaluate.metrics import classification_metrics, spread
from tailorml.io import atomic_write_json, atomic_write_parquet, atomic_write_text, sha256_file
from tailorml.models.cnn import SmallCNN, count_parameters, load_model, save_model
from tailorml.models.recipe import Recipe, fit_predefined, fresh_model
from tailorml.models.train import EpochProgress, LabeledData, TrainResult, use_threads
from tailorml.progress import SILENT, Reporter
from tailorml.runs import Run

SUMMARY_METRICS = [
    "accuracy",
    "balanced_accuracy",
    "recall_in_range",
    "recall_hypo",
    "recall_hyper",
    "hypo_sensitivity",
    "false_alerts_per_day",
    "median_lead_minutes",
]


@dataclass
class Prepared:
    cohort: Cohort
    windows: WindowSet
    splits: Splits


def prepare(config: Config) -> Prepared:
    cohort = load_cohort(
        config.cohort.path or None,
        individuals=config.cohort.individuals or None,
        max_days=config.cohort.max_days,
    )
    windows = make_windows(cohort, config.task)
    return Prepared(cohort, windows, split_windows(cohort, windows, config.split))


def predict_proba(model: torch.nn.Module, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(torch.as_tensor(x[start : start + batch_size], dtype=torch.float32))
            outputs.append(torch.softmax(logits, dim=1).numpy())
    return np.concatenate(outputs) if outputs else np.empty((0, len(CLASSES)))


def decide(probabilities: np.ndarray, hypo_threshold: float) -> np.ndarray:
    """Hypo when P(hypo) reaches the alert threshold, else the likelier of in-range/hyper."""
    others = probabilities.copy()
    others[:, HYPO] = -1.0
    predicted = others.argmax(axis=1)
    predicted[probabilities[:, HYPO] >= hypo_threshold] = HYPO
    return predicted


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
    perturbation = None
    if recipe.robust != "none":
        from tailorml.robust.evaluate import perturbation_for

        perturbation = perturbation_for(config, "glucose")
        reporter.log(f"robust training: {recipe.robust_training(perturbation).describe()} mg/dL")
    validate = None
    if len(val_indices):
        x_val, y_val = windows.x[val_indices], windows.y[val_indices]

        def validate(candidate: torch.nn.Module) -> float:
            predicted = decide(predict_proba(candidate, x_val), config.alerts.probability_threshold)
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


def trace_events(config: Config, trace: pd.DataFrame, sample_minutes: int) -> list:
    """Hypo events of a CGM trace (columns time, cgm) under the configured definition."""
    return hypo_events(
        trace["time"].to_numpy(),
        trace["cgm"].to_numpy(),
        config.task.hypo_mgdl,
        sample_minutes,
        config.alerts.event_min_minutes,
        config.alerts.event_end_minutes,
    )


def individual_alert_metrics(
    config: Config,
    prepared: Prepared,
    individual_id: str,
    indices: np.ndarray,
    probabilities: np.ndarray,
    part: str = "test",
) -> dict[str, float]:
    """Event-based hypo alert metrics of one individual's `part`, given the model's
    probabilities for that individual's windows `indices` (in time order)."""
    windows, cohort, alerts = prepared.windows, prepared.cohort, config.alerts
    start, end = prepared.splits.boundaries[individual_id][part]
    trace = cohort.of(individual_id).iloc[start:end]
    return alert_metrics(
        trace_events(config, trace, cohort.sample_minutes),
        windows.time[indices],
        probabilities[:, HYPO] >= alerts.probability_threshold,
        windows.y[indices] == HYPO,
        windows.current_cgm[indices],
        threshold=config.task.hypo_mgdl,
        horizon_minutes=config.task.horizon_minutes,
        snooze_minutes=alerts.snooze_minutes,
        sample_minutes=cohort.sample_minutes,
    )


def evaluate_individuals(
    config: Config, prepared: Prepared, probabilities: np.ndarray, part: str = "test"
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-individual metrics on `part`; also the prediction and reading tables it used.

    `probabilities` holds one row per window of `prepared.windows`.
    """
    windows, splits, cohort = prepared.windows, prepared.splits, prepared.cohort
    alerts = config.alerts
    rows, predictions, readings = [], [], []
    for individual in cohort.individuals:
        indices = splits.of(individual.id, part)
        start, end = splits.boundaries[individual.id][part]
        trace = cohort.of(individual.id).iloc[start:end]
        readings.append(
            pd.DataFrame({"patient_id": individual.id, "time": trace["time"], "cgm": trace["cgm"]})
        )
        row = {
            "patient_id": individual.id,
            "group": individual.group,
            "windows": len(indices),
            "hypo_windows": int((windows.y[indices] == HYPO).sum()),
            "windows_dropped_for_gaps": sum(
                windows.dropped[individual.id][kind] for kind in ("gap_in_input", "gap_in_horizon")
            ),
        }
        if len(indices) == 0:
            rows.append(row | {"skipped": f"no complete {part} window"})
            continue
        probs = probabilities[indices]
        predicted = decide(probs, alerts.probability_threshold)
        row.update(classification_metrics(windows.y[indices], predicted))
        row.update(individual_alert_metrics(config, prepared, individual.id, indices, probs, part))
        rows.append(row)
        table = pd.DataFrame(
            {
                "patient_id": individual.id,
                "group": individual.group,
                "time": windows.time[indices],
                "current_cgm": windows.current_cgm[indices],
                "y_true": windows.y[indices],
                "y_pred": predicted,
            }
        )
        for index, name in enumerate(CLASSES):
            table[f"p_{name}"] = probs[:, index]
        predictions.append(table)
    per_individual = pd.DataFrame(rows)
    if "skipped" not in per_individual:
        per_individual["skipped"] = ""
    per_individual["skipped"] = per_individual["skipped"].fillna("")
    empty = pd.DataFrame(columns=["patient_id", "time", "y_true", "y_pred"])
    return (
        per_individual,
        pd.concat(predictions, ignore_index=True) if predictions else empty,
        pd.concat(readings, ignore_index=True),
    )


def group_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """Pooled test metrics per age group, via fairlearn's MetricFrame."""
    from fairlearn.metrics import MetricFrame

    def hypo_recall(y_true, y_pred) -> float:
        return classification_metrics(np.asarray(y_true), np.asarray(y_pred))["recall_hypo"]

    def balanced(y_true, y_pred) -> float:
        return classification_metrics(np.asarray(y_true), np.asarray(y_pred))["balanced_accuracy"]

    def accuracy(y_true, y_pred) -> float:
        return classification_metrics(np.asarray(y_true), np.asarray(y_pred))["accuracy"]

    frame = MetricFrame(
        metrics={"accuracy": accuracy, "balanced_accuracy": balanced, "recall_hypo": hypo_recall},
        y_true=predictions["y_true"].to_numpy(),
        y_pred=predictions["y_pred"].to_numpy(),
        sensitive_features=predictions["group"].to_numpy(),
    )
    table = frame.by_group.reset_index().rename(columns={"sensitive_feature_0": "group"})
    table["windows"] = predictions.groupby("group")["y_true"].size().reindex(table["group"]).values
    return table


def run_global(config: Config, reporter: Reporter = SILENT, resume: str | None = None) -> Run:
    """Train and evaluate the global model; write everything into a run directory."""
    if resume:
        run = Run.open(resume)
        config = run.config()
        reporter.log(f"resuming {run.path}")
    else:
        run = Run.create(config)
    use_threads(config.train.threads)
    reporter.log(f"run directory: {run.path}")
    prepared = prepare(config)
    cohort, windows, splits = prepared.cohort, prepared.windows, prepared.splits
    if cohort.synthetic:
        reporter.log("[yellow]cohort is SYNTHETIC (simulated); figures are not clinical evidence")
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
        probabilities = np.zeros((len(windows), len(CLASSES)))
        probabilities[test_idx] = predict_proba(model, windows.x[test_idx])
        per_individual, predictions, readings = evaluate_individuals(
            config, prepared, probabilities
        )
        task.advance()
    atomic_write_text(run.file("per_individual.csv"), per_individual.to_csv(index=False))
    atomic_write_parquet(run.file("predictions.parquet"), predictions)
    atomic_write_parquet(run.file("test_readings.parquet"), readings)
    by_group = group_metrics(predictions)
    atomic_write_text(run.file("by_group.csv"), by_group.to_csv(index=False))

    pooled = classification_metrics(
        predictions["y_true"].to_numpy(), predictions["y_pred"].to_numpy()
    )
    present = [m for m in SUMMARY_METRICS if m in per_individual]
    summary = spread(per_individual, present)
    training = _read_json(run.file("training.json"))
    metrics = {
        "synthetic": cohort.synthetic,
        "cohort": {
            "source": cohort.source,
            "individuals": len(cohort.individuals),
            "sample_minutes": cohort.sample_minutes,
            "loading_notes": cohort.notes,
        },
        "windows": {
            "total": len(windows),
            "train": len(train_idx),
            "val": len(val_idx),
            "test": len(test_idx),
            "dropped_gap_in_input": sum(d["gap_in_input"] for d in windows.dropped.values()),
            "dropped_gap_in_horizon": sum(d["gap_in_horizon"] for d in windows.dropped.values()),
            "class_counts_test": {
                name: int((windows.y[test_idx] == index).sum())
                for index, name in enumerate(CLASSES)
            },
        },
        "model": {
            "file": "model.pt",
            "sha256": sha256_file(model_path),
            "parameters": count_parameters(model),
        },
        "training": {
            k: training.get(k) for k in ("best_step", "best_val_balanced_accuracy", "steps")
        },
        "pooled_test": pooled,
        "per_individual_summary": {
            metric: {k: _clean(v) for k, v in row.items()} for metric, row in summary.iterrows()
        },
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


def _clean(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value
