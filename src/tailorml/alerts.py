"""Event-based evaluation of hypoglycaemia alerts: the event arithmetic beside the alert
policy (`tailorml.policy` decides with it; offline evaluation, the service and the device
reference count with it). It imports nothing of tailorml, so every floor can use it.

Definitions (documented in README, tested on hand-made traces):

- A *hypo event* starts at the first of at least `event_min_minutes` of consecutive CGM
  readings below the threshold (international consensus: < 70 mg/dL for >= 15 min) and
  ends once readings stay at or above it for `event_end_minutes`; lows closer together
  than that are one event. A missing reading breaks a run.
- A *prediction* is made at the time of the last reading of every valid window; it is
  *positive* when the model's hypo probability reaches the alert threshold.
- An event is *caught* if a positive prediction falls in the `horizon` before its start,
  [start - horizon, start); the *lead time* is start minus the earliest such prediction.
  Events with no prediction at all in that interval (sensor gaps) are *not evaluable* and
  excluded from sensitivity, and counted.
- *Alerts* are positive predictions thinned by a snooze: after an alert, positives within
  `snooze_minutes` raise no new alert (like a CGM receiver's repeat interval) unless CGM has
  fallen `realert_drop_mgdl` below the last alert's reading (the low is getting worse).
- An *urgent low* (CGM <= the urgent level, or below the hypo threshold and falling) is an
  alert at once, outside any snooze, and a positive prediction: no model can silence it.
  A model's positives have *hysteresis*: once on, a prediction stays positive until the
  probability falls `hysteresis` below the threshold. These are the safety rules the service
  and the device apply (docs/alerts.md, "Safe decisions"), so the figures are what a person
  would meet.
- A *false alert* is an alert whose window label is not hypo while the current reading is
  at or above the threshold (no low now and none in the horizon).
- *False alerts per day* divides by the monitored days: predictions x sampling interval.
- An alert is *useful* when it comes at least `useful_lead_minutes` (15) before the event:
  a low caught 5 minutes ahead leaves no time to eat. *Early sensitivity* counts only those.
- *Alert precision* is the share of alerts followed by a low (not false).
- Events are few per person, so every rate comes with an exact 95 % interval:
  Clopper-Pearson for proportions, the Poisson (Garwood) interval for alerts per day.
- *Hyper alerts* mirror all of this above the hyper threshold (`kind="hyper"`): an event is
  CGM above it, and a false hyper alert has no high now or in the horizon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, chi2

MINUTE = np.timedelta64(1, "m")
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Event:
    start: np.datetime64
    end: np.datetime64  # time of the last low reading


def excursion_events(
    times: np.ndarray,
    outside: np.ndarray,
    sample_minutes: int,
    min_minutes: int = 15,
    end_minutes: int = 15,
) -> list[Event]:
    """Events of a regular trace where `outside` holds (low, or high) for `min_minutes`;
    runs separated by less than `end_minutes` of recovery are one event."""
    times = np.asarray(times, dtype="datetime64[ns]")
    outside = np.asarray(outside, dtype=bool)
    edges = np.diff(np.concatenate(([0], outside.astype(np.int8), [0])))
    firsts, lasts = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    needed = max(1, int(np.ceil(min_minutes / sample_minutes)))
    runs = [
        (first, last)
        for first, last in zip(firsts, lasts, strict=True)
        if last - first + 1 >= needed
    ]
    merged: list[tuple[int, int]] = []
    for first, last in runs:
        if merged:
            recovery = (times[first] - times[merged[-1][1]]) / MINUTE - sample_minutes
            if recovery < end_minutes:
                merged[-1] = (merged[-1][0], last)
                continue
        merged.append((first, last))
    return [Event(times[first], times[last]) for first, last in merged]


def hypo_events(
    times: np.ndarray,
    cgm: np.ndarray,
    threshold: float,
    sample_minutes: int,
    min_minutes: int = 15,
    end_minutes: int = 15,
) -> list[Event]:
    """Hypo events: CGM below `threshold` (a missing reading breaks a run)."""
    low = np.nan_to_num(np.asarray(cgm, dtype=float), nan=np.inf) < threshold
    return excursion_events(times, low, sample_minutes, min_minutes, end_minutes)


def hyper_events(
    times: np.ndarray,
    cgm: np.ndarray,
    threshold: float,
    sample_minutes: int,
    min_minutes: int = 15,
    end_minutes: int = 15,
) -> list[Event]:
    """Hyper events: CGM above `threshold` (a missing reading breaks a run)."""
    high = np.nan_to_num(np.asarray(cgm, dtype=float), nan=-np.inf) > threshold
    return excursion_events(times, high, sample_minutes, min_minutes, end_minutes)


def urgent_lows(
    current_cgm: np.ndarray, previous_cgm: np.ndarray, urgent_mgdl: float, hypo_mgdl: float
) -> np.ndarray:
    """Which readings are an urgent low: at or below `urgent_mgdl`, or below `hypo_mgdl` and
    lower than the reading one interval before. A missing reading (NaN) is never urgent and
    a missing previous reading cannot show a fall."""
    current = np.asarray(current_cgm, dtype=float)
    previous = np.asarray(previous_cgm, dtype=float)
    with np.errstate(invalid="ignore"):
        return (current <= urgent_mgdl) | ((current < hypo_mgdl) & (current < previous))


def held_on(
    probability: np.ndarray, threshold: float, hysteresis: float, urgent: np.ndarray
) -> np.ndarray:
    """A model's positives over predictions in time order, with hysteresis: on when the
    probability reaches `threshold` (or at an urgent low), then held on until it falls
    below `threshold - hysteresis`. (Vectorised: a sweep calls this for every threshold.)"""
    probability = np.asarray(probability, dtype=float)
    urgent = np.asarray(urgent, dtype=bool)
    switch_on = (probability >= threshold) | urgent
    switch_off = ~(probability >= threshold - hysteresis) & ~urgent  # NaN: off
    marks = np.where(switch_on, 1, np.where(switch_off, 0, -1))
    if not len(marks):
        return np.zeros(0, dtype=bool)
    last_mark = np.maximum.accumulate(np.where(marks >= 0, np.arange(len(marks)), 0))
    return marks[last_mark] == 1


def raise_alerts(
    times: np.ndarray,
    positive: np.ndarray,
    snooze_minutes: int,
    urgent: np.ndarray | None = None,
    cgm: np.ndarray | None = None,
    realert_drop_mgdl: float | None = None,
) -> np.ndarray:
    """Boolean mask over predictions (in time order): which raise an alert — an urgent low
    always; a positive when no alert was raised in the last `snooze_minutes`, or when `cgm`
    has fallen `realert_drop_mgdl` below the last alert's reading. (Plain integers in the
    loop, over candidates only: a sweep calls this for every threshold and person.)"""
    nanoseconds = np.asarray(times, dtype="datetime64[ns]").astype(np.int64)
    n = len(nanoseconds)
    urgent = np.zeros(n, dtype=bool) if urgent is None else np.asarray(urgent, dtype=bool)
    values = np.full(n, np.nan) if cgm is None else np.asarray(cgm, dtype=float)
    drop = np.inf if realert_drop_mgdl is None else float(realert_drop_mgdl)
    snooze = int(snooze_minutes) * 60 * 10**9
    candidates = np.flatnonzero(np.asarray(positive, dtype=bool) | urgent)
    chosen, last_at, last_cgm = [], None, np.nan
    for index, at, now, sounds in zip(
        candidates.tolist(),
        nanoseconds[candidates].tolist(),
        values[candidates].tolist(),
        urgent[candidates].tolist(),
        strict=True,
    ):
        if sounds or last_at is None or at - last_at >= snooze or last_cgm - now >= drop:
            chosen.append(index)
            last_at, last_cgm = at, now
    alerts = np.zeros(n, dtype=bool)
    alerts[chosen] = True
    return alerts


def event_leads(
    events: list[Event], times: np.ndarray, positive: np.ndarray, horizon_minutes: int
) -> np.ndarray:
    """Per event: lead time in minutes of the earliest positive prediction in the horizon
    before it; -1 if it was missed; NaN if no prediction fell there (not evaluable)."""
    times = np.asarray(times, dtype="datetime64[ns]")
    positive = np.asarray(positive, dtype=bool)
    horizon = np.timedelta64(horizon_minutes, "m")
    leads = np.full(len(events), np.nan)
    for index, event in enumerate(events):
        before = (times >= event.start - horizon) & (times < event.start)
        if not before.any():
            continue
        hits = times[before & positive]
        leads[index] = float((event.start - hits.min()) / MINUTE) if len(hits) else -1.0
    return leads


def false_alerts(
    alerts: np.ndarray,
    label_in_event: np.ndarray,
    current_cgm: np.ndarray,
    threshold: float,
    kind: str = "hypo",
) -> np.ndarray:
    """Which `alerts` are false: the window's label is not the alerted class and the current
    reading is not beyond `threshold` (at or above it for hypo, at or below it for hyper).
    One definition for the metrics and for the report's trace, so they cannot disagree."""
    current = np.asarray(current_cgm, dtype=float)
    inside = current >= threshold if kind == "hypo" else current <= threshold
    return np.asarray(alerts, dtype=bool) & ~np.asarray(label_in_event, dtype=bool) & inside


