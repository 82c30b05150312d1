"""Live alerts: every CGM reading a person uploads is decided by their active model.

The window is the model's own (its policy: grid, length, channels), read from the
person's stored readings around the new one. Readings are put on the grid as the importers
do — each slot takes the nearest reading within half an interval, nothing is interpolated
— and a window with an empty slot gets no decision ("no_decision", with how many readings
are missing), never a guess. Carbs and insulin are summed into the interval ending at each
slot. Dexcom/xDrip error codes (sgv below 20) are not glucose and count as missing.

Decisions follow the model's alert policy: the alert class at the active threshold (hypo),
else the likelier other class (a predicted hyper is a hyper alert); an alert of a kind
within `snooze_minutes` of the last raised one of that kind is recorded as snoozed. Each
decision is stored sealed, with the model's id, hash and kind in the clear.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from tailorml.data.on_board import (
    CARB_ABSORPTION_MINUTES,
    DERIVED_CHANNELS,
    INSULIN_ACTION_MINUTES,
    derived_channel,
)
from tailorml.registry.people import PeopleStore
from tailorml.service.keyring import Keyring
from tailorml.service.nightscout import ERROR_CODE_BELOW
from tailorml.service.runtime import Runtimes

MINUTE_MS = 60_000
ENTRY, TREATMENT, ALERT = "entry", "treatment", "alert"
LOOKBACK_MINUTES = {"iob": INSULIN_ACTION_MINUTES, "cob": CARB_ABSORPTION_MINUTES}
READ_LIMIT = 1_000_000


@dataclass(frozen=True)
class Decision:
    """One reading's decision; `decision` is alert, snoozed, none or no_decision."""

    reading_ms: int
    decision: str
    kind: str | None  # hypo or hyper when the model predicts one
    probabilities: dict[str, float] | None
    threshold: float | None  # None when no model ran
    reason: str
    model_id: int
    model_sha256: str
    model_kind: str

    def to_dict(self) -> dict:
        return asdict(self)


def on_grid(times_ms: np.ndarray, values: np.ndarray, slots_ms: np.ndarray, step_ms: int):
    """Each slot's nearest reading within half an interval (ties: the earlier), else NaN."""
    order = np.argsort(times_ms, kind="stable")
    times_ms, values = times_ms[order], values[order]
    out = np.full(len(slots_ms), np.nan)
    if len(times_ms) == 0:
        return out
    right = np.clip(np.searchsorted(times_ms, slots_ms), 0, len(times_ms) - 1)
    left = np.clip(right - 1, 0, len(times_ms) - 1)
    gap_left = np.abs(slots_ms - times_ms[left])
    gap_right = np.abs(times_ms[right] - slots_ms)
    nearest = np.where(gap_left <= gap_right, left, right)
    gap = np.minimum(gap_left, gap_right)
    inside = gap * 2 <= step_ms
    out[inside] = values[nearest[inside]]
    return out


def summed_on_grid(times_ms: np.ndarray, amounts: np.ndarray, slots_ms: np.ndarray, step_ms):
    """Amounts summed into the interval (slot - step, slot] ending at each slot."""
    out = np.zeros(len(slots_ms))
    if len(times_ms) == 0:
        return out
    index = np.ceil((times_ms - slots_ms[0]) / step_ms).astype(np.int64)
    inside = (index >= 0) & (index < len(slots_ms))
    np.add.at(out, index[inside], amounts[inside])
    return out


