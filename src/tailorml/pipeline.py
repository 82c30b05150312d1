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
from tailorml.evaluate.metrics import classification_metrics, spread
from tailorml.io import atomic_write_json, atomic_write_parquet, atomic_write_text, sha256_file
from tailorml.models.cnn import SmallCNN, build_model, count_parameters, load_model, save_model
from tailorml.models.schedule import epochs
from tailorml.models.train import LabeledData, TrainResult, balanced_class_weights, train
from tailorml.policy import AlertPolicy
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

    def trace(self, individual_id: str, part: str) -> pd.DataFrame:
        """The readings of one individual's split part (for its events)."""
        start, end = self.splits.boundaries[individual_id][part]
        return self.cohort.of(individual_id).iloc[start:end]


def prepare(config: Config) -> Prepared:
    cohort = load_cohort(
        config.cohort.path or None,
        individuals=config.cohort.individuals or None,
        max_days=config.cohort.max_days,
    )
    windows = make_windows(cohort, config.task)
    return Prepared(cohort, windows, split_windows(cohort, windows, config.split))


def channel_statistics(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation over samples and time/pixels (scale >= 1e-3)."""
    axes = tuple(axis for axis in range(x.ndim) if axis != 1)
    mean = x.mean(axis=axes, dtype=np.float64)
    scale = np.maximum(x.std(axis=axes, dtype=np.float64), 1e-3)
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(scale, dtype=torch.float32)


def predict_proba(model: torch.nn.Module, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(torch.as_tensor(x[start : start + batch_size], dtype=torch.float32))
            outputs.append(torch.softmax(logits, dim=1).numpy())
    return np.concatenate(outputs) if outputs else np.empty((0, len(CLASSES)))


def fit_global_model(
    config: Config,
    windows: WindowSet,
    train_indices: np.ndarray,
    val_indices: np.ndarray,
    reporter: Reporter = SILENT,
) -> tuple[SmallCNN, TrainResult]:
    """Train the predefined (global) model on `train_indices` with Adam."""
    if len(train_indices) == 0:
        raise TailormlError("no training windows: the cohort is too short for the split")
    torch.set_num_threads(config.train.threads)
    torch.manual_seed(config.train.seed)
    x_train, y_train = windows.x[train_indices], windows.y[train_indices]
    mean, scale = channel_statistics(x_train)
    model = build_model(
        config.model, len(windows.channels), windows.length, len(CLASSES), mean, scale
    )
    policy = AlertPolicy.from_config(config, windows.sample_minutes)
    model.policy = policy
    weights = (
        balanced_class_weights(y_train, len(CLASSES))
        if config.train.class_weighting == "balanced"
        else None
    )
    schedule = epochs(
        "general", len(y_train), config.train.batch_size, config.train.epochs, config.train.seed
    )
    steps_per_epoch = -(-len(y_train) // config.train.batch_size)
    objective = None
    validate = None
    if config.train.robust != "none":
        from tailorml.robust.evaluate import perturbation_for
        from tailorml.robust.training import RobustTraining

        # ε ramps up over training; picking the best *clean* checkpoint would pick one from
        # before the ramp, so robust training keeps its final weights (no validate).
        robust = RobustTraining.for_predefined(
            config.train.robust, perturbation_for(config, policy)
        )
        objective = robust.objective(len(schedule), weights)
        reporter.log(f"robust training: {robust.describe()} mg/dL")
    elif len(val_indices):
        x_val, y_val = windows.x[val_indices], windows.y[val_indices]

        def validate(candidate: torch.nn.Module) -> float:
            predicted = policy.decide(predict_proba(candidate, x_val))
            return classification_metrics(y_val, predicted)["balanced_accuracy"]

    with reporter.task("training global model", total=len(schedule)) as task:

        def on_step(number: int, loss: float) -> None:
            task.advance()
            if number % steps_per_epoch == 0:
                task.describe(f"training (epoch {number // steps_per_epoch}, loss {loss:.3f})")

        result = train(
            model,
            {"general": LabeledData.from_numpy(x_train, y_train)},
            schedule,
            learning_rate=config.train.learning_rate,
            weight_decay=config.train.weight_decay,
            class_weights=weights,
            objective=objective,
            validate=validate,
            validate_every=steps_per_epoch,
            seed=config.train.seed,
            on_step=on_step,
        )
    return model, result


def individual_alert_metrics(
    policy: AlertPolicy,
    prepared: Prepared,
    individual_id: str,
    indices: np.ndarray,
    probabilities: np.ndarray,
    part: str = "test",
) -> dict[str, float]:
    """Event-based alert metrics of one individual's `part` under `policy`, given the
    model's probabilities for that individual's windows `indices` (in time order)."""
    windows = prepared.windows
    trace = prepared.trace(individual_id, part)
    return policy.alert_metrics(
        policy.hypo_events(trace["time"].to_numpy(), trace["cgm"].to_numpy()),
        windows.time[indices],
        probabilities,
        windows.y[indices],
        windows.current_cgm[indices],
    )


def evaluate_individuals(
    policy: AlertPolicy, prepared: Prepared, probabilities: np.ndarray, part: str = "test"
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-individual metrics on `part` under the model's `policy`; also the prediction and
    reading tables it used. `probabilities` holds one row per window of `prepared.windows`.
    """
    windows, splits, cohort = prepared.windows, prepared.splits, prepared.cohort
    rows, predictions, readings = [], [], []
    for individual in cohort.individuals:
        indices = splits.of(individual.id, part)
        trace = prepared.trace(individual.id, part)
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
        predicted = policy.decide(probs)
        row.update(classification_metrics(windows.y[indices], predicted))
        row.update(individual_alert_metrics(policy, prepared, individual.id, indices, probs, part))
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
            model.policy, prepared, probabilities
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
        "policy": model.policy.to_dict(),
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
