"""Conservative, data-driven gates of soft personalization.

Gate 1 (data sufficiency) judges the individual's data before anything is trained; the
model gates judge each candidate against the predefined model on held-out data. A gate is a
small class registered by name, so later gates (fairness) plug in through `@register_gate`
and the `soft.gates` list without touching the others. Each gate class owns its identity —
`name` (config, registry), `number` (docs, CLI, card: "gate 2"), `short` (CLI legend) and
`title` (card) — so every place names a gate the same way. Every gate returns its numbers,
so the registry and the model card show *why* it passed or failed. Clinical reasons of the
defaults: docs/soft_personalization.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from tailorml.config import SoftConfig
from tailorml.errors import ConfigError
from tailorml.policy import AlertPolicy
from tailorml.registry.models import GateResult

# Upper end of the consensus target range (70-180 mg/dL, Battelino et al. 2019): personal
# data must show time above it, whatever the task's hyper threshold.
TARGET_RANGE_HIGH_MGDL = 180.0


@dataclass
class Evidence:
    """What one model (at its threshold) did on the individual's held-out data."""

    name: str
    threshold: float
    calibration: dict[str, Any]  # from `calibrate_threshold`
    event_caught: np.ndarray  # held-out hypo events (evaluable ones): caught or not
    event_caught_early: np.ndarray  # ... caught at least `useful_lead_minutes` ahead
    useful_lead_minutes: int
    sensitivity: float
    false_alerts_per_day: float
    in_range_predictions: np.ndarray  # class at the deployed threshold, held-out in-range windows
    acc_general: float
    stress_alerts: np.ndarray  # alerted on each stress trace
    stress_names: list[str] = field(default_factory=list)
    # certified robustness (only when its gate runs): which evenly spaced held-out windows
    # keep a correct decision under every sensor error of ±robust_eps mg/dL
    certified: np.ndarray | None = None
    robust_eps: float | None = None
    robust_method: str | None = None
    # per held-out evaluable event: lead time of the first alert in minutes, -1 if missed
    event_leads: np.ndarray | None = None

    @property
    def mean_lead_minutes(self) -> float:
        """Mean lead over the events this model caught (NaN without leads or catches)."""
        if self.event_leads is None:
            return float("nan")
        caught = np.asarray(self.event_leads, dtype=float)
        caught = caught[caught >= 0]
        return float(caught.mean()) if len(caught) else float("nan")


# -- gate 1 -------------------------------------------------------------------------------


class GateIdentity:
    """How a gate is named everywhere: config/registry id, number, CLI label, card title."""

    name: ClassVar[str]
    number: ClassVar[int]
    short: ClassVar[str]
    title: ClassVar[str]

    @classmethod
    def heading(cls) -> str:
        return f"{cls.number}. {cls.title}"


class DataSufficiency(GateIdentity):
    name = "data_sufficiency"
    number = 1
    short = "data"
    title = "Enough representative personal data"


def data_sufficiency(readings: pd.DataFrame, policy: AlertPolicy, config: SoftConfig) -> GateResult:
    """Is D_I (the individual's training readings) enough, and representative, to personalize?
    Events and the low range follow the model's alert policy."""
    cgm = readings["cgm"].to_numpy(dtype=float)
    times = readings["time"].to_numpy()
    valid = cgm[~np.isnan(cgm)]
    days = len(cgm) * policy.sample_minutes / 1440
    missing = float(np.isnan(cgm).mean()) if len(cgm) else 1.0
    n_hypo = len(policy.hypo_events(times, cgm))
    n_hyper = len(policy.hyper_events(times, cgm))
    low, high = policy.hypo_mgdl, TARGET_RANGE_HIGH_MGDL
    ranges = {
        "low": (valid < low, f"below {low:g}"),
        "in_range": ((valid >= low) & (valid <= high), f"in {low:g}-{high:g}"),
        "high": (valid > high, f"above {high:g}"),
    }
    fractions = {
        name: float(mask.mean()) if len(valid) else 0.0 for name, (mask, _) in ranges.items()
    }
    problems = []
    if days < config.min_days:
        problems.append(f"{days:.1f} days of data, need {config.min_days:g}")
    if n_hypo < config.min_hypo_events:
        problems.append(f"{n_hypo} hypo events, need {config.min_hypo_events}")
    if n_hyper < config.min_hyper_events:
        problems.append(f"{n_hyper} hyper events, need {config.min_hyper_events}")
    for name, fraction in fractions.items():
        if fraction < config.min_fraction_per_range:
            problems.append(
                f"{100 * fraction:.1f}% of readings {ranges[name][1]} mg/dL, need "
                f"{100 * config.min_fraction_per_range:g}%"
            )
    if missing > config.max_missing_fraction:
        problems.append(
            f"{100 * missing:.0f}% readings missing, allowed {100 * config.max_missing_fraction:g}%"
        )
    numbers = {
        "days": days,
        "hypo_events": n_hypo,
        "hyper_events": n_hyper,
        "missing_fraction": missing,
        "low_mgdl": low,
        "high_mgdl": high,
        **{f"fraction_{k}": v for k, v in fractions.items()},
    }
    reason = "; ".join(problems) if problems else "enough representative data"
    return GateResult(DataSufficiency.name, not problems, numbers, reason)


