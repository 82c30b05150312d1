"""Guarded personalization on the device (scenario 4 of `000`): settings, memory budget, and
the Python reference of what the generated C does (`tailorml.deploy.learner.c`).

What the device does, every 5 minutes, with a new CGM reading:
1. predict from the last window with the *active* head (the factory int8 head, or one of two
   float weight slots);
2. keep the window's last-layer inputs (the frozen backbone's features) in a pending queue of
   `horizon` entries, and label the window that ended `horizon` readings ago from the readings
   that followed it, with the rule of `tailorml.data.glucose.label_future` (hypo if one is
   below the hypo threshold, else hyper if one is above the hyper threshold, else in range);
   a window whose input or future misses a reading is never labelled, and an in-range window
   that is low *now* is never kept (see `Learner.stratum`);
3. put the labelled window into a class-balanced reservoir (`tailorml.deploy.learner.reservoir`) of
   four strata: in range, hypo, hyper, and in range but "near low" (a next reading below
   `near_low_mgdl`: where false alarms happen). Every `held_out_every`-th block of
   `held_out_block` labelled windows goes into a held-back reservoir that training never
   sees (blocks of an hour, so a held-back low is not the 5-minute neighbour of a trained one).

Once a day (`update`) it proposes a new head and lets it go live only through gates that
mirror the cloud's soft-personalization gates (`tailorml.soft.gates`):
- data (like gate 1, and gate 2's minimum of held-out events): `min_days` of readings (7, as
  the cloud's soft.min_days), enough hypo windows to learn from, and enough held-back hypo
  and near-low windows to judge with; else nothing is trained;
- the candidate is trained from the factory head (never from yesterday's: each candidate is
  at most one bounded training away from what experts validated) into the inactive slot, by
  SGD with balanced class weights, near-low windows weighted up, the loss's boundary at the
  deployed threshold, and an L2 pull to the factory weights (`float_head.train_head`);
- dangerous traces (like gate 3, `HarmfulStates`): it must alert on every stored trace;
- held-back sensitivity (like gate 2, `SafetyNonInferiority`): on the held-back hypo windows
  it must catch at least as many as the active head and, if it misses any the active head
  caught, the one-sided lower bound of the paired difference must stay within
  `-sensitivity_margin` (a normal bound on paired outcomes instead of the cloud's bootstrap:
  no resampling on a microcontroller);
- held-back false alarms (like gate 5, `BoundedChange`, on the windows that matter): on the
  held-back near-low windows it must not alarm more often than the active head, with the
  same paired bound and `alarm_margin`.
Only then is the active-slot index switched to the candidate, one aligned 32-bit write made
last, after the candidate is complete: a reset mid-update leaves the previous head active.
The factory head (flash, int8, exactly the exported model) can always be restored.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
from pydantic import ConfigDict, ValidationError

from tailorml.config import DeployLearnerConfig
from tailorml.data.glucose import label_future
from tailorml.deploy.int8.device_rules import MISSING
from tailorml.deploy.int8.quantize import QuantizedModel
from tailorml.deploy.learner.float_head import (
    F32,
    alert_offset,
    factory_head,
    feature_scale,
    int16_logits,
    logit_inverse,
    real_features,
    real_logits,
    train_head,
)
from tailorml.deploy.learner.reservoir import ClassReservoir, XorShift32
from tailorml.deploy.learner.traces import DangerousTraces
from tailorml.errors import DeployError
from tailorml.policy import GLUCOSE_CLASSES, AlertPolicy

MINUTES_PER_DAY = 24 * 60
SLOT_FACTORY = 2  # the active-slot index of the factory head (slots 0 and 1 are RAM)
# Reservoir strata: the three classes, and in-range windows whose next readings come near a
# low (the windows false alarms are raised on): hard negatives to learn from, and the
# held-back windows the false-alarm gate counts on. A stratum's training label:
IN_RANGE, HYPO, HYPER, NEAR_LOW = range(4)
STRATUM_LABELS = (IN_RANGE, HYPO, HYPER, IN_RANGE)
STRATUM_NAMES = ("in range", "hypo", "hyper", "in range, near low")
N_STRATA = len(STRATUM_LABELS)
GATE_NONE, GATE_DATA, GATE_TRACES, GATE_SENSITIVITY, GATE_ALARMS = range(5)
GATE_NAMES = {
    GATE_NONE: "accepted",
    GATE_DATA: "data",
    GATE_TRACES: "dangerous traces",
    GATE_SENSITIVITY: "held-back sensitivity",
    GATE_ALARMS: "held-back false alarms",
}


class LearnerSettings(DeployLearnerConfig):
    """What the device learns from and how (`[deploy.learner]`, where every key, default and
    bound is defined); every number is compiled into the C. Frozen, and a value out of its
    bounds is a one-line DeployError naming the setting."""

    model_config = ConfigDict(frozen=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            first = error.errors()[0]
            name = ".".join(str(part) for part in first["loc"]) or "settings"
            raise DeployError(f"on-device setting {name}: {first['msg']}") from None

    @classmethod
    def from_config(cls, section: DeployLearnerConfig) -> LearnerSettings:
        return cls(**section.model_dump())

    @property
    def train_seed(self) -> int:
        """The shuffling PRNG's seed: another stream than the reservoirs'."""
        return (self.seed ^ 0x9E3779B9) or 1

    @property
    def z(self) -> np.float32:
        """The one-sided normal quantile of `confidence` (1.645 at 0.95)."""
        return F32(NormalDist().inv_cdf(self.confidence))

    @property
    def z_squared(self) -> np.float32:
        return self.z * self.z

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class MemoryLayout:
    """Bytes of the learner's RAM state (the C struct, no padding by construction) and of
    what it adds to flash."""

    parts: dict[str, int]
    flash_parts: dict[str, int]

    @property
    def ram(self) -> int:
        return sum(self.parts.values())

    @property
    def flash(self) -> int:
        return sum(self.flash_parts.values())


def memory_layout(
    settings: LearnerSettings,
    n_features: int,
    n_classes: int,
    window: int,
    horizon: int,
    n_traces: int,
) -> MemoryLayout:
    """The C struct's parts (see `tailorml.deploy.learner.c`) and the flash it adds."""
    head = 4 * n_classes * (n_features + 1)
    parts = {
        "weight slots (2 x float32 head)": 2 * head,
        "gradient (float32 head)": head,
        "update status": 4 * status_words(),
        "counters and PRNG states": 4 * (2 * N_STRATA + 6),
        "reading history (int16)": 2 * (window + horizon),
        "shuffle order (uint16)": 2 * N_STRATA * settings.train_per_stratum,
        "training reservoir (int8 features)": N_STRATA * settings.train_per_stratum * n_features,
        "held-back reservoir (int8 features)": N_STRATA * settings.held_per_stratum * n_features,
        "pending windows (int8 features + flag)": horizon * (n_features + 1),
    }
    parts["alignment padding"] = -sum(parts.values()) % 4
    flash = {
        "factory head (float32)": head,
        "dangerous traces (int8 features)": max(n_traces, 1) * n_features,
    }
    return MemoryLayout(parts, flash)