def proportion_interval(
    successes: int, trials: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval of a proportion; NaN without trials."""
    if trials == 0:
        return float("nan"), float("nan")
    alpha = 1 - confidence
    low = beta.ppf(alpha / 2, successes, trials - successes + 1) if successes else 0.0
    high = beta.ppf(1 - alpha / 2, successes + 1, trials - successes) if successes < trials else 1
    return float(low), float(high)


def rate_interval(
    count: int, exposure: float, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Exact (Garwood) two-sided interval of a Poisson rate per unit of `exposure`."""
    if exposure <= 0:
        return float("nan"), float("nan")
    alpha = 1 - confidence
    low = chi2.ppf(alpha / 2, 2 * count) / 2 if count else 0.0
    high = chi2.ppf(1 - alpha / 2, 2 * count + 2) / 2
    return float(low / exposure), float(high / exposure)


def _no_interval(*_: float) -> tuple[float, float]:
    return float("nan"), float("nan")


def with_interval(name: str, value: float, interval: tuple[float, float]) -> dict[str, float]:
    """A value with its interval as `name`, `name_low`, `name_high` (the table layout)."""
    return {name: value, f"{name}_low": interval[0], f"{name}_high": interval[1]}


def alert_metrics(
    events: list[Event],
    times: np.ndarray,
    positive: np.ndarray,
    label_in_event: np.ndarray,
    current_cgm: np.ndarray,
    *,
    threshold: float,
    horizon_minutes: int,
    snooze_minutes: int,
    sample_minutes: int,
    useful_lead_minutes: int = 15,
    kind: str = "hypo",
    intervals: bool = True,
    urgent: np.ndarray | None = None,
    realert_drop_mgdl: float | None = None,
) -> dict[str, float]:
    """Event sensitivity (any lead and >= `useful_lead_minutes`), lead time, alert precision
    and false alerts per day for one individual, each rate with its exact 95 % interval
    (NaN with `intervals=False`: a sweep over thresholds reads only the rates).
    `kind="hyper"` judges hyper alerts the same way; its keys all start with `hyper_`
    (the hypo keys keep their historical names: `alerts`, `false_alerts_per_day`, ...).
    `urgent` readings count as positive and alert outside the snooze; with
    `realert_drop_mgdl` a snoozed positive re-alerts once `current_cgm` fell that much."""
    if kind not in ("hypo", "hyper"):
        raise ValueError(f"alert kind must be hypo or hyper, got {kind!r}")
    times = np.asarray(times, dtype="datetime64[ns]")
    positive = np.asarray(positive, dtype=bool)
    if urgent is not None:
        positive = positive | np.asarray(urgent, dtype=bool)
    leads = event_leads(events, times, positive, horizon_minutes)
    leads = leads[~np.isnan(leads)]
    caught_leads = leads[leads >= 0]
    caught, early, evaluable = (
        len(caught_leads),
        int((leads >= useful_lead_minutes).sum()),
        len(leads),
    )
    alerts = raise_alerts(times, positive, snooze_minutes, urgent, current_cgm, realert_drop_mgdl)
    false = false_alerts(alerts, label_in_event, current_cgm, threshold, kind)
    n_alerts, n_false = int(alerts.sum()), int(false.sum())
    days = len(times) * sample_minutes / (24 * 60)
    proportion = proportion_interval if intervals else _no_interval
    rate = rate_interval if intervals else _no_interval
    metrics = {
        "hypo_events": float(evaluable),
        "hypo_events_not_evaluable": float(len(events) - evaluable),
        "hypo_caught": float(caught),
        **with_interval(
            "hypo_sensitivity",
            caught / evaluable if evaluable else float("nan"),
            proportion(caught, evaluable),
        ),
        "hypo_caught_early": float(early),
        **with_interval(
            "hypo_sensitivity_early",
            early / evaluable if evaluable else float("nan"),
            proportion(early, evaluable),
        ),
        "median_lead_minutes": float(np.median(caught_leads)) if caught else float("nan"),
        "alerts": float(n_alerts),
        "false_alerts": float(n_false),
        **with_interval(
            "alert_precision",
            (n_alerts - n_false) / n_alerts if n_alerts else float("nan"),
            proportion(n_alerts - n_false, n_alerts),
        ),
        **with_interval(
            "false_alerts_per_day",
            n_false / days if days else float("nan"),
            rate(n_false, days),
        ),
        "monitored_days": days,
    }
    if kind == "hypo":
        return metrics
    return {
        key.replace("hypo_", "hyper_") if key.startswith("hypo_") else f"hyper_{key}": value
        for key, value in metrics.items()
        if key != "monitored_days"
    }