# -- threshold calibration (a function; its gate judges the result) ---------------------


def sensitivity_lower_bound(caught: int, events: int, confidence: float) -> float:
    """One-sided exact (Clopper-Pearson) lower confidence bound of a proportion."""
    if events == 0:
        return 0.0
    interval = binomtest(caught, events, alternative="greater").proportion_ci(
        confidence_level=confidence, method="exact"
    )
    return float(interval.low)


def calibrate_threshold(
    curve: pd.DataFrame, target: float, confidence: float, default: float
) -> dict[str, Any]:
    """The highest threshold (fewest alerts) whose conservative sensitivity bound on the
    calibration events reaches `target`. `curve` is `evaluate.curves.sweep` of the model on
    the individual's validation part (per threshold `knob`: `caught` of `events`), the sweep
    the predefined model's operating point is chosen from. Infeasible -> the default
    threshold is kept. `at_edge` says the choice is the highest threshold searched (a higher
    one might do as well with fewer alerts)."""
    rows = []
    highest = float(curve["knob"].max()) if len(curve) else default
    for row in curve.sort_values("knob", ascending=False).itertuples():
        threshold, caught, events = float(row.knob), int(row.caught), int(row.events)
        bound = sensitivity_lower_bound(caught, events, confidence)
        rows.append(
            {"threshold": threshold, "caught": caught, "events": events, "lower_bound": bound}
        )
        if bound >= target:
            return {
                "feasible": True,
                "threshold": threshold,
                "lower_bound": bound,
                "events": events,
                "caught": caught,
                "at_edge": threshold == highest,
                "searched": rows,
            }
    return {
        "feasible": False,
        "threshold": default,
        "lower_bound": max((row["lower_bound"] for row in rows), default=0.0),
        "events": rows[0]["events"] if rows else 0,
        "caught": None,
        "at_edge": False,
        "searched": rows,
    }


# -- model gates --------------------------------------------------------------------------


class Gate(GateIdentity):
    """A model gate: judges a candidate's evidence against the predefined model's."""

    # a safety gate cannot be configured away (soft.gates must list it)
    mandatory: ClassVar[bool] = False

    def __init__(self, config: SoftConfig) -> None:
        self.config = config

    def check(self, candidate: Evidence, predefined: Evidence) -> GateResult:
        raise NotImplementedError

    def result(self, passed: bool, numbers: dict[str, Any], reason: str) -> GateResult:
        return GateResult(self.name, bool(passed), numbers, reason)

    def non_inferior(
        self,
        mine: np.ndarray,
        theirs: np.ndarray,
        margin: float,
        numbers: dict[str, Any],
        bound_of: str = "",
        key: str = "difference_lower_bound",
    ) -> tuple[bool, str]:
        """Paired comparison of per-item outcomes (events caught, windows certified): passes
        when the lower bootstrap bound of mean(mine - theirs) is >= -margin. Records the
        bound in `numbers[key]`; returns the verdict and its wording for the reason."""
        confidence = self.config.confidence
        bound = paired_bootstrap_lower_bound(
            np.asarray(mine), np.asarray(theirs), confidence, self.config.bootstrap_samples
        )
        numbers[key] = bound
        passed = bound >= -margin
        verdict = "within" if passed else "beyond"
        return passed, (
            f"lower {100 * confidence:g}% bound{bound_of} {bound:+.2f} is {verdict} the "
            f"-{margin:g} margin"
        )


GATES: dict[str, type[Gate]] = {}


def register_gate(cls: type[Gate]) -> type[Gate]:
    GATES[cls.name] = cls
    return cls


def build_gates(config: SoftConfig) -> list[Gate]:
    """The configured model gates, in order; unknown names and a missing mandatory gate are
    configuration errors (before any work)."""
    unknown = [name for name in config.gates if name not in GATES]
    if unknown:
        raise ConfigError(
            f"soft.gates: unknown gate(s) {', '.join(unknown)}; valid: {', '.join(GATES)}"
        )
    missing = [name for name, gate in GATES.items() if gate.mandatory and name not in config.gates]
    if missing:
        raise ConfigError(
            f"soft.gates must include the safety gate(s) {', '.join(missing)}: they cannot be "
            "switched off (docs/soft_personalization.md)"
        )
    return [GATES[name](config) for name in config.gates]


