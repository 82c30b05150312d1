"""The HTML report of a run. It reads only the run directory's tables, so any run can be
re-rendered (`tailorml report RUN`) without recomputing anything."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from tailorml.config import load_config
from tailorml.errors import TailormlError
from tailorml.evaluate import plots
from tailorml.evaluate.cgm_summary import cgm_summary
from tailorml.evaluate.curves import operating_point
from tailorml.evaluate.rules import MODEL_RULES
from tailorml.io import atomic_write_text
from tailorml.policy import AlertPolicy

METRIC_LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "recall_in_range": "recall in range",
    "recall_hypo": "recall hypo",
    "recall_hyper": "recall hyper",
    "hypo_sensitivity": "hypo event sensitivity",
    "hypo_sensitivity_early": "hypo events alerted early",
    "alert_precision": "alert precision",
    "false_alerts_per_day": "false alerts / day",
    "median_lead_minutes": "median lead time (min)",
    "hyper_sensitivity": "hyper event sensitivity",
    "hyper_sensitivity_early": "hyper events alerted early",
    "hyper_alert_precision": "hyper alert precision",
    "hyper_false_alerts_per_day": "false hyper alerts / day",
    "hyper_median_lead_minutes": "hyper median lead time (min)",
}


def image_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def template_environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("tailorml", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    environment.filters["num"] = _number
    environment.filters["count"] = _count
    environment.filters["percent"] = _percent
    return environment


def write_html(template: str, target: Path, **context) -> Path:
    """Render a packaged Jinja template with `context` and write it atomically."""
    html = template_environment().get_template(template).render(**context)
    return atomic_write_text(target, html)


def optional_table(path: Path) -> pd.DataFrame:
    """A run's CSV table, empty when the file is absent (runs of older versions) or has no
    rows (pandas refuses an empty file)."""
    try:
        return pd.read_csv(path) if path.exists() else pd.DataFrame()
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(value)
    text = f"{value:.{digits}f}"
    # a value that rounds to zero has no sign worth showing ("-0.000" reads as a loss)
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _percent(value) -> str:
    """A share as a whole percentage; "–" when there is none."""
    return _number(None if value is None else 100 * value, 0)


def _count(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return str(int(value))


COUNT_COLUMNS = (
    "windows",
    "hypo_windows",
    "hypo_events",
    "hypo_events_not_evaluable",
    "alerts",
    "hyper_events",
    "hyper_alerts",
)
COUNT_LABELS = {"hypo_events_not_evaluable": "hypo events not evaluable (sensor gap)"}


def _trace(
    readings: pd.DataFrame,
    predicted: pd.DataFrame,
    policy: AlertPolicy,
    patient: str,
    period: str,
    metrics: dict,
) -> tuple[str, dict[str, int]]:
    """The trace figure of one individual, with events and alerts classified by the alert
    policy itself (the same logic as the metrics), and the counts the text quotes."""
    times = predicted["time"].to_numpy()
    probabilities = predicted[[f"p_{name}" for name in policy.classes]].to_numpy()
    events = policy.hypo_events(readings["time"].to_numpy(), readings["cgm"].to_numpy())
    current, previous = predicted["current_cgm"].to_numpy(), predicted["previous_cgm"].to_numpy()
    evaluable = ~np.isnan(policy.event_leads(events, times, probabilities, current, previous))
    alerts, false = policy.alert_outcomes(
        times, probabilities, predicted["y_true"].to_numpy(), current, previous
    )
    synthetic = " (synthetic data)" if metrics["synthetic"] else ""
    png = plots.trace_figure(
        readings,
        predicted,
        events,
        evaluable,
        times[alerts],
        false[alerts],
        policy.threshold,
        policy.hypo_mgdl,
        policy.hyper_mgdl,
        f"{patient}: {period}{synthetic}",
    )
    counts = {
        "events": len(events),
        "not_evaluable": int((~evaluable).sum()),
        "alerts": int(alerts.sum()),
        "false_alerts": int(false.sum()),
    }
    return image_uri(png), counts


def trace_patient(per_individual: pd.DataFrame, requested: str) -> str | None:
    if requested:
        return requested
    if "hypo_events" not in per_individual or per_individual["hypo_events"].isna().all():
        return per_individual["patient_id"].iloc[0] if len(per_individual) else None
    return str(per_individual.sort_values("hypo_events", ascending=False)["patient_id"].iloc[0])


RUN_NOT_FINISHED = (
    "{run} has no {name}: the run did not finish; resume it with `tailorml train --resume {run}`"
)
RUN_FILE_DAMAGED = "{run}/{name} is damaged ({error}); rerun the job to write it again"
REPORT_INPUTS = ("metrics.json", "per_individual.csv", "predictions.parquet")
REPORT_INPUTS += ("test_readings.parquet", "by_group.csv")


def render_report(run_dir: str | Path) -> Path:
    """report.html of a train/demo/evaluate run, from its stored tables only; a run that did
    not finish, or a damaged table, is a clear error naming the file."""
    run_dir = Path(run_dir)
    readers = {".json": lambda f: json.loads(f.read_text()), ".csv": pd.read_csv}
    for name in REPORT_INPUTS:
        path = run_dir / name
        if not path.is_file():
            raise TailormlError(RUN_NOT_FINISHED.format(run=run_dir, name=name))
        try:
            readers.get(path.suffix, pd.read_parquet)(path)
        except Exception as error:  # any reader's failure means the same: a damaged table
            raise TailormlError(
                RUN_FILE_DAMAGED.format(run=run_dir, name=name, error=type(error).__name__)
            ) from None
    return _render_report(run_dir)


def _render_report(run_dir: Path) -> Path:
    config = load_config(run_dir / "config.toml")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    environment = json.loads((run_dir / "environment.json").read_text())
    training_file = run_dir / "training.json"  # absent when a saved model was evaluated
    training = json.loads(training_file.read_text()) if training_file.is_file() else {}
    per_individual = pd.read_csv(
        run_dir / "per_individual.csv", dtype={"skipped": str, "patient_id": str}
    )
    per_individual["skipped"] = per_individual["skipped"].fillna("")
    predictions = pd.read_parquet(run_dir / "predictions.parquet")
    readings = pd.read_parquet(run_dir / "test_readings.parquet")
    by_group = pd.read_csv(run_dir / "by_group.csv")
    fairness = optional_table(run_dir / "fairness.csv")  # absent in runs of older versions
    rules = optional_table(run_dir / "alert_rules.csv")
    if "policy" not in metrics:
        raise TailormlError(
            f"{run_dir / 'metrics.json'} has no alert policy (written by an older tailorml); "
            "rerun the job to re-evaluate the model"
        )
    policy = AlertPolicy.from_dict(metrics["policy"], str(run_dir / "metrics.json"))
    if "previous_cgm" not in predictions:
        raise TailormlError(
            f"{run_dir / 'predictions.parquet'} has no previous_cgm column (written before "
            "alerts were judged with the urgent-low rule); rerun the job to re-evaluate"
        )

    figures, trace_counts, brier = {}, {}, None
    period = "test period" if metrics["evaluated"]["part"] == "test" else "whole period"
    patient = trace_patient(per_individual, config.run.report_patient)
    if patient is not None and patient in set(predictions["patient_id"]):
        mine = readings[readings["patient_id"] == patient]
        predicted = predictions[predictions["patient_id"] == patient]
        figures["trace"], trace_counts = _trace(mine, predicted, policy, patient, period, metrics)
    evaluated = per_individual[per_individual["skipped"] == ""]
    if len(evaluated):
        figures["bars"] = image_uri(
            plots.individual_bars(
                evaluated,
                [
                    ("balanced_accuracy", "balanced accuracy"),
                    ("hypo_sensitivity", "hypo sensitivity"),
                    ("false_alerts_per_day", "false alerts / day"),
                ],
            )
        )
    if (run_dir / "alert_curve.csv").is_file():
        curve = pd.read_csv(run_dir / "alert_curve.csv")
        figures["alert_curve"] = image_uri(
            plots.alert_curve_figure(curve, operating_point(curve, policy), _budget(metrics))
        )
    if len(predictions):
        y_true, y_pred = predictions["y_true"].to_numpy(), predictions["y_pred"].to_numpy()
        figures["confusion"] = image_uri(plots.confusion_figure(y_true, y_pred))
        if policy.is_alert:
            from sklearn.metrics import brier_score_loss

            name = policy.alert_class
            happened, probability = y_true == policy.alert_index, predictions[f"p_{name}"]
            figures["reliability"] = image_uri(
                plots.reliability_figure(happened, probability.to_numpy(), name)
            )
            brier = float(brier_score_loss(happened, probability))
    if training.get("history"):
        score = (
            "validation early sensitivity at the budget"
            if training.get("checkpoint_by") == "alerts"
            else "validation balanced accuracy"
        )
        figures["training"] = image_uri(plots.training_curve(training["history"], score))

    wanted = ["patient_id", "group", *COUNT_COLUMNS[:2], *METRIC_LABELS, *COUNT_COLUMNS[2:]]
    if (per_individual["skipped"] != "").any():
        wanted.append("skipped")
    columns = [column for column in wanted if column in per_individual]
    return write_html(
        "report.html.j2",
        run_dir / "report.html",
        run_name=run_dir.name,
        metrics=metrics,
        environment=environment,
        config_toml=(run_dir / "config.toml").read_text(),
        summary=metrics["per_individual_summary"],
        labels=METRIC_LABELS
        | COUNT_LABELS
        | {
            f"{kind}_sensitivity_early": (
                f"{kind} events alerted ≥ {policy.useful_lead_minutes} min ahead"
            )
            for kind in ("hypo", "hyper")
        },
        by_group=by_group.to_dict("records"),
        fairness=fairness.to_dict("records"),
        rules=rules.to_dict("records"),
        model_rules=MODEL_RULES,
        individuals=per_individual[columns].to_dict("records"),
        columns=columns,
        counts=COUNT_COLUMNS,
        figures=figures,
        brier=brier,
        trace_patient=patient,
        trace_counts=trace_counts,
        period=period,
        config=config,
        policy=policy,
        glycemia=cgm_summary(run_dir, readings, patient, metrics),
    )


def _budget(metrics: dict) -> float:
    """The false-alert budget the threshold was chosen for (1/day when it was fixed)."""
    chosen = metrics.get("operating_point") or {}
    return float(chosen.get("max_false_alerts_per_day", 1.0))
