"""One soft-personalization session for one individual (`tailorml personalize`).

1. Gate 1 judges the individual's training data; if it is not enough, personalization is
   refused and the predefined model stays (the session is still recorded).
2. Candidates: the predefined model as deployed, the predefined model with a personal alert
   threshold, and gentle personalizations of it (`soft.candidates`, the methods of
   `tailorml.personalize`, trained on D_I with the one training loop).
3. Each candidate's alert threshold is calibrated on the individual's validation part;
   every candidate is then judged on the test part (held-out events and windows), on
   general data (other individuals' test windows) and on canonical dangerous traces.
4. The model gates run; among candidates that pass all of them the one with the fewest
   false alerts per day on held-out data is proposed for review (ties: the one closest to
   the predefined model). If none passes, the proposal is to keep the predefined model.
5. Everything is registered in one transaction, and the model card is written.
"""

from __future__ import annotations

import copy
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tailorml.config import Config, SoftConfig
from tailorml.data.cohort import cohort_sha256
from tailorml.data.glucose import HYPO, IN_RANGE
from tailorml.errors import ConfigError, TailormlError
from tailorml.evaluate.curves import MODEL, sweep
from tailorml.evaluate.metrics import classification_metrics
from tailorml.evaluate.operating_point import person_of
from tailorml.io import atomic_write_parquet
from tailorml.models.cnn import load_model, model_bytes, save_model
from tailorml.models.predict import predict_proba
from tailorml.personalize.base import Context, execute
from tailorml.personalize.dataset import PersonalData, from_glucose
from tailorml.personalize.factory import StrategyTraining, context_for
from tailorml.personalize.grid import expand
from tailorml.pipeline import GlobalTraining, fit_global_model
from tailorml.policy import AlertPolicy
from tailorml.progress import SILENT, Reporter
from tailorml.recipe import require_dense, require_train_only_options
from tailorml.registry.models import CandidateRecord, Registry
from tailorml.runs import git_commit
from tailorml.soft.gates import (
    CertifiedRobustness,
    Evidence,
    GateResult,
    build_gates,
    calibrate_threshold,
    data_sufficiency,
)
from tailorml.soft.stress import stress_inputs, stress_traces

PREDEFINED = "predefined"
THRESHOLD_ONLY = "predefined + personal threshold"


@dataclass
class Candidate:
    name: str
    model: torch.nn.Module
    calibrate: bool  # False: keep the default threshold (the predefined model as deployed)
    reuse_predefined: bool
    setting: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    session_id: int
    individual: str
    refused: str | None
    proposal: str | None
    proposal_candidate_id: int | None
    table: list[dict[str, Any]]
    card: Path | None


def ensure_predefined(
    registry: Registry,
    config: Config,
    data: PersonalData,
    reporter: Reporter,
    from_run: str | Path | None = None,
):
    """The registry's predefined model; registered from `from_run` or trained once (then
    the cohort's file is hashed into its record; a cohort held only in memory, as the
    service's, needs the predefined model registered already)."""
    if from_run is not None:
        model_file = Path(from_run) / "model.pt"
        if not model_file.is_file():
            raise TailormlError(f"{from_run} has no model.pt; pass a train/demo run directory")
        record = registry.register_predefined(
            model_file,
            cohort_sha256(data.glucose.cohort.source),
            config.to_dict(),
            git_commit(),
            f"global model of run {Path(from_run).name}",
        )
        reporter.log(f"registered predefined model {record.sha256[:12]} from {from_run}")
    record = registry.predefined()
    if record is None:
        reporter.log("no predefined model in the registry yet: training the global model")
        glucose = data.glucose
        training = GlobalTraining.from_config(config, glucose.windows.sample_minutes, reporter)
        model = fit_global_model(glucose, training, reporter).model
        target = registry.root / "predefined.tmp.pt"
        save_model(model, target)
        record = registry.register_predefined(
            target,
            cohort_sha256(data.glucose.cohort.source),
            config.to_dict(),
            git_commit(),
            f"global model trained on {len(data.ids)} individuals' training parts",
        )
        target.unlink()
    registry.verify(record)
    return record, load_model(record.path)