STATUS_INTS = (
    "attempt",
    "steps",
    "accepted",
    "gate",
    "active_slot",
    "train_windows",
    "held_windows",
    "traces_total",
    "traces_alerted",
    "first_missed_trace",
    "held_hypo",
    "caught_current",
    "caught_candidate",
    "losses",
    "gains",
    "held_near_low",
    "alarms_current",
    "alarms_candidate",
    "new_alarms",
    "removed_alarms",
    "trained",
)
STATUS_FLOATS = ("lower_bound", "alarm_lower_bound", "max_change")
STATUS_ARRAYS = ("train_windows", "held_windows")  # one int per stratum


def status_words() -> int:
    """32-bit fields of the update status (see UpdateStatus)."""
    return len(STATUS_INTS) + len(STATUS_FLOATS) + len(STATUS_ARRAYS) * (N_STRATA - 1)


@dataclass
class UpdateStatus:
    """What one update attempt did, with the numbers of every gate it reached (the C
    struct tailorml_update_status, field for field)."""

    attempt: int = 0
    steps: int = 0  # readings seen when it ran
    accepted: int = 0
    gate: int = GATE_NONE  # the first gate that refused, GATE_NONE if accepted
    active_slot: int = SLOT_FACTORY  # after the attempt
    train_windows: list[int] = field(default_factory=lambda: [0] * N_STRATA)  # per stratum
    held_windows: list[int] = field(default_factory=lambda: [0] * N_STRATA)
    traces_total: int = 0
    traces_alerted: int = 0
    first_missed_trace: int = -1
    held_hypo: int = 0
    caught_current: int = 0
    caught_candidate: int = 0
    losses: int = 0  # held-back hypo windows the active head caught and the candidate missed
    gains: int = 0  # ... the candidate caught and the active head missed
    held_near_low: int = 0
    alarms_current: int = 0  # held-back near-low in-range windows decided hypo (false alarms)
    alarms_candidate: int = 0
    new_alarms: int = 0  # near-low windows only the candidate alarms on
    removed_alarms: int = 0  # ... only the active head alarms on
    trained: int = 0  # 1 if a candidate was trained
    lower_bound: float = 0.0  # paired bound of the sensitivity difference (candidate - active)
    alarm_lower_bound: float = 0.0  # ... of the difference in near-low windows left quiet
    max_change: float = 0.0  # largest |candidate - factory| parameter

    @property
    def gate_name(self) -> str:
        return GATE_NAMES[self.gate]

    def reason(self, trace_names: list[str] | None = None, per_day: int = 288) -> str:
        """One line: why the candidate was accepted or refused, with its numbers."""
        if self.gate == GATE_DATA:
            return (
                f"not enough data: {self.steps / per_day:.1f} days, "
                f"{self.train_windows[HYPO]} hypo windows to train on, {self.held_hypo} hypo "
                f"and {self.held_near_low} near-low windows held back (nothing trained)"
            )
        missed = self.first_missed_trace
        name = (
            f" (missed: {trace_names[missed]})"
            if self.gate == GATE_TRACES and trace_names and 0 <= missed < len(trace_names)
            else ""
        )
        parts = {
            GATE_TRACES: f"{self.traces_alerted}/{self.traces_total} dangerous traces alerted"
            + name,
            GATE_SENSITIVITY: (
                f"held-back lows caught {self.caught_current} -> {self.caught_candidate} of "
                f"{self.held_hypo} (-{self.losses} +{self.gains}, bound {self.lower_bound:+.2f})"
            ),
            GATE_ALARMS: (
                f"near-low alarms {self.alarms_current} -> {self.alarms_candidate} of "
                f"{self.held_near_low} (+{self.new_alarms} -{self.removed_alarms}, bound "
                f"{self.alarm_lower_bound:+.2f})"
            ),
        }
        verdict = "accepted" if self.accepted else f"refused by {self.gate_name}"
        first = [parts[self.gate]] if self.gate in parts else []
        rest = [text for gate, text in parts.items() if gate != self.gate]
        return f"{verdict}: " + "; ".join(first + rest)

    def to_dict(self) -> dict:
        return asdict(self) | {"gate_name": self.gate_name}


