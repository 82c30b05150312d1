"""Event-based evaluation of hypoglycaemia alerts.

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
  `snooze_minutes` raise no new alert (like a CGM receiver's repeat interval).
- A *false alert* is an alert whose window label is not hypo while the current reading is
  at or above the threshold (no low now and none in the horizon).
- *False alerts per day* divides by the monitored days: predictions x sampling interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MINUTE = np.timedelta64(1, "m")


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


def snooze_alerts(times: np.ndarray, positive: np.ndarray, snooze_minutes: int) -> np.ndarray:
    """Boolean mask over predictions: which positives raise an alert."""
    times = np.asarray(times, dtype="datetime64[ns]")
    alerts = np.zeros(len(times), dtype=bool)
    last = None
    for index in np.flatnonzero(positive):
        if last is None or (times[index] - last) / MINUTE >= snooze_minutes:
            alerts[index] = True
            last = times[index]
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


def alert_metrics(
    events: list[Event],
    times: np.ndarray,
    positive: np.ndarray,
    label_is_hypo: np.ndarray,
    current_cgm: np.ndarray,
    *,
    threshold: float,
    horizon_minutes: int,
    snooze_minutes: int,
    sample_minutes: int,
) -> dict[str, float]:
    """Hypo sensitivity, lead time and false alerts per day for one individual."""
    times = np.asarray(times, dtype="datetime64[ns]")
    positive = np.asarray(positive, dtype=bool)
    leads = event_leads(events, times, positive, horizon_minutes)
    leads = leads[~np.isnan(leads)]
    caught_leads = leads[leads >= 0]
    caught = len(caught_leads)
    evaluable = len(leads)
    alerts = snooze_alerts(times, positive, snooze_minutes)
    false = alerts & ~np.asarray(label_is_hypo, dtype=bool) & (np.asarray(current_cgm) >= threshold)
    days = len(times) * sample_minutes / (24 * 60)
    return {
        "hypo_events": float(evaluable),
        "hypo_events_not_evaluable": float(len(events) - evaluable),
        "hypo_caught": float(caught),
        "hypo_sensitivity": caught / evaluable if evaluable else float("nan"),
        "median_lead_minutes": float(np.median(caught_leads)) if caught else float("nan"),
        "alerts": float(alerts.sum()),
        "false_alerts": float(false.sum()),
        "false_alerts_per_day": float(false.sum() / days) if days else float("nan"),
        "monitored_days": days,
    }