def data_hash(readings: pd.DataFrame) -> str:
    values = readings[["time", "cgm"]].to_numpy().astype(str)
    return hashlib.sha256("\n".join(",".join(row) for row in values).encode()).hexdigest()


def _part(data: PersonalData, individual: str, part: str) -> tuple[np.ndarray, pd.DataFrame]:
    prepared = data.glucose
    return prepared.splits.of(individual, part), prepared.trace(individual, part)


def check_candidate_inputs(config: Config) -> None:
    """A candidate method that cannot use the model's inputs (multi-modal co-teaching on a
    CGM-only model) fails before the predefined model trains, not after."""
    channels = tuple(config.task.channels)
    for setting in expand(config.soft.candidates, table="soft.candidates"):
        try:
            setting.strategy().check_inputs(channels)
        except ValueError as error:
            raise ConfigError(f"[soft.candidates.{setting.method}]: {error}") from None


@dataclass(frozen=True)
class SoftSettings:
    """What a session needs besides the data and the predefined model: the `[soft]`
    section (gates, candidates, calibration), how candidates train (`StrategyTraining`:
    `[train]`, `[model]`, `[experiment]`'s fine-tuning, `[robust]`) and their seed."""

    soft: SoftConfig
    training: StrategyTraining
    seed: int

    @classmethod
    def from_config(cls, config: Config) -> SoftSettings:
        return cls(config.soft, StrategyTraining.from_config(config), config.train.seed)


def build_candidates(soft: SoftConfig, context: Context, predefined) -> list[Candidate]:
    candidates = [Candidate(PREDEFINED, predefined, calibrate=False, reuse_predefined=True)]
    if soft.threshold_candidate:
        candidates.append(
            Candidate(THRESHOLD_ONLY, predefined, calibrate=True, reuse_predefined=True)
        )
    for setting in expand(soft.candidates, table="soft.candidates"):
        model = execute(setting.strategy().plan(context), context)
        candidates.append(
            Candidate(
                setting.label,
                model,
                calibrate=True,
                reuse_predefined=False,
                setting={"method": setting.method, "params": dict(setting.params)},
            )
        )
    return candidates


def certify_held_out(
    settings: SoftSettings, model, policy: AlertPolicy, windows, test_indices: np.ndarray
) -> np.ndarray:
    """Which evenly spaced held-out windows keep a correct decision under `policy` for
    every sensor error of ±robust.eps mg/dL (provably, robust.method bounds)."""
    from tailorml.robust.certify import certify
    from tailorml.robust.evaluate import evenly_spaced, perturbation_for

    robust = settings.training.robust
    chosen = evenly_spaced(test_indices, settings.soft.robustness_windows)
    return certify(
        model,
        windows.x[chosen],
        windows.y[chosen],
        perturbation_for(robust, policy),
        policy,
        robust.method,
    ).certified