def check_policy(policy: AlertPolicy) -> None:
    """Refuse, by name, a model whose task the device cannot label or learn."""
    if tuple(policy.channels) != ("cgm",):
        raise DeployError(
            f"the device learns from CGM only; this model reads channels "
            f'{", ".join(policy.channels)} — train it with task.channels = ["cgm"]'
        )
    if tuple(policy.classes) != GLUCOSE_CLASSES or policy.alert_class != "hypo":
        raise DeployError(
            "the device labels windows with the glucose rule (in_range, hypo, hyper) and "
            f"alerts on hypo; this model's classes are {', '.join(policy.classes)}"
        )
    if policy.horizon_minutes % policy.sample_minutes:
        raise DeployError("the alert horizon is not a whole number of CGM readings")


def check_learnable(quantized: QuantizedModel) -> None:
    """Refuse, by name, a model the device cannot personalize."""
    check_policy(quantized.policy)
    if len(quantized.layers) < 2 or quantized.layers[-2].kind != "linear":
        raise DeployError(
            "the device trains the last layer on a hidden linear layer's outputs; this "
            "model's last layer follows a convolution"
        )


def horizon_readings(quantized: QuantizedModel) -> int:
    policy = quantized.policy
    return policy.horizon_minutes // policy.sample_minutes