def gate_identity(name: str) -> type[GateIdentity] | None:
    """The class that names gate `name` (data gate or model gate), if any."""
    return DataSufficiency if name == DataSufficiency.name else GATES.get(name)


def paired_bootstrap_lower_bound(
    candidate: np.ndarray, reference: np.ndarray, confidence: float, samples: int, seed: int = 0
) -> float:
    """Lower `confidence` bound of mean(candidate - reference) over resampled events."""
    rng = np.random.default_rng(seed)
    differences = candidate.astype(float) - reference.astype(float)
    draws = rng.integers(0, len(differences), size=(samples, len(differences)))
    return float(np.quantile(differences[draws].mean(axis=1), 1.0 - confidence))


@register_gate
class SafetyNonInferiority(Gate):
    name = "safety_non_inferiority"
    number = 2
    short = "safety"
    mandatory = True
    title = (
        "Hypo sensitivity, at any lead and early enough to act, not worse than the predefined "
        "model's (lower confidence bounds)"
    )

    def check(self, candidate: Evidence, predefined: Evidence) -> GateResult:
        config = self.config
        n = len(candidate.event_caught)
        numbers: dict[str, Any] = {
            "held_out_events": n,
            "candidate_sensitivity": candidate.sensitivity,
            "predefined_sensitivity": predefined.sensitivity,
            "margin": config.sensitivity_margin,
            "confidence": config.confidence,
        }
        if n < config.min_held_out_events:
            return self.result(
                False,
                numbers,
                (
                    f"only {n} held-out hypo events; at least {config.min_held_out_events} are "
                    "needed to judge safety, so the predefined model stays"
                ),
            )
        passed, verdict = self.non_inferior(
            candidate.event_caught, predefined.event_caught, config.sensitivity_margin, numbers
        )
        difference = candidate.sensitivity - predefined.sensitivity
        # an alert that comes too late to act on is no safer than none
        early_mine, early_theirs = candidate.event_caught_early, predefined.event_caught_early
        numbers |= {
            "useful_lead_minutes": candidate.useful_lead_minutes,
            "candidate_early_sensitivity": float(np.mean(early_mine)),
            "predefined_early_sensitivity": float(np.mean(early_theirs)),
        }
        early_passed, early_verdict = self.non_inferior(
            early_mine,
            early_theirs,
            config.sensitivity_margin,
            numbers,
            key="early_difference_lower_bound",
        )
        early_difference = (
            numbers["candidate_early_sensitivity"] - numbers["predefined_early_sensitivity"]
        )
        # the lead itself, shown so that alerting later is never silent (the verdict on
        # it is the early-sensitivity bound: a lead that stays >= useful_lead_minutes is
        # still an alert one can act on)
        mine_lead, theirs_lead = candidate.mean_lead_minutes, predefined.mean_lead_minutes
        numbers |= {
            "candidate_mean_lead_minutes": mine_lead,
            "predefined_mean_lead_minutes": theirs_lead,
        }
        lead = (
            f"; mean lead {theirs_lead:.1f} -> {mine_lead:.1f} min"
            if np.isfinite(mine_lead) and np.isfinite(theirs_lead)
            else ""
        )
        return self.result(
            passed and early_passed,
            numbers,
            (
                f"sensitivity difference {difference:+.2f}, {verdict}; alerted "
                f">= {candidate.useful_lead_minutes} min ahead: {early_difference:+.2f}, "
                f"{early_verdict}{lead}"
            ),
        )


@register_gate
class HarmfulStates(Gate):
    name = "harmful_states"
    number = 3
    short = "dangerous traces"
    mandatory = True
    title = "Still alerts on canonical dangerous traces"

    def check(self, candidate: Evidence, predefined: Evidence) -> GateResult:
        alerts = candidate.stress_alerts
        fraction = float(alerts.mean()) if len(alerts) else 0.0
        missed = [name for name, hit in zip(candidate.stress_names, alerts, strict=True) if not hit]
        numbers = {
            "traces": len(alerts),
            "alerted": int(alerts.sum()),
            "required_fraction": self.config.stress_required_fraction,
            "missed": missed,
        }
        passed = fraction >= self.config.stress_required_fraction
        reason = (
            "alerts on every dangerous trace"
            if not missed
            else f"no alert on {len(missed)} dangerous trace(s): {', '.join(missed)}"
        )
        return self.result(passed, numbers, reason)