def gather_evidence(
    settings: SoftSettings, data: PersonalData, individual: str, candidate: Candidate
) -> tuple[Evidence, dict[str, Any]]:
    """Calibrate on the validation part, then measure on the test part, D_G and stress.
    Events, decisions and alerts follow the candidate model's own alert policy."""
    soft = settings.soft
    windows = data.glucose.windows
    model = candidate.model
    deployed = model.policy

    val_indices = data.glucose.splits.of(individual, "val")
    p_val = predict_proba(model, windows.x[val_indices])
    validation = person_of(
        deployed, data.glucose, individual, "val", p_val[:, deployed.alert_index]
    )
    calibration = calibrate_threshold(
        sweep([validation], deployed, MODEL, soft.thresholds),
        soft.target_sensitivity,
        soft.calibration_confidence,
        deployed.threshold,
    )
    policy = deployed.with_threshold(calibration["threshold"]) if candidate.calibrate else deployed

    test_indices, test_trace = _part(data, individual, "test")
    p_test = predict_proba(model, windows.x[test_indices])
    test_events = policy.hypo_events(test_trace["time"].to_numpy(), test_trace["cgm"].to_numpy())
    current, previous = windows.current_cgm[test_indices], windows.previous_cgm[test_indices]
    leads = policy.event_leads(test_events, windows.time[test_indices], p_test, current, previous)
    leads = leads[~np.isnan(leads)]
    y_test = windows.y[test_indices]
    metrics = policy.alert_metrics(
        test_events, windows.time[test_indices], p_test, y_test, current, previous
    )
    own = classification_metrics(y_test, policy.decide(p_test))
    general = data.general_test(individual)
    p_general = predict_proba(model, data.x[general])
    acc_general = classification_metrics(data.y[general], policy.decide(p_general))["accuracy"]
    traces = stress_traces(windows.length, policy.sample_minutes)
    p_stress = predict_proba(model, stress_inputs(traces, windows.channels))

    evidence = Evidence(
        name=candidate.name,
        threshold=policy.threshold,
        calibration=calibration,
        event_caught=leads >= 0,
        event_caught_early=leads >= policy.useful_lead_minutes,
        useful_lead_minutes=policy.useful_lead_minutes,
        event_leads=leads,
        sensitivity=metrics["hypo_sensitivity"],
        false_alerts_per_day=metrics["false_alerts_per_day"],
        # at the deployed threshold: bounded change measures how far the *model* moved; a
        # personal threshold is judged by the sensitivity, harmful-state and calibration gates
        in_range_predictions=deployed.decide(p_test)[y_test == IN_RANGE],
        acc_general=acc_general,
        stress_alerts=policy.alerting(p_stress),
        stress_names=[trace.name for trace in traces],
    )
    if CertifiedRobustness.name in soft.gates:
        robust = settings.training.robust
        evidence.certified = certify_held_out(settings, model, policy, windows, test_indices)
        evidence.robust_eps, evidence.robust_method = robust.eps, robust.method
    summary = {
        "threshold": policy.threshold,
        "hypo_sensitivity": metrics["hypo_sensitivity"],
        "hypo_sensitivity_early": metrics["hypo_sensitivity_early"],
        "held_out_hypo_events": metrics["hypo_events"],
        "false_alerts_per_day": metrics["false_alerts_per_day"],
        "median_lead_minutes": metrics["median_lead_minutes"],
        "accuracy": own["accuracy"],
        "balanced_accuracy": own["balanced_accuracy"],
        "recall_hypo": own["recall_hypo"],
        "acc_general": acc_general,
        "stress_alerted": int(evidence.stress_alerts.sum()),
        "stress_traces": len(traces),
        "calibration_events": calibration["events"],
        "calibration_lower_bound": calibration["lower_bound"],
    }
    return evidence, summary | {"p_hypo_test": p_test[:, HYPO]}


def select(
    names: list[str],
    evidence: dict[str, Evidence],
    passed: dict[str, bool],
    agreement: dict[str, float],
) -> str | None:
    """Fewest false alerts per day among candidates that passed every gate (never the
    predefined model itself: keeping it is the fallback); ties: highest agreement."""
    eligible = [name for name in names if name != PREDEFINED and passed[name]]
    if not eligible:
        return None
    return min(eligible, key=lambda n: (evidence[n].false_alerts_per_day, -agreement[n]))


@dataclass
class Proposal:
    """One individual's soft-personalization session as computed, before anything is
    recorded: what `propose` returns and `record` registers. `refused` is the data gate's
    reason when no candidate was built (then the candidate fields are empty)."""

    individual: str
    personal_hash: str  # of the individual's training readings
    summary: dict[str, Any]
    refused: str | None = None
    candidates: list[Candidate] = field(default_factory=list)
    evidence: dict[str, Evidence] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, list[GateResult]] = field(default_factory=dict)
    passed: dict[str, bool] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    chosen: str | None = None
    predictions: pd.DataFrame | None = None  # held-out windows, p_hypo of every candidate
    readings: pd.DataFrame | None = None  # held-out readings (time, cgm)

    @property
    def names(self) -> list[str]:
        return [candidate.name for candidate in self.candidates]

    def table(self) -> list[dict[str, Any]]:
        """A row per candidate: every gate's verdict and outcome, and its metrics."""
        return [
            {
                "candidate": name,
                "passed": self.passed[name],
                **{r.gate: r.passed for r in self.results[name]},
                **{f"{r.gate}_outcome": r.outcome for r in self.results[name]},
                **self.metrics[name],
            }
            for name in self.names
        ]


