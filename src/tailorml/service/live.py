"""Live alerts: every CGM reading a person uploads is decided by their active model.

The window is the model's own (its policy: grid, length, channels), read from the
person's stored readings around the new one. Readings are put on the grid by the cohorts'
own rule (`tailorml.data.grid`: each reading to its nearest slot, nothing interpolated; a
crowded slot keeps the reading nearer its time), and a window with an empty slot gets no
decision ("no_decision", with how many readings are missing), never a guess. Carbs and
insulin are summed into the interval ending at each slot. Dexcom/xDrip error codes (sgv
below 20) are not glucose and count as missing.

The decision itself is the policy's (`AlertPolicy.judge`, docs/alerts.md "Safe decisions"):
the urgent-low floor, the threshold with hysteresis, the snooze and its re-alert while
glucose keeps falling. Its state (was the alert on, when and at what CGM each kind last
sounded) is rebuilt from the stored decisions, so a restart or one-at-a-time uploads decide
as one batch would; one person's batches are decided one at a time, also across processes
(the state is read and the decisions stored under the store's write lock,
`PeopleStore.decisions_of`). Readings dated past the
clock are not decided here (the caller keeps them out); a backfill also re-decides the
newest reading and the stored undecided readings whose window had the gap it fills. Each
decision is stored sealed, with the model's id, hash and kind in the clear.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from tailorml.data.grid import fill_slots, sum_into_slots
from tailorml.data.on_board import (
    CARB_ABSORPTION_MINUTES,
    DERIVED_CHANNELS,
    INSULIN_ACTION_MINUTES,
    derived_channel,
)
from tailorml.policy import MINUTE_MS, AlertPolicy, AlertState, Raised
from tailorml.registry.people import PeopleStore
from tailorml.service.crypto import padded_json
from tailorml.service.keyring import Keyring
from tailorml.service.nightscout import ERROR_CODE_BELOW
from tailorml.service.runtime import Runtimes

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
    cgm: float | None  # the reading's own value on the grid (None: missing)

    def to_dict(self) -> dict:
        """The fields as a dict (`dataclasses.asdict`'s result, without its deep copy of
        every value: two per upload were about a tenth of the decision's CPU)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.probabilities is not None:
            values["probabilities"] = dict(self.probabilities)
        return values


def state_before(reading: int, history: dict[int, dict], policy: AlertPolicy) -> AlertState:
    """The alert state a reading is decided in, from the decisions before it: the alert
    class is on when the previous reading (one interval before) was decided as it, and
    each kind's last sounding decision drives the snooze and the re-alert."""
    step = policy.sample_minutes * MINUTE_MS
    earlier = sorted((t for t in history if t < reading), reverse=True)
    alert_on = False
    if earlier and (reading - earlier[0]) * 2 <= 3 * step:
        previous = history[earlier[0]]
        alert_on = previous.get("kind") == policy.alert_class and previous["decision"] in (
            "alert",
            "snoozed",
            "urgent",
        )
    raised: dict[str, Raised] = {}
    for at in earlier:
        stored = history[at]
        kind = stored.get("kind")
        if kind and kind not in raised and stored["decision"] in ("alert", "urgent"):
            raised[kind] = Raised(kind, at, stored.get("cgm"))
    return AlertState(alert_on, tuple(raised.values()))


def on_grid(times_ms: np.ndarray, values: np.ndarray, slots_ms: np.ndarray, step_ms: int):
    """The readings on the window's slots (`slots_ms`, one interval apart), placed as the
    cohorts are (`tailorml.data.grid`); a crowded slot keeps the reading nearer its time, so
    the reading being decided is its own slot's value."""
    grid, _, _ = fill_slots(
        np.asarray(times_ms, dtype=np.int64) - slots_ms[0],
        values,
        step_ms,
        len(slots_ms),
        keep="nearer",
    )
    return grid


def summed_on_grid(times_ms: np.ndarray, amounts: np.ndarray, slots_ms: np.ndarray, step_ms):
    """Amounts summed into the interval (slot - step, slot] ending at each slot."""
    totals, _ = sum_into_slots(
        np.asarray(times_ms, dtype=np.int64) - slots_ms[0], amounts, step_ms, len(slots_ms)
    )
    return totals


class LiveAlerts:
    def __init__(
        self,
        store: PeopleStore,
        keyring: Keyring,
        runtimes: Runtimes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.runtimes = runtimes
        self.clock = clock  # seconds, as time.time (tests set the server's clock)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def _person_lock(self, person_id: str) -> threading.Lock:
        """One person's decisions are made one batch at a time (in this process): the state
        a decision reads is the one the previous batch stored."""
        with self._locks_lock:
            return self._locks.setdefault(person_id, threading.Lock())

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def policy_of(self, person_id: str) -> AlertPolicy:
        """The person's active policy; its safety rules (stale, future) hold even while the
        model cannot be loaded, so then the defaults answer."""
        try:
            return self.runtimes.for_person(person_id).policy
        except Exception:  # the decision path logs and records the failure itself
            return AlertPolicy()

    def current_limit_ms(self, person_id: str) -> int:
        """The latest reading time that counts as current: the clock plus the policy's
        `future_minutes` (a phone clock a little ahead is normal; hours ahead is not)."""
        return self.now_ms() + self.policy_of(person_id).future_minutes * MINUTE_MS

    def _readings(self, person_id: str, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
        cipher = self.keyring.cipher(person_id)
        times, values = [], []
        for row in self.store.entries(person_id, low, high, READ_LIMIT):
            entry = cipher.open_record(row.sealed, ENTRY)
            if entry.get("type") == "sgv" and entry.get("sgv", 0) >= ERROR_CODE_BELOW:
                times.append(row.date_ms)
                values.append(float(entry["sgv"]))
        return np.asarray(times, dtype=np.int64), np.asarray(values, dtype=np.float64)

    def newest_reading(self, person_id: str, until_ms: int) -> int | None:
        """The time of the newest stored CGM reading at or before `until_ms`."""
        cipher = self.keyring.cipher(person_id)
        offset, page = 0, 4  # the newest entry is almost always a CGM reading: read few first
        while True:
            rows = self.store.entries(person_id, None, until_ms, page, offset)
            for row in rows:
                if cipher.open_record(row.sealed, ENTRY).get("type") == "sgv":
                    return row.date_ms
            if len(rows) < page:
                return None
            offset += page
            page = min(page * 4, 256)

    def _treatments(self, person_id: str, low: int, high: int) -> dict[str, tuple]:
        cipher = self.keyring.cipher(person_id)
        found: dict[str, tuple[list, list]] = {"insulin": ([], []), "cho": ([], [])}
        for row in self.store.treatments(person_id, low, high, READ_LIMIT):
            treatment = cipher.open_record(row.sealed, TREATMENT)
            for column, key in (("insulin", "insulin"), ("cho", "carbs")):
                if treatment.get(key):
                    found[column][0].append(row.date_ms)
                    found[column][1].append(float(treatment[key]))
        return {k: (np.asarray(t, dtype=np.int64), np.asarray(v)) for k, (t, v) in found.items()}

    def decide(self, person_id: str, readings_ms: list[int]) -> list[Decision]:
        """Decide each of `readings_ms` (new sgv readings, none in the future), store and
        return the decisions. A backfill (a new reading older than the newest stored one)
        also re-decides the newest reading: its window may be complete now."""
        if not readings_ms:
            return []
        with self._person_lock(person_id), self.store.decisions_of(person_id):
            return self._decide(person_id, readings_ms)

    def _decide(self, person_id: str, readings_ms: list[int]) -> list[Decision]:
        runtime = self.runtimes.for_person(person_id)
        policy = runtime.policy
        chosen = set(readings_ms)
        current_until = self.now_ms() + policy.future_minutes * MINUTE_MS
        newest = self.newest_reading(person_id, current_until)
        if newest is not None and newest not in chosen and min(chosen) < newest:
            chosen.add(newest)
            # the stored readings whose window had the gap this upload fills: decided again
            # (readings uploaded out of order, e.g. by concurrent requests, catch up)
            earliest = min(readings_ms)
            span = policy.window_minutes * MINUTE_MS
            for at, stored in self._history(person_id, earliest, earliest + span).items():
                if stored["decision"] == "no_decision" and at <= newest:
                    chosen.add(at)
        readings = sorted(chosen)
        step = policy.sample_minutes * MINUTE_MS
        length = policy.window_minutes // policy.sample_minutes
        lookback = max([LOOKBACK_MINUTES.get(c, 0) for c in policy.channels])
        total = length + lookback // policy.sample_minutes
        first, last = readings[0], readings[-1]
        low, high = first - total * step, last + step
        times, values = self._readings(person_id, low, high)
        needs_treatments = any(c != "cgm" for c in policy.channels)
        treatments = self._treatments(person_id, low, high) if needs_treatments else {}

        windows, usable, reasons, levels = [], [], {}, {}
        for reading in readings:
            slots = reading - np.arange(total - 1, -1, -1, dtype=np.int64) * step
            cgm = on_grid(times, values, slots, step)
            levels[reading] = (float(cgm[-1]), float(cgm[-2]) if total > 1 else np.nan)
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
        proba_of = dict(zip(usable, probabilities, strict=True))

        history = self._history(
            person_id, first - policy.snooze_minutes * MINUTE_MS - 2 * step, last
        )
        decisions = []
        for reading in readings:
            state = state_before(reading, history, policy)
            cgm_now, cgm_before = levels[reading]
            verdict, _ = policy.judge(
                state, reading, cgm_now, cgm_before, proba_of.get(reading), reasons.get(reading, "")
            )
            shown = (
                {
                    c: round(float(p), 6)
                    for c, p in zip(policy.classes, proba_of[reading], strict=True)
                }
                if reading in proba_of
                else None
            )
            decision = Decision(
                reading_ms=reading,
                decision=verdict.decision,
                kind=verdict.kind,
                probabilities=shown,
                threshold=policy.threshold,
                reason=verdict.reason,
                model_id=runtime.model_id,
                model_sha256=runtime.sha256,
                model_kind=runtime.kind,
                cgm=None if np.isnan(cgm_now) else cgm_now,
            )
            history[reading] = decision.to_dict()
            decisions.append(decision)
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
                cgm=None,
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
                    cipher.seal(padded_json(d.to_dict()), ALERT),
                )
                for d in decisions
            ],
        )

    def _history(self, person_id: str, low: int, high: int) -> dict[int, dict]:
        """The stored decision of each reading in [low, high] (the latest of a re-decided
        one), to rebuild the alert state exactly as an uninterrupted run would hold it."""
        cipher = self.keyring.cipher(person_id)
        history: dict[int, dict] = {}
        for row in self.store.alerts(person_id, low, high, READ_LIMIT):  # newest first
            if row.date_ms not in history:
                history[row.date_ms] = cipher.open_record(row.sealed, ALERT)
        return history

    def history(self, person_id: str, since_ms=None, until_ms=None, limit=10) -> list[dict]:
        cipher = self.keyring.cipher(person_id)
        return [
            cipher.open_record(row.sealed, ALERT) | {"id": row.id, "created": row.created}
            for row in self.store.alerts(person_id, since_ms, until_ms, limit)
        ]