class Learner:
    """The device in Python: the reference the generated C is tested against."""

    def __init__(
        self, quantized: QuantizedModel, settings: LearnerSettings, traces: DangerousTraces
    ) -> None:
        check_learnable(quantized)
        self.quantized, self.settings, self.traces = quantized, settings, traces
        self.zero_point = quantized.layers[-1].input_zero_point
        self.scale, self.inverse = feature_scale(quantized), logit_inverse(quantized)
        self.factory = factory_head(quantized)
        self.n_classes, self.n_features = self.factory.weight.shape
        self.window, self.horizon = quantized.window, horizon_readings(quantized)
        self.slots = [self.factory.copy(), self.factory.copy()]
        self.active = SLOT_FACTORY
        rng = XorShift32(settings.seed)
        self.train_rng = XorShift32(settings.train_seed)
        n, f = N_STRATA, self.n_features
        self.train = ClassReservoir(n, settings.train_per_stratum, f, rng, settings.recency)
        self.held = ClassReservoir(n, settings.held_per_stratum, f, rng, settings.recency)
        self.history: deque[int] = deque([MISSING] * (self.window + self.horizon))
        self.pending: list[np.ndarray | None] = [None] * self.horizon
        self.steps = self.labelled = self.attempts = 0
        self.status = UpdateStatus()

    # -- inference ------------------------------------------------------------------------

    def logits(self, features: np.ndarray, slot: int | None = None) -> np.ndarray:
        """int16 logits (n, classes) of the head in `slot` (default: the active one)."""
        slot = self.active if slot is None else slot
        features = np.asarray(features, dtype=np.int16).reshape(-1, self.n_features)
        if slot == SLOT_FACTORY:
            return self.quantized.head_logits(features)
        head = self.slots[slot]
        return int16_logits(real_logits(head, real_features(features, self.scale)), self.inverse)

    def decide(self, features: np.ndarray, slot: int | None = None) -> np.ndarray:
        return self.quantized.decide(self.logits(features, slot))

    # -- the stream -----------------------------------------------------------------------

    def step(self, reading: int) -> int:
        """One new reading (MISSING if none): labels the window that ended `horizon`
        readings ago, then predicts; the decided class, or -1 without a full window."""
        self.history.popleft()
        self.history.append(int(reading))
        slot = self.steps % self.horizon
        self.steps += 1
        waiting = self.pending[slot]
        if waiting is not None:
            readings = np.array(self.history)
            future = readings[self.window :]
            if not (future == MISSING).any():
                stratum = self.stratum(int(readings[self.window - 1]), future)
                if stratum is not None:
                    self.add(waiting, stratum, self._held_next())
            self.pending[slot] = None
        window = np.array(list(self.history)[self.horizon :], dtype=np.int16)
        if (window == MISSING).any():
            return -1
        features = self.quantized.features(window[None, None, :].astype(np.float64))[0]
        self.pending[slot] = features.astype(np.int16)
        return int(self.decide(features)[0])

    def stratum(self, current: int, future: np.ndarray) -> int | None:
        """The label of `label_future`, NEAR_LOW for an in-range window whose next readings
        come below `near_low_mgdl`, and None (not kept) for an in-range window that is low
        now: whether a low recovers within the horizon depends on carbohydrates the model
        cannot see, and "a low now is fine" is the harmful state a device must never learn
        (an alert on a current low is never a false alert either)."""
        policy = self.quantized.policy
        label = int(label_future(future[None, :], policy.hypo_mgdl, policy.hyper_mgdl)[0])
        if label != IN_RANGE:
            return label
        if current < policy.hypo_mgdl:
            return None
        return NEAR_LOW if future.min() < self.settings.near_low_mgdl else IN_RANGE

    def _held_next(self) -> bool:
        settings = self.settings
        block = self.labelled // settings.held_out_block
        self.labelled += 1
        return block % settings.held_out_every == settings.held_out_every - 1

    def add(self, features: np.ndarray, stratum: int, held_out: bool) -> int:
        """Put one labelled window (int16 features) into a reservoir; its slot or -1."""
        codes = (np.asarray(features, dtype=np.int64) + self.zero_point).astype(np.int8)
        reservoir = self.held if held_out else self.train
        return reservoir.add(int(stratum), codes)

    # -- the daily update -----------------------------------------------------------------

    def restore_factory(self) -> None:
        self.active = SLOT_FACTORY

    def update(self) -> UpdateStatus:
        """Train a candidate from the factory head and make it active only if every gate
        passes; returns (and keeps) the attempt's status."""
        settings = self.settings
        self.attempts += 1
        status = UpdateStatus(attempt=self.attempts, steps=self.steps)
        status.train_windows = self.train.filled().tolist()
        status.held_windows = self.held.filled().tolist()
        status.held_hypo = status.held_windows[HYPO]
        status.held_near_low = status.held_windows[NEAR_LOW]
        status.traces_total = len(self.traces)
        per_day = MINUTES_PER_DAY // self.quantized.policy.sample_minutes
        if (
            self.steps < settings.min_days * per_day
            or status.train_windows[HYPO] < settings.min_hypo_train
            or status.held_hypo < settings.min_held
            or status.held_near_low < settings.min_held
        ):
            return self._finish(status, GATE_DATA)
        candidate_slot = 1 if self.active == 0 else 0
        codes, strata = self.train.samples()
        candidate = train_head(
            self.factory,
            codes.astype(np.int16) - self.zero_point,
            np.asarray(STRATUM_LABELS)[strata],
            self.scale,
            self.train_rng,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            l2_pull=settings.l2_pull,
            train_bias=settings.train_bias,
            alert=HYPO,
            offset=alert_offset(self.quantized.policy.threshold, settings),
            factors=np.where(strata == NEAR_LOW, F32(settings.near_low_weight), F32(1.0)),
        )
        self.slots[candidate_slot] = candidate
        status.trained = 1
        status.max_change = float(np.abs(candidate.flat() - self.factory.flat()).max())
        gate = self._judge(status, candidate_slot)
        if gate == GATE_NONE:
            self.active = candidate_slot  # last: the switch
        return self._finish(status, gate)

    def _held(self, stratum: int) -> np.ndarray:
        filled = self.held.filled()[stratum]
        return self.held.codes[stratum, :filled].astype(np.int16) - self.zero_point

    def _judge(self, status: UpdateStatus, candidate: int) -> int:
        """Run the post-training gates, filling `status`; the first refusing gate."""
        if len(self.traces):
            on_traces = self.decide(self.traces.features, candidate) == HYPO
            status.traces_alerted = int(on_traces.sum())
            missed = np.flatnonzero(~on_traces)
            status.first_missed_trace = int(missed[0]) if len(missed) else -1
        lows = self._held(HYPO)
        now, mine = self.decide(lows) == HYPO, self.decide(lows, candidate) == HYPO
        status.caught_current, status.caught_candidate = int(now.sum()), int(mine.sum())
        status.losses, status.gains = int((now & ~mine).sum()), int((mine & ~now).sum())
        near = self._held(NEAR_LOW)
        now, mine = self.decide(near) == HYPO, self.decide(near, candidate) == HYPO
        status.alarms_current, status.alarms_candidate = int(now.sum()), int(mine.sum())
        status.new_alarms = int((mine & ~now).sum())
        status.removed_alarms = int((now & ~mine).sum())
        settings = self.settings
        status.lower_bound, sensitivity_ok = paired_bound(
            status.held_hypo, status.gains, status.losses, settings.sensitivity_margin, settings
        )
        status.alarm_lower_bound, alarms_ok = paired_bound(
            status.held_near_low,
            status.removed_alarms,
            status.new_alarms,
            settings.alarm_margin,
            settings,
        )
        if status.traces_alerted < status.traces_total:
            return GATE_TRACES
        if status.caught_candidate < status.caught_current or not sensitivity_ok:
            return GATE_SENSITIVITY
        if status.alarms_candidate > status.alarms_current or not alarms_ok:
            return GATE_ALARMS
        return GATE_NONE

    def _finish(self, status: UpdateStatus, gate: int) -> UpdateStatus:
        status.gate = gate
        status.accepted = int(gate == GATE_NONE)
        status.active_slot = self.active
        self.status = status
        return status