@register_gate
class CertifiedRobustness(Gate):
    """When neither model verifies a single window the comparison says nothing (0 vs 0 is
    "not worse" only vacuously), so the outcome is "not informative", shown as such — not a
    silent "pass". It does not block: the question of this gate is whether the candidate is
    provably more fragile than the model in use, and a model in use with no certified
    robustness cannot be undercut; blocking would veto every personalization of a standard
    (not robustly trained) predefined model, which gates 2-6 already judge. The card tells
    the reviewer to train the predefined model for robustness (`train.robust`) or lower
    `robust.eps` for this gate to mean something."""

    name = "certified_robustness"
    number = 7
    short = "certified robustness"
    title = "Verified accuracy under sensor error not below the predefined model's minus a margin"

    def check(self, candidate: Evidence, predefined: Evidence) -> GateResult:
        mine, theirs = candidate.certified, predefined.certified
        if mine is None or theirs is None:
            raise ValueError("certified_robustness needs certified flags in the evidence")
        numbers: dict[str, Any] = {
            "eps_mgdl": candidate.robust_eps,
            "method": candidate.robust_method,
            "windows": len(mine),
            "candidate_verified": float(np.mean(mine)) if len(mine) else float("nan"),
            "predefined_verified": float(np.mean(theirs)) if len(theirs) else float("nan"),
            "margin": self.config.robustness_margin,
        }
        if len(mine) == 0:
            return self.result(False, numbers, "no held-out windows to certify")
        if not np.any(mine) and not np.any(theirs):
            numbers["informative"] = False
            return self.result(
                True,
                numbers,
                (
                    f"not informative: neither the candidate nor the predefined model verifies "
                    f"any of {len(mine)} windows at ±{numbers['eps_mgdl']:g} mg/dL, so this "
                    "gate cannot tell them apart (it does not block); train the predefined "
                    "model for robustness (train.robust) or lower robust.eps"
                ),
            )
        passed, verdict = self.non_inferior(
            mine, theirs, self.config.robustness_margin, numbers, " of the difference"
        )
        return self.result(
            passed,
            numbers,
            (
                f"verified accuracy at ±{numbers['eps_mgdl']:g} mg/dL "
                f"{numbers['candidate_verified']:.2f} vs {numbers['predefined_verified']:.2f}; "
                f"{verdict}"
            ),
        )


@register_gate
class GeneralFloor(Gate):
    name = "general_floor"
    number = 4
    short = "general floor"
    title = "Accuracy on general data not below the predefined model's minus a margin"

    def check(self, candidate: Evidence, predefined: Evidence) -> GateResult:
        floor = predefined.acc_general - self.config.general_accuracy_margin
        numbers = {
            "candidate": candidate.acc_general,
            "predefined": predefined.acc_general,
            "floor": floor,
        }
        passed = candidate.acc_general >= floor
        return self.result(
            passed, numbers, (f"accuracy on D_G {candidate.acc_general:.3f} vs floor {floor:.3f}")
        )


@register_gate
class BoundedChange(Gate):
    name = "bounded_change"
    number = 5
    short = "bounded change"
    title = "Agrees with the predefined model on in-range data (at the deployed threshold)"

    def check(self, candidate: Evidence, predefined: Evidence) -> GateResult:
        mine, theirs = candidate.in_range_predictions, predefined.in_range_predictions
        agreement = float((mine == theirs).mean()) if len(mine) else 0.0
        numbers = {
            "agreement": agreement,
            "required": self.config.min_in_range_agreement,
            "windows": len(mine),
        }
        passed = agreement >= self.config.min_in_range_agreement
        return self.result(
            passed,
            numbers,
            (
                f"{100 * agreement:.1f}% agreement on in-range windows "
                f"(required {100 * self.config.min_in_range_agreement:g}%)"
            ),
        )


@register_gate
class ThresholdCalibration(Gate):
    name = "threshold_calibration"
    number = 6
    short = "threshold"
    title = "A personal alert threshold reaches the target sensitivity under a conservative bound"

    def check(self, candidate: Evidence, predefined: Evidence) -> GateResult:
        calibration = candidate.calibration
        numbers = {
            key: calibration[key]
            for key in ("feasible", "threshold", "lower_bound", "events", "caught", "at_edge")
        }
        numbers |= {
            "target": self.config.target_sensitivity,
            "confidence": self.config.calibration_confidence,
            "false_alerts_per_day": candidate.false_alerts_per_day,
        }
        if calibration["feasible"]:
            reason = (
                f"threshold {calibration['threshold']:g}: {calibration['caught']}/"
                f"{calibration['events']} calibration events, lower bound "
                f"{calibration['lower_bound']:.2f} >= {self.config.target_sensitivity:g}; "
                f"{candidate.false_alerts_per_day:.1f} false alerts/day on held-out data"
            )
            if calibration["at_edge"]:
                reason += " (the highest threshold searched: a higher one may alert less)"
        else:
            reason = (
                f"no threshold reaches sensitivity {self.config.target_sensitivity:g} under the "
                f"{100 * self.config.calibration_confidence:g}% bound on "
                f"{calibration['events']} calibration events (best bound "
                f"{calibration['lower_bound']:.2f})"
            )
        return self.result(calibration["feasible"], numbers, reason)
