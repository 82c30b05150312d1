"""Choosing a model's alert threshold — its operating point — for a false-alert budget.

An alarm that cries wolf is switched off, so the threshold is not 0.5 by convention: it is
the one that alerts the most low events at least `useful_lead_minutes` ahead while raising
at most `max_false_alerts_per_day` (mean over individuals), chosen on data the model did
not train on (the validation parts) and saved with the model in its alert policy.

The sweep is `evaluate.curves.sweep`, the same one that draws the sensitivity vs
false-alerts curve of the reports; soft personalization's personal threshold
(`soft.gates.calibrate_threshold`) reads the same sweep with its own criterion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tailorml.config import threshold_grid
from tailorml.data.prepared import Prepared
from tailorml.evaluate.curves import MODEL, Person, sweep
from tailorml.policy import AlertPolicy


@dataclass(frozen=True)
class OperatingPoint:
    """The chosen threshold and what it achieved on the data it was chosen on."""

    threshold: float
    max_false_alerts_per_day: float  # the budget
    false_alerts_per_day: float  # mean over individuals at `threshold`
    sensitivity_early: float  # mean over individuals; NaN when no event was evaluable
    sensitivity: float
    events: int
    met_budget: bool  # False: no threshold of the grid was that quiet; the quietest is used
    at_edge: str  # "", "highest" or "lowest": the choice is the grid's end (maybe beyond it)
    chosen_on: str  # which data, e.g. "validation parts of 30 individuals"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for logs and reports."""
        early = (
            "no evaluable low events"
            if np.isnan(self.sensitivity_early)
            else f"{self.sensitivity_early:.0%} of {self.events} low events alerted early"
        )
        line = (
            f"threshold {self.threshold:g} chosen on {self.chosen_on}: {early}, "
            f"{self.false_alerts_per_day:.2f} false alerts/day "
            f"(budget {self.max_false_alerts_per_day:g})"
        )
        if not self.met_budget:
            line += "; NO threshold meets the budget, the quietest is used"
        if self.at_edge:
            line += f"; at the {self.at_edge} threshold searched"
        return line


def choose_operating_point(
    people: list[Person],
    policy: AlertPolicy,
    max_false_alerts_per_day: float,
    chosen_on: str,
    knobs: list[float] | None = None,
) -> OperatingPoint:
    """Most events alerted early (then most events alerted at all, then fewest false
    alerts) among the thresholds within the budget; the quietest threshold if none is."""
    knobs = sorted(knobs or threshold_grid())
    curve = sweep(people, policy, MODEL, knobs) if people else None
    if curve is not None:
        curve = curve.dropna(subset=["false_alerts_per_day"])
    if curve is None or curve.empty:
        raise ValueError(f"no prediction on {chosen_on} to choose an operating point from")
    within = curve[curve["false_alerts_per_day"] <= max_false_alerts_per_day]
    if within.empty:
        quietest = curve["false_alerts_per_day"].min()
        row = curve[curve["false_alerts_per_day"] == quietest].iloc[0]  # lowest such knob
    else:
        ranked = within.assign(
            early=within["sensitivity_early"].fillna(-1.0),
            any=within["sensitivity"].fillna(-1.0),
        ).sort_values(
            ["early", "any", "false_alerts_per_day", "knob"],
            ascending=[False, False, True, True],
            kind="stable",
        )
        row = ranked.iloc[0]
    threshold = float(row["knob"])
    edge = "highest" if threshold == knobs[-1] else "lowest" if threshold == knobs[0] else ""
    return OperatingPoint(
        threshold=threshold,
        max_false_alerts_per_day=float(max_false_alerts_per_day),
        false_alerts_per_day=float(row["false_alerts_per_day"]),
        sensitivity_early=float(row["sensitivity_early"]),
        sensitivity=float(row["sensitivity"]),
        events=int(row["events"]),
        met_budget=not within.empty,
        at_edge=edge,
        chosen_on=chosen_on,
    )


@dataclass(frozen=True)
class RatePrior:
    """What a population says about false alerts per day at each knob of a rule, weighted as
    `days` of a person's own data (`population_rates`)."""

    knobs: tuple[float, ...]
    rates: tuple[float, ...]  # mean false alerts per day at each knob
    days: float

    def at(self, knob: float) -> float:
        return self.rates[self.knobs.index(knob)]


def population_rates(
    people: list[Person], policy: AlertPolicy, rule: str, knobs: list[float], days: float
) -> RatePrior:
    """The false alerts per day of `rule` at every knob, mean over `people` (e.g. the
    training people's validation days), as a prior worth `days` of a person's data."""
    knobs = sorted(knobs)
    rates = sweep(people, policy, rule, knobs)["false_alerts_per_day"]
    return RatePrior(tuple(knobs), tuple(float(rate) for rate in rates), float(days))


def budget_threshold(
    person: Person,
    policy: AlertPolicy,
    max_false_alerts_per_day: float,
    knobs: list[float],
    rule: str = MODEL,
    prior: RatePrior | None = None,
) -> float:
    """A personal threshold of `rule` (the model, or a baseline whose knobs are minus a
    glucose level) from one person's first days: the lowest (most sensitive) knob whose
    false alerts per day stay within the budget, the highest of `knobs` when none does. It
    needs no low event in those days (a new user may have none), only their ordinary days,
    which is where false alerts come from.

    One week says little about a rare event: with a `prior`, a knob's rate is the person's
    false alerts plus the population's rate times `prior.days`, over their days plus
    `prior.days` (a pseudo-count: a quiet first week cannot pull the threshold far below
    what the population needs, and a loud one cannot push it far above)."""
    knobs = sorted(knobs)
    table = sweep([person], policy, rule, knobs)  # in knob order
    rates, days = table["false_alerts_per_day"].to_numpy(), float(table["days"].iloc[0])
    if prior is not None:
        population = np.array([prior.at(knob) for knob in knobs])
        rates = (rates * days + population * prior.days) / (days + prior.days)
    within = [
        knob for knob, rate in zip(knobs, rates, strict=True) if rate <= max_false_alerts_per_day
    ]
    return float(within[0]) if within else float(knobs[-1])


def person_of(
    policy: AlertPolicy,
    prepared: Prepared,
    individual: str,
    part: str,
    alert_probability: np.ndarray,
) -> Person:
    """One individual's `part` as the sweep judges it: the model's probability of the alert
    class for each of its windows (in time order), their labels and the part's events."""
    windows = prepared.windows
    indices = prepared.splits.of(individual, part)
    trace = prepared.trace(individual, part)
    return Person(
        events=policy.hypo_events(trace["time"].to_numpy(), trace["cgm"].to_numpy()),
        times=windows.time[indices],
        label_is_hypo=windows.y[indices] == policy.alert_index,
        current_cgm=windows.current_cgm[indices],
        previous_cgm=windows.previous_cgm[indices],
        scores={MODEL: np.asarray(alert_probability)},
    )


def people_of_part(
    policy: AlertPolicy, prepared: Prepared, probabilities: np.ndarray, part: str
) -> list[Person]:
    """Every individual with windows in `part`; `probabilities` has one row per window of
    `prepared.windows` (only the part's rows are read)."""
    people = []
    for individual in prepared.cohort.ids:
        indices = prepared.splits.of(individual, part)
        if len(indices):
            scores = probabilities[indices, policy.alert_index]
            people.append(person_of(policy, prepared, individual, part, scores))
    return people