class LiveAlerts:
    def __init__(self, store: PeopleStore, keyring: Keyring, runtimes: Runtimes) -> None:
        self.store = store
        self.keyring = keyring
        self.runtimes = runtimes

    def _readings(self, person_id: str, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
        cipher = self.keyring.cipher(person_id)
        times, values = [], []
        for row in self.store.entries(person_id, low, high, READ_LIMIT):
            entry = json.loads(cipher.open(row.sealed, ENTRY))
            if entry.get("type") == "sgv" and entry.get("sgv", 0) >= ERROR_CODE_BELOW:
                times.append(row.date_ms)
                values.append(float(entry["sgv"]))
        return np.asarray(times, dtype=np.int64), np.asarray(values, dtype=np.float64)

    def _treatments(self, person_id: str, low: int, high: int) -> dict[str, tuple]:
        cipher = self.keyring.cipher(person_id)
        found: dict[str, tuple[list, list]] = {"insulin": ([], []), "cho": ([], [])}
        for row in self.store.treatments(person_id, low, high, READ_LIMIT):
            treatment = json.loads(cipher.open(row.sealed, TREATMENT))
            for column, key in (("insulin", "insulin"), ("cho", "carbs")):
                if treatment.get(key):
                    found[column][0].append(row.date_ms)
                    found[column][1].append(float(treatment[key]))
        return {k: (np.asarray(t, dtype=np.int64), np.asarray(v)) for k, (t, v) in found.items()}

    def decide(self, person_id: str, readings_ms: list[int]) -> list[Decision]:
        """Decide each of `readings_ms` (new sgv readings), store and return the decisions."""
        if not readings_ms:
            return []
        runtime = self.runtimes.for_person(person_id)
        policy = runtime.policy
        step = policy.sample_minutes * MINUTE_MS
        length = policy.window_minutes // policy.sample_minutes
        lookback = max([LOOKBACK_MINUTES.get(c, 0) for c in policy.channels])
        total = length + lookback // policy.sample_minutes
        first, last = min(readings_ms), max(readings_ms)
        low, high = first - total * step, last + step
        times, values = self._readings(person_id, low, high)
        needs_treatments = any(c != "cgm" for c in policy.channels)
        treatments = self._treatments(person_id, low, high) if needs_treatments else {}

        windows, usable, reasons = [], [], {}
        for reading in sorted(set(readings_ms)):
            slots = reading - np.arange(total - 1, -1, -1, dtype=np.int64) * step
            cgm = on_grid(times, values, slots, step)
            missing = int(np.isnan(cgm[-length:]).sum())
            if missing:
                reasons[reading] = (
                    f"{missing} of {length} readings missing in the last "
                    f"{policy.window_minutes} min; no decision without a full window"
                )
                continue
            rows = []
            for channel in policy.channels:
                if channel == "cgm":
                    rows.append(cgm[-length:])
                    continue
                column = DERIVED_CHANNELS.get(channel, channel)
                amounts = summed_on_grid(*treatments[column], slots, step)
                series = (
                    derived_channel(channel, amounts, policy.sample_minutes)
                    if channel in DERIVED_CHANNELS
                    else amounts
                )
                rows.append(series[-length:])
            windows.append(np.stack(rows))
            usable.append(reading)
        probabilities = runtime.proba(np.stack(windows)) if windows else np.empty((0, 0))
        classes = policy.decide(probabilities) if windows else np.empty(0, dtype=int)

        snooze = policy.snooze_minutes * MINUTE_MS
        raised = self._raised(person_id, first - snooze, last)
        decisions = []
        proba_of = dict(zip(usable, probabilities, strict=True))
        class_of = dict(zip(usable, classes, strict=True))
        for reading in sorted(set(readings_ms)):
            common = dict(
                reading_ms=reading,
                threshold=policy.threshold,
                model_id=runtime.model_id,
                model_sha256=runtime.sha256,
                model_kind=runtime.kind,
            )
            if reading in reasons:
                decisions.append(
                    Decision(
                        decision="no_decision",
                        kind=None,
                        probabilities=None,
                        reason=reasons[reading],
                        **common,
                    )
                )
                continue
            label = policy.classes[int(class_of[reading])]
            shown = {
                c: round(float(p), 6)
                for c, p in zip(policy.classes, proba_of[reading], strict=True)
            }
            kind = None if label == "in_range" else label
            if kind is None:
                decision, reason = "none", "in range predicted"
            else:
                previous = [t for t in raised.get(kind, []) if t < reading]
                if previous and reading - max(previous) < snooze:
                    decision = "snoozed"
                    reason = f"{kind} predicted; an alert was raised less than "
                    reason += f"{policy.snooze_minutes} min ago"
                else:
                    decision, reason = "alert", f"{kind} predicted within "
                    reason += f"{policy.horizon_minutes} min"
                    raised.setdefault(kind, []).append(reading)
            decisions.append(
                Decision(decision=decision, kind=kind, probabilities=shown, reason=reason, **common)
            )
        self._store(person_id, decisions)
        return decisions

    def undecided(self, person_id: str, readings_ms: list[int], error: Exception) -> list[Decision]:
        """Record that these readings got no decision because the model could not run, so
        `alerts/current` says so instead of showing an older decision."""
        decisions = [
            Decision(
                reading_ms=reading,
                decision="no_decision",
                kind=None,
                probabilities=None,
                threshold=None,
                reason=f"the model could not run ({type(error).__name__}); see the service log",
                model_id=0,
                model_sha256="",
                model_kind="unknown",
            )
            for reading in sorted(set(readings_ms))
        ]
        self._store(person_id, decisions)
        return decisions

    def _store(self, person_id: str, decisions: list[Decision]) -> None:
        cipher = self.keyring.cipher(person_id)
        self.store.add_alerts(
            person_id,
            [
                (
                    d.reading_ms,
                    d.model_id,
                    d.model_sha256,
                    d.model_kind,
                    cipher.seal(json.dumps(d.to_dict()).encode(), ALERT),
                )
                for d in decisions
            ],
        )

    def _raised(self, person_id: str, low: int, high: int) -> dict[str, list[int]]:
        cipher = self.keyring.cipher(person_id)
        raised: dict[str, list[int]] = {}
        for row in self.store.alerts(person_id, low, high, READ_LIMIT):
            stored = json.loads(cipher.open(row.sealed, ALERT))
            if stored["decision"] == "alert":
                raised.setdefault(stored["kind"], []).append(row.date_ms)
        return raised

    def history(self, person_id: str, since_ms=None, until_ms=None, limit=10) -> list[dict]:
        cipher = self.keyring.cipher(person_id)
        return [
            json.loads(cipher.open(row.sealed, ALERT)) | {"id": row.id, "created": row.created}
            for row in self.store.alerts(person_id, since_ms, until_ms, limit)
        ]