def check_session_config(config: Config) -> None:
    """What `tailorml personalize` refuses before any work: a pruned or train-only recipe,
    unknown gates, candidates that cannot use the model's inputs."""
    require_dense(
        config.train,
        "`tailorml personalize`",
        "its candidates are fine-tuned without masks, which revives pruned weights",
        "; to personalize a channel-pruned model, train it with `tailorml train` and pass "
        "--predefined RUN",
    )
    require_train_only_options(config.train, "`tailorml personalize`")
    build_gates(config.soft)  # bad gate names fail before any work
    check_candidate_inputs(config)  # a bad grid or an unusable method fails before work


def propose(
    predefined: torch.nn.Module,
    data: PersonalData,
    individual: str,
    settings: SoftSettings,
    reporter: Reporter = SILENT,
) -> Proposal:
    """Soft personalization of `predefined` (a model with its policy) for `individual` of
    `data`, in memory: the data gate, candidates, calibration, evidence, the model gates and
    the choice (steps 1-4 of the module docstring). No registry, no file, no Config."""
    soft = settings.soft
    policy = predefined.policy
    policy.require_same_input(
        data.policy, "the registry's predefined model", data.glucose.cohort.source
    )
    _, train_trace = _part(data, individual, "train")
    data_gate = data_sufficiency(train_trace, policy, soft)
    proposal = Proposal(
        individual=individual,
        personal_hash=data_hash(train_trace),
        summary={
            "synthetic": data.glucose.cohort.is_synthetic(individual),
            "general_synthetic": data.synthetic,
            "cohort": data.glucose.cohort.source,
            "data_gate": data_gate.to_dict(),
            "soft_config": soft.model_dump(mode="json"),
            "policy": policy.to_dict(),
            "selection_rule": "fewest false alerts/day on held-out data among candidates "
            "passing every gate; ties: highest agreement with the predefined model",
        },
    )
    if not data_gate.passed:
        reporter.log(f"personalization refused: {data_gate.reason}")
        proposal.refused = data_gate.reason
        return proposal
    context = context_for(
        settings.training, data, individual, settings.seed, lambda: predefined, policy=policy
    )
    with reporter.task("training candidates", total=1) as task:
        proposal.candidates = build_candidates(soft, context, copy.deepcopy(predefined))
        task.advance()
    with reporter.task("evaluating candidates", total=len(proposal.candidates)) as task:
        for candidate in proposal.candidates:
            found, metrics = gather_evidence(settings, data, individual, candidate)
            proposal.evidence[candidate.name], proposal.metrics[candidate.name] = found, metrics
            task.advance()
    judge(proposal, build_gates(soft))
    proposal.predictions, proposal.readings = held_out_predictions(data, proposal)
    return proposal


def judge(proposal: Proposal, gates) -> None:
    """Every gate on every candidate against the predefined model, and the choice."""
    base = proposal.evidence[PREDEFINED]
    proposal.results = {
        name: [gate.check(found, base) for gate in gates]
        for name, found in proposal.evidence.items()
    }
    proposal.passed = {name: all(r.passed for r in rows) for name, rows in proposal.results.items()}
    proposal.agreement = {
        name: float((found.in_range_predictions == base.in_range_predictions).mean())
        for name, found in proposal.evidence.items()
    }
    proposal.chosen = select(proposal.names, proposal.evidence, proposal.passed, proposal.agreement)


