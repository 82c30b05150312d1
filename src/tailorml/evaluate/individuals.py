"""Per-individual evaluation of one model: classification metrics, event-based alert metrics
under the model's own policy, per-group metrics, and the tables a report reads.

The train job (held-out test parts) and `tailorml evaluate` (a whole file) write their
results through `write_evaluation`, so both give the same tables, metrics and report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from torch import nn

from tailorml.alerts import proportion_interval, rate_interval, with_interval
from tailorml.data.glucose import CLASSES, HYPO
from tailorml.data.glycemia import glycemia_table, pooled_glycemia
from tailorml.data.prepared import Prepared
from tailorml.errors import TailormlError
from tailorml.evaluate.curves import (
    alert_curve,
    margin_over_baselines,
    operating_point,
    people_from_tables,
)
from tailorml.evaluate.metrics import classification_metrics, spread
from tailorml.io import atomic_write_parquet, atomic_write_text
from tailorml.models.predict import predict_proba
from tailorml.policy import AlertPolicy

NON_FINITE_OUTPUTS = (
    "the model's outputs are not finite (NaN or inf) on some windows: no metric is computed "
    "from them; check the input data for extreme values or retrain the model"
)

SUMMARY_METRICS = [
    "accuracy",
    "balanced_accuracy",
    "recall_in_range",
    "recall_hypo",
    "recall_hyper",
    "hypo_sensitivity",
    "hypo_sensitivity_early",
    "alert_precision",
    "false_alerts_per_day",
    "median_lead_minutes",
    "hyper_sensitivity",
    "hyper_sensitivity_early",
    "hyper_alert_precision",
    "hyper_false_alerts_per_day",
    "hyper_median_lead_minutes",
]


def individual_alert_metrics(
    policy: AlertPolicy,
    prepared: Prepared,
    individual_id: str,
    indices: np.ndarray,
    probabilities: np.ndarray,
    part: str = "test",
) -> dict[str, float]:
    """Event-based alert metrics of one individual's `part` under `policy`, given the
    model's probabilities for that individual's windows `indices` (in time order); hyper
    alerts too (`hyper_*`) when the policy defines them."""
    windows = prepared.windows
    trace = prepared.trace(individual_id, part)
    times, cgm = trace["time"].to_numpy(), trace["cgm"].to_numpy()
    arguments = (
        windows.time[indices],
        probabilities,
        windows.y[indices],
        windows.current_cgm[indices],
        windows.previous_cgm[indices],
    )
    metrics = policy.alert_metrics(policy.hypo_events(times, cgm), *arguments)
    if policy.defines_hyper:
        metrics |= policy.hyper_alert_metrics(policy.hyper_events(times, cgm), *arguments)
    return metrics


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
                "previous_cgm": windows.previous_cgm[indices],
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


# (prefix of the per-individual counts, prefix of the group columns): hypo keeps its names
GROUP_ALERT_KINDS = (("", "hypo_"), ("hyper_", "hyper_"))


def group_alert_metrics(per_individual: pd.DataFrame) -> pd.DataFrame:
    """Alert metrics pooled per group from the per-individual counts: events caught (any
    lead and early) over evaluable events, false alerts over monitored days, true alerts
    over alerts, each with its exact 95 % interval. Pooled counts, not a mean of rates:
    one person with half a day of data must not weigh as much as one with a week."""
    rows = []
    evaluated = per_individual[per_individual["skipped"].fillna("") == ""]
    for group, table in evaluated.groupby("group", sort=True):
        row: dict[str, Any] = {"group": group}
        days = float(table["monitored_days"].sum()) if "monitored_days" in table else 0.0
        for counts, prefix in GROUP_ALERT_KINDS:
            kind = prefix.rstrip("_")
            if f"{kind}_events" not in table:
                continue
            events = int(table[f"{kind}_events"].sum())
            for caught, name in (("caught", "sensitivity"), ("caught_early", "sensitivity_early")):
                hits = int(table[f"{kind}_{caught}"].sum())
                row |= with_interval(
                    f"{kind}_{name}",
                    hits / events if events else float("nan"),
                    proportion_interval(hits, events),
                )
            alerts = int(table[f"{counts}alerts"].sum())
            false = int(table[f"{counts}false_alerts"].sum())
            row |= {f"{kind}_events": events, f"{prefix}alerts": alerts}
            row |= with_interval(
                f"{prefix}alert_precision",
                (alerts - false) / alerts if alerts else float("nan"),
                proportion_interval(alerts - false, alerts),
            )
            row |= with_interval(
                f"{prefix}false_alerts_per_day",
                false / days if days else float("nan"),
                rate_interval(false, days),
            )
        rows.append(row)
    return pd.DataFrame(rows)


def data_summary(prepared: Prepared) -> dict[str, Any]:
    """What metrics.json says about the data a model was evaluated on."""
    cohort, windows = prepared.cohort, prepared.windows
    return {
        "synthetic": cohort.synthetic,
        "cohort": {
            "source": cohort.source,
            "individuals": len(cohort.individuals),
            "sample_minutes": cohort.sample_minutes,
            "loading_notes": cohort.notes,
            # real data: each dataset's authors, title, DOI and licence (attribution)
            "datasets": cohort.metadata.get("datasets", {}),
            "retrospective": bool(cohort.metadata.get("retrospective", False)),
        },
        "windows": {
            "total": len(windows),
            **{
                f"dropped_{reason}": sum(d[reason] for d in windows.dropped.values())
                for reason in ("gap_in_input", "gap_in_horizon")
            },
            **{part: len(prepared.splits.pooled(part)) for part in prepared.splits.part_names()},
        },
    }


class Evaluation(NamedTuple):
    """One model on every individual's part: a row of metrics per individual (`skipped`
    says why one has none), a row per window decided (time, label, decision, class
    probabilities) and the readings the events were found in. A tuple, so
    `per_individual, predictions, readings = ...` unpacks it as before."""

    per_individual: pd.DataFrame
    predictions: pd.DataFrame
    readings: pd.DataFrame

    @property
    def pooled(self) -> dict[str, float]:
        """Accuracy, balanced accuracy and per-class recall over every decided window."""
        return classification_metrics(
            self.predictions["y_true"].to_numpy(), self.predictions["y_pred"].to_numpy()
        )


def evaluate_model(model: nn.Module, prepared: Prepared, part: str = "test") -> Evaluation:
    """`model` on every individual's `part` of `prepared`, decided by `model.policy`: the
    figures `tailorml train` and `tailorml evaluate` write (per_individual.csv,
    predictions.parquet, test_readings.parquet)."""
    policy = getattr(model, "policy", None)
    if policy is None:
        raise TailormlError("the model carries no alert policy: train or load it with tailorml")
    windows = prepared.windows
    evaluated = prepared.splits.pooled(part)
    probabilities = np.zeros((len(windows), len(CLASSES)))
    probabilities[evaluated] = predict_proba(model, windows.x[evaluated])
    if not np.isfinite(probabilities[evaluated]).all():
        raise TailormlError(NON_FINITE_OUTPUTS)
    return Evaluation(*evaluate_individuals(policy, prepared, probabilities, part))


def write_evaluation(
    folder: Path, model: nn.Module, prepared: Prepared, part: str
) -> dict[str, Any]:
    """Evaluate `model` (under its own policy) on every individual's `part`; write
    per_individual.csv, predictions.parquet, test_readings.parquet, by_group.csv,
    fairness.csv, fairness_traits.csv and glycemia.csv (consensus CGM metrics of the
    readings evaluated) into `folder`; return the metrics.json entries that describe the
    evaluation."""
    windows, evaluated = prepared.windows, prepared.splits.pooled(part)
    per_individual, predictions, readings = evaluate_model(model, prepared, part)
    atomic_write_text(folder / "per_individual.csv", per_individual.to_csv(index=False))
    atomic_write_parquet(folder / "predictions.parquet", predictions)
    atomic_write_parquet(folder / "test_readings.parquet", readings)
    sample_minutes = prepared.cohort.sample_minutes
    glycemia = glycemia_table(readings, sample_minutes)
    atomic_write_text(folder / "glycemia.csv", glycemia.to_csv(index=False))
    by_group = group_metrics(predictions)
    alerts_by_group = group_alert_metrics(per_individual)
    if len(alerts_by_group):
        by_group = by_group.merge(alerts_by_group, on="group", how="left")
    atomic_write_text(folder / "by_group.csv", by_group.to_csv(index=False))
    write_fairness(folder, per_individual, prepared)
    pooled = classification_metrics(
        predictions["y_true"].to_numpy(), predictions["y_pred"].to_numpy()
    )
    summary = spread(per_individual, [m for m in SUMMARY_METRICS if m in per_individual])
    return {
        "alerting": write_alert_curve(folder, predictions, readings, model.policy),
        "evaluated": {
            "part": part,
            "windows": len(evaluated),
            "class_counts": {
                name: int((windows.y[evaluated] == index).sum())
                for index, name in enumerate(CLASSES)
            },
        },
        "policy": model.policy.to_dict(),
        "pooled": pooled,
        "glycemia": pooled_glycemia(readings, sample_minutes),
        "per_individual_summary": {
            metric: {k: float(v) for k, v in row.items()}  # NaN -> null when written
            for metric, row in summary.iterrows()
        },
    }


def write_fairness(folder: Path, per_individual: pd.DataFrame, prepared: Prepared) -> None:
    """fairness.csv (gaps, ratios, worst group, bootstrap CIs across the age groups and
    across every categorical trait of the cohort file, column `trait`) and
    fairness_traits.csv (Spearman's rho with each continuous trait) of one evaluation."""
    from tailorml.evaluate.fairness import group_fairness, trait_correlations

    evaluated = per_individual[per_individual["skipped"] == ""]
    people = prepared.cohort.individuals
    traits = pd.DataFrame.from_dict({person.id: person.traits for person in people}, orient="index")
    categories = sorted({name for person in people for name in person.categories})
    if categories and "patient_id" in evaluated:
        by_person = {person.id: person.categories for person in people}
        evaluated = evaluated.assign(
            **{
                name: evaluated["patient_id"].map(lambda i, n=name: by_person[i].get(n))
                for name in categories
                if name not in evaluated
            }
        )
    columns = [c for c in ("group", *categories) if c in evaluated]
    tables = [group_fairness(evaluated, column) for column in columns]
    groups = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    correlations = trait_correlations(evaluated, traits) if len(traits.columns) else pd.DataFrame()
    atomic_write_text(folder / "fairness.csv", groups.to_csv(index=False))
    atomic_write_text(folder / "fairness_traits.csv", correlations.to_csv(index=False))


def write_alert_curve(
    folder: Path, predictions: pd.DataFrame, readings: pd.DataFrame, policy: AlertPolicy
) -> dict[str, Any]:
    """alert_curve.csv (model and baselines over their knobs) and the operating point with
    its margin over the best baseline, for metrics.json (written by atomic_write_json, which
    turns NaN into null); empty for an argmax policy."""
    if not policy.is_alert or predictions.empty:
        return {}
    curve = alert_curve(people_from_tables(predictions, readings, policy), policy)
    atomic_write_text(folder / "alert_curve.csv", curve.to_csv(index=False))
    point = operating_point(curve, policy)
    return {
        "threshold": policy.threshold,
        "useful_lead_minutes": policy.useful_lead_minutes,
        "sensitivity_early": float(point["sensitivity_early"]),
        "false_alerts_per_day": float(point["false_alerts_per_day"]),
        **margin_over_baselines(curve, point),
    }
