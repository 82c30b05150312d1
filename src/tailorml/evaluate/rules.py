"""Every alert rule judged on the same people and days, the way a person would meet it:
the model at its population threshold and at a personal one, and each rule that needs no
learning at one level for everyone and at a personal level.

Each person's days come in two parts: an earlier *calibration* part (a new user's first days,
or the validation days of a chronological split) and a later *evaluation* part where every
rule is judged with the same event metrics:

- the model at its population threshold (chosen on the training people's validation days);
- the model at a *personal* threshold, set from the person's calibration part alone: the
  most sensitive threshold whose false alerts there stay within the budget
  (`operating_point.budget_threshold`). A threshold chosen on one population does not carry
  over to another; a person's own ordinary days say where their false alerts come from;
- every rule that needs no learning (`evaluate.curves.BASELINES`) twice: at the one level
  that alerts most lows early within the budget on the evaluation part itself (an oracle
  choice that favours the baselines), and at a personal level set from the calibration part
  exactly as the model's personal threshold is. The model's margin is over the best of all
  of them at no more false alerts per day.

Figures are means over people with bootstrap intervals (`evaluate.people`), alert precision
pooled over alerts (the share of alerts followed by a low), and the worst decile of people.
`tailorml lodo` judges people of a left-out dataset this way; the train job judges each
dataset's test days (calibration: their validation days).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn

from tailorml.alerts import proportion_interval, with_interval
from tailorml.data.glucose import CLASSES
from tailorml.data.prepared import Prepared
from tailorml.evaluate.curves import (
    BASELINES,
    GLUCOSE_KNOBS,
    MODEL,
    Person,
    alert_curve,
    people_from_tables,
)
from tailorml.evaluate.individuals import evaluate_individuals
from tailorml.evaluate.operating_point import RatePrior, budget_threshold, population_rates
from tailorml.evaluate.people import mean_interval, worst_decile
from tailorml.models.predict import predict_proba
from tailorml.policy import AlertPolicy

POPULATION = "model, population threshold"
PERSONAL = "model, personal threshold"
MODEL_RULES = (POPULATION, PERSONAL)
PERSONAL_LEVEL = "{rule}, personal level"


@dataclass
class RulesEvaluation:
    """One model among the rules: a row per person and rule, and the evaluation part's
    curve (model over its thresholds, baselines over their levels)."""

    per_person: pd.DataFrame
    curve: pd.DataFrame
    predictions: pd.DataFrame  # evaluation-period windows and probabilities
    readings: pd.DataFrame  # evaluation-period readings


def baseline_levels(curve: pd.DataFrame, budget: float) -> dict[str, float]:
    """Each baseline's level that alerts most lows early within the budget (mean over
    people on the evaluation period); its quietest level when none is within it."""
    levels = {}
    for rule in BASELINES:
        rows = curve[curve["rule"] == rule].dropna(subset=["false_alerts_per_day"])
        if rows.empty:
            continue
        within = rows[rows["false_alerts_per_day"] <= budget]
        if within.empty:
            chosen = rows.loc[rows["false_alerts_per_day"].idxmin()]
        else:
            ranked = within.assign(early=within["sensitivity_early"].fillna(-1.0))
            chosen = ranked.sort_values(
                ["early", "false_alerts_per_day"], ascending=[False, True], kind="stable"
            ).iloc[0]
        levels[rule] = float(chosen["knob"])
    return levels


def _people_of(
    policy: AlertPolicy, prepared: Prepared, probabilities: np.ndarray, part: str
) -> tuple[pd.DataFrame, dict[str, Person], pd.DataFrame, pd.DataFrame]:
    """The part's per-individual table, its Persons (model and baseline scores) by id, and
    the prediction and reading tables behind them."""
    per_individual, predictions, readings = evaluate_individuals(
        policy, prepared, probabilities, part
    )
    people = people_from_tables(predictions, readings, policy) if len(predictions) else []
    ids = list(dict.fromkeys(predictions["patient_id"])) if len(predictions) else []
    return per_individual, dict(zip(ids, people, strict=True)), predictions, readings


def rule_knobs(rule: str, knobs: list[float]) -> list[float]:
    """The knobs a rule is swept over: the model's thresholds, a baseline's minus levels."""
    return list(knobs) if rule == MODEL else list(-GLUCOSE_KNOBS)


def population_priors(
    model: nn.Module, prepared: Prepared, part: str, knobs: list[float], days: float
) -> dict[str, RatePrior]:
    """Per rule (the model and each baseline), the false alerts per day at every knob on
    `part` of `prepared` (e.g. the training people's validation days): what a personal
    threshold starts from (`operating_point.budget_threshold`)."""
    if len(prepared.splits.pooled(part)) == 0:
        return {}  # no such days: personal thresholds from the person's days alone
    people = list(score_parts(model, prepared, None, part).people.values())
    return {
        rule: population_rates(people, model.policy, rule, rule_knobs(rule, knobs), days)
        for rule in (MODEL, *BASELINES)
    }


def personal_knobs(
    person: Person | None,
    policy: AlertPolicy,
    budget: float,
    knobs: list[float],
    priors: dict[str, RatePrior],
) -> dict[str, float]:
    """The model's personal threshold and each baseline's personal level (as minus a
    glucose level) from a person's calibration days; empty without such days."""
    if person is None:
        return {}
    chosen = {}
    for rule in (MODEL, *BASELINES):
        if not np.isfinite(person.scores[rule]).any():
            continue
        name = PERSONAL if rule == MODEL else PERSONAL_LEVEL.format(rule=rule)
        chosen[name] = budget_threshold(
            person, policy, budget, rule_knobs(rule, knobs), rule, priors.get(rule)
        )
    return chosen


@dataclass
class Scored:
    """The model's scores on both parts, as Persons by id (with the baselines' scores)."""

    per_individual: pd.DataFrame  # the evaluation part's per-individual table (skips)
    first_days: dict[str, Person]  # calibration part
    people: dict[str, Person]  # evaluation part
    predictions: pd.DataFrame
    readings: pd.DataFrame


def score_parts(
    model: nn.Module, prepared: Prepared, calibration: str | None, evaluation: str
) -> Scored:
    """Predict once on the `calibration` (may be None) and `evaluation` parts."""
    policy, windows = model.policy, prepared.windows
    parts = [part for part in (calibration, evaluation) if part]
    probabilities = np.zeros((len(windows), len(CLASSES)))
    chosen = np.concatenate([prepared.splits.pooled(part) for part in parts])
    probabilities[chosen] = predict_proba(model, windows.x[chosen])
    first_days = {}
    if calibration:
        _, first_days, _, _ = _people_of(policy, prepared, probabilities, calibration)
    per_individual, people, predictions, readings = _people_of(
        policy, prepared, probabilities, evaluation
    )
    return Scored(per_individual, first_days, people, predictions, readings)


def personal_knobs_of(
    scored: Scored,
    policy: AlertPolicy,
    budget: float,
    knobs: list[float],
    priors: dict[str, RatePrior] | None,
) -> dict[str, dict[str, float]]:
    """Each evaluated person's personal knobs (`personal_knobs`), computed once."""
    return {
        person: personal_knobs(scored.first_days.get(person), policy, budget, knobs, priors or {})
        for person in scored.people
    }


def evaluate_rules(
    model: nn.Module,
    prepared: Prepared,
    budget: float,
    knobs: list[float],
    calibration: str | None = "calibration",
    evaluation: str = "evaluation",
    priors: dict[str, RatePrior] | None = None,
) -> RulesEvaluation:
    """Judge `model` and the baselines on the `evaluation` part of `prepared`, personal
    thresholds from the `calibration` part (None: no personal rules) starting from `priors`
    (`population_priors`), as the module says."""
    scored = score_parts(model, prepared, calibration, evaluation)
    personal = personal_knobs_of(scored, model.policy, budget, knobs, priors)
    per_person, curve = judge(
        scored.people, model.policy, budget, personal if calibration else None
    )
    skipped = [
        {"patient_id": row.patient_id, "rule": "", "knob": np.nan, "skipped": row.skipped}
        for row in scored.per_individual.itertuples()
        if row.skipped
    ]
    per_person = pd.concat([pd.DataFrame(skipped), per_person], ignore_index=True)
    return RulesEvaluation(per_person, curve, scored.predictions, scored.readings)


def summary_by_group(
    model: nn.Module,
    prepared: Prepared,
    groups: dict[str, str | None],
    budget: float,
    knobs: list[float],
    calibration: str | None,
    evaluation: str,
    priors: dict[str, RatePrior] | None = None,
    samples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """`summarize` for each group of people (e.g. each dataset: baseline levels are chosen
    per group) and for all of them together (group "all"), one table."""
    scored = score_parts(model, prepared, calibration, evaluation)
    personal = personal_knobs_of(scored, model.policy, budget, knobs, priors)
    tables = []
    members = {"all": list(scored.people)}
    for person in scored.people:
        if groups.get(person):
            members.setdefault(str(groups[person]), []).append(person)
    for group, ids in members.items():
        people = {person: scored.people[person] for person in ids}
        per_person, curve = judge(people, model.policy, budget, personal if calibration else None)
        summary = summarize(per_person, curve, samples, seed)
        tables.append(summary.assign(group=group)[["group", *summary.columns]])
    return pd.concat(tables, ignore_index=True)


def judge(
    people: dict[str, Person],
    policy: AlertPolicy,
    budget: float,
    personal: dict[str, dict[str, float]] | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A row per person and rule on `people` (the evaluation part), and their curve; the
    personal rules only with `personal` knobs (a person without calibration days keeps the
    population threshold and the one level)."""
    curve = alert_curve(list(people.values()), policy) if people else pd.DataFrame()
    levels = baseline_levels(curve, budget) if people else {}
    rows = []
    for individual, person in people.items():
        chosen = (personal or {}).get(individual, {})
        rules = {POPULATION: (MODEL, policy.threshold)}
        if personal is not None:
            rules[PERSONAL] = (MODEL, chosen.get(PERSONAL, policy.threshold))
        for rule, level in levels.items():
            rules[rule] = (rule, -level)
            name = PERSONAL_LEVEL.format(rule=rule)
            if personal is not None:
                rules[name] = (rule, chosen.get(name, -level))
        for rule, (score, knob) in rules.items():
            metrics = person.metrics(score, knob, policy)
            rows.append(
                {
                    "patient_id": individual,
                    "rule": rule,
                    "knob": abs(knob),
                    "calibrated": bool(chosen),
                    "skipped": "",
                    **metrics,
                }
            )
    return pd.DataFrame(rows), curve


def best_baseline(summary: pd.DataFrame, curve: pd.DataFrame, false_alerts: float) -> dict:
    """The baseline (a summary row, or any level of a baseline's curve) that alerts most
    lows early at no more false alerts per day than `false_alerts`."""
    candidates = []
    baseline_rows = summary[~summary["rule"].isin(MODEL_RULES)]
    for row in baseline_rows.itertuples():
        candidates.append((row.sensitivity_early, row.false_alerts_per_day, row.rule))
    if not curve.empty:
        for row in curve[curve["rule"] != MODEL].itertuples():
            name = f"{row.rule} (k = {row.knob:g} for everyone)"
            candidates.append((row.sensitivity_early, row.false_alerts_per_day, name))
    quiet = [c for c in candidates if np.isfinite(c[0]) and c[1] <= false_alerts]
    if not quiet:
        return {"baseline": "", "baseline_sensitivity_early": float("nan")}
    early, _, name = max(quiet, key=lambda c: c[0])
    return {"baseline": name, "baseline_sensitivity_early": float(early)}


def summarize(
    per_person: pd.DataFrame, curve: pd.DataFrame, samples: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """One row per rule: means over people with bootstrap intervals, pooled precision, the
    worst decile, and for the model's rules the margin over the best baseline at no more
    false alerts per day."""
    rows = []
    if per_person.empty:
        return pd.DataFrame()
    judged = per_person[per_person["skipped"].fillna("") == ""]
    for rule, table in judged.groupby("rule", sort=False):
        early = table["hypo_sensitivity_early"]
        row = {
            "rule": rule,
            "people": len(table),
            "people_with_lows": int(early.notna().sum()),
            "events": int(table["hypo_events"].sum()),
            "knob_median": float(table["knob"].median()),
        }
        for name, values in (
            ("sensitivity_early", early),
            ("sensitivity", table["hypo_sensitivity"]),
            ("false_alerts_per_day", table["false_alerts_per_day"]),
        ):
            mean, low, high = mean_interval(values, samples, seed)
            row |= {name: mean, f"{name}_low": low, f"{name}_high": high}
        alerts, false = int(table["alerts"].sum()), int(table["false_alerts"].sum())
        row |= with_interval(
            "alert_precision",
            (alerts - false) / alerts if alerts else float("nan"),
            proportion_interval(alerts - false, alerts),
        )
        row["worst_decile_sensitivity_early"] = worst_decile(early)
        row["worst_decile_false_alerts_per_day"] = worst_decile(
            table["false_alerts_per_day"], higher_is_worse=True
        )
        rows.append(row)
    summary = pd.DataFrame(rows)
    if summary.empty:
        return summary
    margins = []
    for row in summary.itertuples():
        if row.rule not in MODEL_RULES:
            margins.append({})
            continue
        best = best_baseline(summary, curve, row.false_alerts_per_day)
        best["margin"] = row.sensitivity_early - best["baseline_sensitivity_early"]
        margins.append(best)
    return pd.concat([summary, pd.DataFrame(margins, index=summary.index)], axis=1)
