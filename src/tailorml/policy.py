"""The alert policy: how a model's class probabilities become a decision, and what counts as
an event. It is stored with every saved model, so whoever holds the model — evaluation, a
gate, the model card, certification, later the C header and the service — decides the same
way without reading a config.

One value object instead of thresholds passed around: before it, the event definition was
assembled in five places and two of them silently used other numbers than the configured
ones. It sits low in the import layers (it needs only the config types and the event
arithmetic of `tailorml.alerts`), so nothing it serves has to be imported back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from tailorml.alerts import (
    Event,
    alert_metrics,
    event_leads,
    false_alerts,
    held_on,
    hyper_events,
    hypo_events,
    raise_alerts,
    urgent_lows,
)
from tailorml.config import Config, TaskConfig
from tailorml.errors import ModelFileError

GLUCOSE_CLASSES = ("in_range", "hypo", "hyper")
MINUTE_MS = 60_000


@dataclass(frozen=True)
class Raised:
    """The last alert of one kind: when (ms) and at what CGM (None if not known)."""

    kind: str
    at_ms: int
    cgm: float | None


@dataclass(frozen=True)
class AlertState:
    """What the next decision must remember of the earlier ones: whether the alert class
    was on at the previous reading (hysteresis) and each kind's last alert (snooze and
    re-alert). Carried from reading to reading; the service rebuilds it from its stored
    decisions, so a restart decides exactly as an uninterrupted run."""

    alert_on: bool = False
    raised: tuple[Raised, ...] = ()

    def last(self, kind: str) -> Raised | None:
        return next((r for r in self.raised if r.kind == kind), None)

    def with_raised(self, kind: str, at_ms: int, cgm: float | None) -> tuple[Raised, ...]:
        return (*(r for r in self.raised if r.kind != kind), Raised(kind, at_ms, cgm))


@dataclass(frozen=True)
class Verdict:
    """One reading's decision: urgent (a low now, no model can silence it), alert, snoozed,
    none (in range predicted) or no_decision; `kind` is hypo or hyper when one is meant."""

    decision: str
    kind: str | None
    reason: str

    @property
    def raises(self) -> bool:
        """Whether this verdict sounds (an alert or an urgent low)."""
        return self.decision in ("alert", "urgent")


@dataclass(frozen=True)
class AlertPolicy:
    """The decision rule of a model and the task it was trained for.

    With `alert_class` set (the glucose task) the decision is: that class when its
    probability reaches `threshold`, else the likelier of the other classes. With
    `alert_class = None` (e.g. the synthetic writers) it is the plain argmax and the
    glucose fields are unused."""

    classes: tuple[str, ...] = GLUCOSE_CLASSES
    alert_class: str | None = "hypo"
    threshold: float = 0.5
    channels: tuple[str, ...] = ("cgm",)
    sample_minutes: int = 5  # the CGM grid the model reads
    window_minutes: int = 120
    horizon_minutes: int = 30
    hypo_mgdl: float = 70.0
    hyper_mgdl: float = 250.0
    snooze_minutes: int = 30
    event_min_minutes: int = 15  # a hypo event: below hypo_mgdl for at least this long
    event_end_minutes: int = 15  # ... and it ends after this long at or above it
    useful_lead_minutes: int = 15  # an alert this far ahead leaves time to act
    # What a decision needs and what no model may silence (docs/alerts.md, "Safe alerts").
    # Model files written before these existed get these defaults (`SAFETY_DEFAULTS`).
    urgent_low_mgdl: float = 55.0  # at or below: urgent low at once, outside any snooze
    hysteresis: float = 0.05  # an alert stays on until P(alert class) < threshold - this
    realert_drop_mgdl: float = 10.0  # a snoozed hypo re-alerts once CGM fell this much more
    stale_minutes: int = 15  # the newest reading older than this: the decision is stale
    stale_alarm_minutes: int = 30  # ... older than this: no data is itself an alarm
    future_minutes: int = 5  # a reading dated further ahead of the clock is not current

    def __post_init__(self) -> None:
        if self.alert_class is not None and self.alert_class not in self.classes:
            raise ValueError(f"alert class {self.alert_class!r} is not one of {self.classes}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"alert threshold must lie in (0, 1), got {self.threshold}")
        if not 0 <= self.hysteresis < 1:
            raise ValueError(f"alert hysteresis must lie in [0, 1), got {self.hysteresis}")
        if not self.urgent_low_mgdl < self.hypo_mgdl:
            raise ValueError(
                f"the urgent low ({self.urgent_low_mgdl} mg/dL) must lie below the hypo "
                f"threshold ({self.hypo_mgdl} mg/dL)"
            )
        if not 0 < self.stale_minutes <= self.stale_alarm_minutes:
            raise ValueError(
                f"stale_minutes ({self.stale_minutes}) must be positive and at most "
                f"stale_alarm_minutes ({self.stale_alarm_minutes})"
            )

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Config, sample_minutes: int) -> AlertPolicy:
        """The glucose task's policy as configured, on a cohort read every `sample_minutes`."""
        task, alerts = config.task, config.alerts
        return cls(
            classes=GLUCOSE_CLASSES,
            alert_class="hypo",
            threshold=alerts.probability_threshold,
            channels=tuple(task.channels),
            sample_minutes=sample_minutes,
            window_minutes=task.window_minutes,
            horizon_minutes=task.horizon_minutes,
            hypo_mgdl=task.hypo_mgdl,
            hyper_mgdl=task.hyper_mgdl,
            snooze_minutes=alerts.snooze_minutes,
            event_min_minutes=alerts.event_min_minutes,
            event_end_minutes=alerts.event_end_minutes,
            useful_lead_minutes=alerts.useful_lead_minutes,
            urgent_low_mgdl=alerts.urgent_low_mgdl,
            hysteresis=alerts.hysteresis,
            realert_drop_mgdl=alerts.realert_drop_mgdl,
            stale_minutes=alerts.stale_minutes,
            stale_alarm_minutes=alerts.stale_alarm_minutes,
            future_minutes=alerts.future_minutes,
        )

    @classmethod
    def argmax(cls, classes: tuple[str, ...] | list[str]) -> AlertPolicy:
        """Plain argmax over `classes` (tasks without an alert, e.g. the writers)."""
        return cls(classes=tuple(classes), alert_class=None, channels=())

    def task(self) -> TaskConfig:
        """The task this policy's model was trained for, as a config section (to window
        other data exactly as the model expects it)."""
        return TaskConfig(
            window_minutes=self.window_minutes,
            horizon_minutes=self.horizon_minutes,
            hypo_mgdl=self.hypo_mgdl,
            hyper_mgdl=self.hyper_mgdl,
            channels=list(self.channels),
        )

    def with_threshold(self, threshold: float) -> AlertPolicy:
        """The same policy at another operating point (e.g. a personal threshold)."""
        return replace(self, threshold=float(threshold))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model file") -> AlertPolicy:
        names = {field.name for field in fields(cls)}
        data = {**SAFETY_DEFAULTS, **data}  # files from before the safety rules existed
        missing, unknown = sorted(names - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise ModelFileError(
                f"{source}: alert policy has {'missing' if missing else 'unknown'} field(s) "
                f"{', '.join(missing or unknown)}; it was written by another tailorml version "
                "— save the model again with this one"
            )
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise ModelFileError(f"{source}: invalid alert policy: {error}") from None

    def require_same_input(self, data: AlertPolicy, model_source: str, data_source: str) -> None:
        """Refuse to apply this model to data read on another grid, window or channels:
        never silent resampling. `data` is the policy the data would be evaluated under."""
        for name, label in (
            ("sample_minutes", "CGM interval (minutes)"),
            ("window_minutes", "window (minutes)"),
            ("channels", "input channels"),
        ):
            mine, theirs = getattr(self, name), getattr(data, name)
            if mine != theirs:
                raise ModelFileError(
                    f"{model_source} was trained with {label} {_show(mine)} but {data_source} "
                    f"has {_show(theirs)}; use a model trained for this data"
                )

    # -- deciding -----------------------------------------------------------------------

    @property
    def is_alert(self) -> bool:
        """Whether this is an alert rule (thresholded class) rather than a plain argmax."""
        return self.alert_class is not None

    @property
    def alert_index(self) -> int | None:
        return None if self.alert_class is None else self.classes.index(self.alert_class)

    def alerting(self, probabilities: np.ndarray) -> np.ndarray:
        """Which predictions are positive for the alert class (P(alert class) >= threshold)."""
        if self.alert_index is None:
            raise ValueError("an argmax policy raises no alerts")
        return np.asarray(probabilities)[:, self.alert_index] >= self.threshold

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """Class per row: the alert class at the threshold, else the likelier other class."""
        probabilities = np.asarray(probabilities)
        if self.alert_index is None:
            return probabilities.argmax(axis=1)
        others = probabilities.copy()
        others[:, self.alert_index] = -1.0
        predicted = others.argmax(axis=1)
        predicted[self.alerting(probabilities)] = self.alert_index
        return predicted

    @staticmethod
    def probabilities(logits: np.ndarray) -> np.ndarray:
        """Class probabilities of a model's logits (rows), by a softmax that cannot
        overflow: what every holder of logits decides from (`decide_logits`)."""
        shifted = np.asarray(logits, dtype=float)
        shifted = shifted - shifted.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    def decide_logits(self, logits: np.ndarray) -> np.ndarray:
        """`decide` on a model's logits."""
        return self.decide(self.probabilities(logits))

    # -- the safe decision of one reading -------------------------------------------------

    def is_urgent_low(self, cgm_now: float, cgm_before: float) -> bool:
        """The floor no model may silence: CGM at or below `urgent_low_mgdl`, or below the
        hypo threshold and lower than the reading one interval before (falling)."""
        return bool(self.urgent_lows(np.array([cgm_now]), np.array([cgm_before]))[0])

    def urgent_lows(self, current_cgm: np.ndarray, previous_cgm: np.ndarray) -> np.ndarray:
        """`is_urgent_low` for many readings at once (each with the reading before it)."""
        return urgent_lows(current_cgm, previous_cgm, self.urgent_low_mgdl, self.hypo_mgdl)

    def screen(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rules that need no model and no history, per window (n, channels, length) in
        mg/dL with NaN where a reading is missing: which windows are urgent lows (the CGM
        channel's last reading and the one before) and which have a gap and no urgent low
        (no decision). The device (`tailorml_alert`) and the encrypted client apply these
        before the model; `judge` applies them with the history."""
        windows = np.asarray(windows, dtype=float)
        cgm = windows[:, self.channels.index("cgm") if "cgm" in self.channels else 0, :]
        urgent = self.urgent_lows(cgm[:, -1], cgm[:, -2])
        gap = ~np.isfinite(windows).all(axis=(1, 2)) & ~urgent
        return urgent, gap

    def judge(
        self,
        state: AlertState,
        at_ms: int,
        cgm_now: float,
        cgm_before: float,
        probabilities: np.ndarray | None,
        no_decision_reason: str = "",
    ) -> tuple[Verdict, AlertState]:
        """Decide one reading and return the state for the next one. `probabilities` is
        None when the window is incomplete (a gap is never an alert: no decision), but an
        urgent low still sounds — it needs only the reading itself and the one before."""
        if not self.is_alert:
            raise ValueError("an argmax policy raises no alerts")
        kind = self.alert_class
        if self.is_urgent_low(cgm_now, cgm_before):
            how = (
                f"at or below {self.urgent_low_mgdl:g} mg/dL"
                if cgm_now <= self.urgent_low_mgdl
                else f"below {self.hypo_mgdl:g} mg/dL and falling"
            )
            verdict = Verdict("urgent", kind, f"urgent low: {cgm_now:g} mg/dL, {how}")
            return verdict, AlertState(True, state.with_raised(kind, at_ms, cgm_now))
        if probabilities is None:
            return Verdict("no_decision", None, no_decision_reason), state
        probabilities = np.asarray(probabilities, dtype=float)
        p_alert = float(probabilities[self.alert_index])
        held = state.alert_on and p_alert >= self.threshold - self.hysteresis
        if p_alert >= self.threshold or held:
            label = kind
        else:
            others = probabilities.copy()
            others[self.alert_index] = -1.0
            label = self.classes[int(others.argmax())]
        if label not in (kind, "hyper") or (label == "hyper" and not self.defines_hyper):
            return Verdict("none", None, "in range predicted"), AlertState(False, state.raised)
        on = label == kind
        predicted = f"{label} predicted within {self.horizon_minutes} min"
        if on and p_alert < self.threshold:
            predicted += (
                f" (P {p_alert:.3f}: held on until it falls below "
                f"{self.threshold - self.hysteresis:.3f})"
            )
        last = state.last(label)
        snoozed = last is not None and at_ms - last.at_ms < self.snooze_minutes * MINUTE_MS
        if snoozed and on and last.cgm is not None and np.isfinite(cgm_now):
            fallen = last.cgm - cgm_now
            if fallen >= self.realert_drop_mgdl:
                reason = f"{predicted}; still falling, {fallen:g} mg/dL below the last alert"
                return Verdict("alert", label, reason), AlertState(
                    on, state.with_raised(label, at_ms, cgm_now)
                )
        if snoozed:
            reason = f"{predicted}; an alert was raised less than {self.snooze_minutes} min ago"
            return Verdict("snoozed", label, reason), AlertState(on, state.raised)
        verdict = Verdict("alert", label, predicted)
        return verdict, AlertState(on, state.with_raised(label, at_ms, cgm_now))

    def staleness(self, reading_ms: int, now_ms: int) -> dict[str, Any]:
        """How old the newest reading is, as Nightscout reports it: stale after
        `stale_minutes`, an alarm of its own after `stale_alarm_minutes`."""
        age = max(0.0, (now_ms - reading_ms) / MINUTE_MS)
        return {
            "age_minutes": round(age, 1),
            "stale": age > self.stale_minutes,
            "stale_alarm": age > self.stale_alarm_minutes,
        }

    # -- events and alert metrics -------------------------------------------------------

    def hypo_events(self, times: np.ndarray, cgm: np.ndarray) -> list[Event]:
        """Hypo events of a CGM trace on this policy's grid and event definition."""
        return hypo_events(
            times,
            cgm,
            self.hypo_mgdl,
            self.sample_minutes,
            self.event_min_minutes,
            self.event_end_minutes,
        )

    def hyper_events(self, times: np.ndarray, cgm: np.ndarray) -> list[Event]:
        """Hyper events (above hyper_mgdl) under the same event definition."""
        return hyper_events(
            times,
            cgm,
            self.hyper_mgdl,
            self.sample_minutes,
            self.event_min_minutes,
            self.event_end_minutes,
        )

    def positives(
        self, probabilities: np.ndarray, current_cgm: np.ndarray, previous_cgm: np.ndarray
    ) -> np.ndarray:
        """Which predictions (one individual's, in time order) `judge` would call the alert
        class — alert or snoozed — or an urgent low: the threshold with hysteresis, set on
        by urgent lows too. The vectorised twin of `judge` (a test keeps them equal)."""
        urgent = self.urgent_lows(current_cgm, previous_cgm)
        probability = np.asarray(probabilities)[:, self.alert_index]
        return held_on(probability, self.threshold, self.hysteresis, urgent)

    def raised(
        self,
        times: np.ndarray,
        positive: np.ndarray,
        current_cgm: np.ndarray,
        previous_cgm: np.ndarray,
    ) -> np.ndarray:
        """Which of a rule's `positive` predictions (in time order) raise an alert under this
        policy's safety rules: urgent lows at once, others after the snooze or when CGM keeps
        falling (`realert_drop_mgdl`) — what `judge` answers "alert" or "urgent" to."""
        return raise_alerts(
            times,
            positive,
            self.snooze_minutes,
            self.urgent_lows(current_cgm, previous_cgm),
            current_cgm,
            self.realert_drop_mgdl,
        )

    def alert_metrics(
        self,
        events: list[Event],
        times: np.ndarray,
        probabilities: np.ndarray,
        labels: np.ndarray,
        current_cgm: np.ndarray,
        previous_cgm: np.ndarray,
    ) -> dict[str, float]:
        """Event sensitivity, lead time and false alerts per day of one individual's
        predictions (`times`, class `probabilities`, true `labels`, the current reading and
        the one before it) against `events`, decided as `judge` decides."""
        return self.metrics_of_alerts(
            events,
            times,
            self.positives(probabilities, current_cgm, previous_cgm),
            np.asarray(labels) == self.alert_index,
            current_cgm,
            previous_cgm,
        )

    def metrics_of_alerts(
        self,
        events: list[Event],
        times: np.ndarray,
        positive: np.ndarray,
        label_is_hypo: np.ndarray,
        current_cgm: np.ndarray,
        previous_cgm: np.ndarray,
        intervals: bool = True,
    ) -> dict[str, float]:
        """The same metrics for any rule's positive predictions (e.g. a baseline's), under
        this policy's horizon, snooze, grid, useful lead and safety rules: the urgent-low
        floor and the re-alert apply to every rule, as they would on a device
        (`intervals=False`: rates only, their intervals NaN)."""
        return alert_metrics(
            events,
            times,
            positive,
            label_is_hypo,
            current_cgm,
            threshold=self.hypo_mgdl,
            horizon_minutes=self.horizon_minutes,
            snooze_minutes=self.snooze_minutes,
            sample_minutes=self.sample_minutes,
            useful_lead_minutes=self.useful_lead_minutes,
            intervals=intervals,
            urgent=self.urgent_lows(current_cgm, previous_cgm),
            realert_drop_mgdl=self.realert_drop_mgdl,
        )

    # -- hyper alerts and what the report draws ----------------------------------------

    @property
    def defines_hyper(self) -> bool:
        """Whether this policy has hyper alerts: an alert rule whose classes include hyper
        (a decision of hyper is a hyper alert, judged against hyper events)."""
        return self.is_alert and "hyper" in self.classes

    def hyper_positives(
        self, probabilities: np.ndarray, current_cgm: np.ndarray, previous_cgm: np.ndarray
    ) -> np.ndarray:
        """Which predictions `judge` would call hyper: decided hyper while no hypo alert is
        held on (hysteresis keeps a hypo alert, not a hyper one)."""
        hyper = self.classes.index("hyper")
        held = self.positives(probabilities, current_cgm, previous_cgm)
        return (self.decide(probabilities) == hyper) & ~held

    def hyper_alert_metrics(
        self,
        events: list[Event],
        times: np.ndarray,
        probabilities: np.ndarray,
        labels: np.ndarray,
        current_cgm: np.ndarray,
        previous_cgm: np.ndarray,
    ) -> dict[str, float]:
        """The hypo metrics for hyper alerts (keys `hyper_*`): a prediction decided hyper is
        a positive, `events` are hyper events; same horizon, snooze, grid and useful lead (no
        urgent floor or re-alert: those are for lows)."""
        if not self.defines_hyper:
            raise ValueError("this policy defines no hyper alerts")
        return alert_metrics(
            events,
            times,
            self.hyper_positives(probabilities, current_cgm, previous_cgm),
            np.asarray(labels) == self.classes.index("hyper"),
            current_cgm,
            threshold=self.hyper_mgdl,
            horizon_minutes=self.horizon_minutes,
            snooze_minutes=self.snooze_minutes,
            sample_minutes=self.sample_minutes,
            useful_lead_minutes=self.useful_lead_minutes,
            kind="hyper",
        )

    def alert_outcomes(
        self,
        times: np.ndarray,
        probabilities: np.ndarray,
        labels: np.ndarray,
        current_cgm: np.ndarray,
        previous_cgm: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks over predictions: which raise an alert and which of those are false —
        exactly as `alert_metrics` counts them (for a trace plot)."""
        positive = self.positives(probabilities, current_cgm, previous_cgm)
        alerts = self.raised(times, positive, current_cgm, previous_cgm)
        false = false_alerts(
            alerts, np.asarray(labels) == self.alert_index, current_cgm, self.hypo_mgdl
        )
        return alerts, false

    def event_leads(
        self,
        events: list[Event],
        times: np.ndarray,
        probabilities: np.ndarray,
        current_cgm: np.ndarray,
        previous_cgm: np.ndarray,
    ) -> np.ndarray:
        """Per event: lead of the earliest positive prediction in the horizon before it
        (minutes), -1 if missed, NaN if not evaluable (no prediction there: a sensor gap)."""
        positive = self.positives(probabilities, current_cgm, previous_cgm)
        return event_leads(events, times, positive, self.horizon_minutes)


SAFETY_DEFAULTS = {
    name: getattr(AlertPolicy, name)
    for name in (
        "urgent_low_mgdl",
        "hysteresis",
        "realert_drop_mgdl",
        "stale_minutes",
        "stale_alarm_minutes",
        "future_minutes",
    )
}


def _show(value: object) -> str:
    return ", ".join(value) if isinstance(value, tuple) else str(value)
