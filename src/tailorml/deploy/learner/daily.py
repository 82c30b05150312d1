"""Alert metrics of a device's life, day by day and over a period, for any rule's decisions.

Events are found once on the whole lived trace and each is given to the day it starts in;
whether it was caught (and early enough to act: `useful_lead_minutes`) uses the predictions
before it, even those of the previous evening. Alerts are raised over the whole trace with the
policy's safety rules (urgent lows, snooze, re-alert), then false alerts are counted in the
day they are raised. The definitions are the policy's
(`tailorml.alerts`), so a day's figures add up to the period's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tailorml.alerts import event_leads, false_alerts
from tailorml.deploy.learner.ondevice import MINUTES_PER_DAY
from tailorml.policy import AlertPolicy


@dataclass
class Lived:
    """The labelled windows of the lived period, in time order."""

    times: np.ndarray  # prediction time of each window
    day: np.ndarray  # day index of each window (from the first reading)
    label_is_hypo: np.ndarray
    current_cgm: np.ndarray
    previous_cgm: np.ndarray  # the reading one interval before each prediction
    event_days: np.ndarray  # day index of each hypo event
    events: list
    n_days: int


def day_metrics(policy: AlertPolicy, lived: Lived, positive: np.ndarray) -> list[dict]:
    """Per day: hypo events, caught (any lead, early), false alerts and their rate."""
    urgent = policy.urgent_lows(lived.current_cgm, lived.previous_cgm)
    positive = np.asarray(positive, dtype=bool) | urgent
    leads = event_leads(lived.events, lived.times, positive, policy.horizon_minutes)
    alerts = policy.raised(lived.times, positive, lived.current_cgm, lived.previous_cgm)
    false = false_alerts(alerts, lived.label_is_hypo, lived.current_cgm, policy.hypo_mgdl)
    rows = []
    for day in range(lived.n_days):
        mine = leads[lived.event_days == day]
        evaluable = mine[~np.isnan(mine)]
        windows = int((lived.day == day).sum())
        monitored = windows * policy.sample_minutes / MINUTES_PER_DAY
        n_false = int(false[lived.day == day].sum())
        rows.append(
            {
                "hypo_events": len(evaluable),
                "caught": int((evaluable >= 0).sum()),
                "caught_early": int((evaluable >= policy.useful_lead_minutes).sum()),
                "alerts": int(alerts[lived.day == day].sum()),
                "false_alerts": n_false,
                "false_alerts_per_day": n_false / monitored if monitored else float("nan"),
                "windows": windows,
            }
        )
    return rows


def summed(rows: list[dict], sample_minutes: int) -> dict:
    """The period's figures from its days: sensitivities and the false-alert rate."""
    events = sum(row["hypo_events"] for row in rows)
    windows = sum(row["windows"] for row in rows)
    monitored = windows * sample_minutes / MINUTES_PER_DAY
    false = sum(row["false_alerts"] for row in rows)
    caught = sum(row["caught"] for row in rows)
    early = sum(row["caught_early"] for row in rows)
    return {
        "hypo_events": events,
        "caught": caught,
        "caught_early": early,
        "hypo_sensitivity": caught / events if events else float("nan"),
        "hypo_sensitivity_early": early / events if events else float("nan"),
        "false_alerts": false,
        "false_alerts_per_day": false / monitored if monitored else float("nan"),
        "monitored_days": monitored,
    }