def held_out_predictions(
    data: PersonalData, proposal: Proposal
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The held-out windows with what tells a true alert from a false one and each
    candidate's P(hypo) (taken out of its metrics), and the held-out readings: the card's."""
    test_indices, test_trace = _part(data, proposal.individual, "test")
    windows = data.glucose.windows
    trace = pd.DataFrame(
        {
            "time": windows.time[test_indices],
            "label_is_hypo": windows.y[test_indices] == HYPO,
            "current_cgm": windows.current_cgm[test_indices],
            "previous_cgm": windows.previous_cgm[test_indices],
        }
    )
    for name in proposal.names:
        trace[f"p_hypo::{name}"] = proposal.metrics[name].pop("p_hypo_test")
    return trace, test_trace[["time", "cgm"]].reset_index(drop=True)


def record(
    registry: Registry,
    proposal: Proposal,
    predefined_record,
    soft_config: dict[str, Any],
    actor: str | None = None,
) -> Outcome:
    """Register a proposal in one transaction (its artifacts beside it) and write the card."""
    if proposal.refused is not None:
        session = registry.register_session(
            proposal.individual,
            predefined_record.id,
            proposal.personal_hash,
            [],
            None,
            proposal.summary,
            refused_reason=proposal.refused,
            code_version=git_commit(),
            actor=actor,
        )
        card = _card(registry, session.id)
        return Outcome(session.id, proposal.individual, proposal.refused, None, None, [], card)
    key = uuid.uuid4().hex
    artifacts = registry.root / "artifacts" / key
    atomic_write_parquet(artifacts / "predictions.parquet", proposal.predictions)
    atomic_write_parquet(artifacts / "readings.parquet", proposal.readings)
    proposal.summary["artifacts"] = key
    records = [
        CandidateRecord(
            name=candidate.name,
            model_bytes=b"" if candidate.reuse_predefined else model_bytes(candidate.model),
            threshold=proposal.evidence[candidate.name].threshold,
            passed_gates=proposal.passed[candidate.name],
            metrics=proposal.metrics[candidate.name]
            | {"agreement_in_range": proposal.agreement[candidate.name]},
            gates=[r.to_dict() for r in proposal.results[candidate.name]],
            config={"soft": soft_config, **candidate.setting},
            reuse_model_id=predefined_record.id if candidate.reuse_predefined else None,
        )
        for candidate in proposal.candidates
    ]
    chosen = proposal.chosen
    session = registry.register_session(
        proposal.individual,
        predefined_record.id,
        proposal.personal_hash,
        records,
        proposal.names.index(chosen) if chosen else None,
        proposal.summary,
        code_version=git_commit(),
        actor=actor,
    )
    card = _card(registry, session.id)
    return Outcome(
        session.id,
        proposal.individual,
        None,
        chosen,
        session.proposal_candidate_id,
        proposal.table(),
        card,
    )


def personalize_individual(
    config: Config,
    individual: str,
    reporter: Reporter = SILENT,
    predefined_run: str | Path | None = None,
    actor: str | None = None,
    registry_dir: str | Path | Registry | None = None,
    data: PersonalData | None = None,
    before_record: Callable[[], None] | None = None,
) -> Outcome:
    """`tailorml personalize` for one individual: the registry's predefined model (trained
    or registered first if needed), `propose`, then `record`. `data` (default: the
    configured cohort, prepared) lets a caller that holds the cohort in memory pass it;
    `before_record` runs between the two (the service's worker checks there that the job
    is still its own: it may raise, and nothing is recorded). `registry_dir` may be an open
    `Registry` (the service's, whose tables may be in PostgreSQL)."""
    check_session_config(config)
    if isinstance(registry_dir, Registry):
        registry = registry_dir
    else:
        registry = Registry(registry_dir or config.soft.registry)
    if data is None:
        data = from_glucose(config, config.experiment.general_stride)
    if individual not in data.ids:
        raise TailormlError(f"unknown individual {individual!r}; valid: {', '.join(data.ids)}")
    if data.synthetic:
        reporter.log(
            "cohort is SYNTHETIC: this is a demonstration, not clinical use", style="yellow"
        )
    predefined_record, predefined = ensure_predefined(
        registry, config, data, reporter, predefined_run
    )
    proposal = propose(predefined, data, individual, SoftSettings.from_config(config), reporter)
    soft_config = config.soft.model_dump(mode="json")
    if before_record is not None:
        before_record()
    return record(registry, proposal, predefined_record, soft_config, actor)


def _card(registry: Registry, session: int) -> Path:
    from tailorml.soft.card import render_card

    return render_card(registry, session)