def paired_bound(
    n: int, gains: int, losses: int, margin: float, settings: LearnerSettings
) -> tuple[float, bool]:
    """Paired non-inferiority on n held-back windows, each +1 (the candidate does better),
    -1 (worse) or 0: the lower bound mean - z sqrt(var / n) of the mean difference, and
    whether the candidate passes: it loses nothing, or the bound is >= -margin. The verdict
    needs no square root: with D = gains - losses, S = gains + losses, A = D + margin n, the
    bound holds iff A >= 0 and A^2 n >= z^2 (S n - D^2). float32, as the device computes."""
    if n == 0:
        return 0.0, losses == 0
    d, s = gains - losses, gains + losses
    nf = F32(n)
    mean = F32(d) / nf
    variance = F32(s) / nf - mean * mean
    bound = float(mean - settings.z * newton_sqrt(variance / nf))
    a = F32(d) + F32(margin) * nf
    holds = bool(a >= 0 and a * a * nf >= settings.z_squared * F32(s * n - d * d))
    return bound, losses == 0 or holds


def newton_sqrt(value: np.float32, iterations: int = 30) -> np.float32:
    """sqrt by Newton's iteration in float32 (the device has no libm)."""
    value = F32(value)
    if value <= 0:
        return F32(0.0)
    root = value if value > 1 else F32(1.0)
    for _ in range(iterations):
        root = F32(0.5) * (root + value / root)
    return root
