"""The operating point: the threshold with most early catches within a false-alert budget."""

import numpy as np
import pytest

from tailorml.alerts import Event
from tailorml.evaluate.curves import MODEL, Person
from tailorml.evaluate.operating_point import choose_operating_point
from tailorml.policy import AlertPolicy

POLICY = AlertPolicy()  # 5-min grid, 30-min horizon and snooze, useful lead 15 min
DAY = np.datetime64("2024-01-01T00:00") + np.arange(288) * np.timedelta64(5, "m")


def at(hhmm: str) -> int:
    hours, minutes = map(int, hhmm.split(":"))
    return (hours * 60 + minutes) // 5


def person(scores: dict[str, float], event: str | None = "12:00") -> Person:
    """One synthetic day of predictions at 5-min steps (exactly 1 monitored day): in range
    (120 mg/dL) all day, hypo probability 0 except at `scores`, one low starting at `event`
    (the windows of the 30 min before it are labelled hypo)."""
    p = np.zeros(len(DAY))
    for time, value in scores.items():
        p[at(time)] = value
    label = np.zeros(len(DAY), dtype=bool)
    events = []
    if event:
        start = at(event)
        label[start - 6 : start] = True
        events = [Event(DAY[start], DAY[start + 3])]
    level = np.full(len(DAY), 120.0)  # in range and steady: no urgent low
    return Person(events, DAY, label, level, level, {MODEL: p})


# early alert (lead 20 min) at 0.9, a late one (lead 10) at 0.97; false spikes elsewhere
SPIKES = {"03:00": 0.95, "06:00": 0.6, "08:00": 0.6, "11:40": 0.9, "11:50": 0.97}


def test_the_quietest_grid_point_that_still_alerts_early_within_one_false_alert_a_day():
    # threshold <= 0.6: 3 false alerts; (0.6, 0.9]: 1 (03:00) and the 11:40 alert is early;
    # (0.9, 0.95]: 1, caught only 10 min ahead; above 0.95: no false alert, late or missed
    point = choose_operating_point([person(SPIKES)], POLICY, 1.0, "test day")
    assert point.threshold == 0.62  # the lowest grid value above 0.6: ties go to it
    assert point.false_alerts_per_day == 1.0
    assert point.sensitivity_early == 1.0 and point.sensitivity == 1.0 and point.events == 1
    assert point.met_budget and point.at_edge == ""


def test_a_tighter_budget_trades_the_early_alert_for_a_late_one():
    point = choose_operating_point([person(SPIKES)], POLICY, 0.5, "test day")
    assert point.threshold == 0.96  # 0.95 < t <= 0.97 keeps the 10-min catch, no false alert
    assert point.false_alerts_per_day == 0.0
    assert point.sensitivity_early == 0.0 and point.sensitivity == 1.0


def test_means_are_over_individuals_and_ties_go_to_fewer_false_alerts():
    # a second person with no low and one false spike at 0.7: at 0.62 the mean false alerts
    # are (1 + 1) / 2 = 1, above 0.7 they are (1 + 0) / 2 = 0.5, with the same early catch
    quiet = person({"15:00": 0.7}, event=None)
    point = choose_operating_point([person(SPIKES), quiet], POLICY, 1.0, "two days")
    assert point.threshold == 0.72 and point.false_alerts_per_day == 0.5
    assert point.sensitivity_early == 1.0 and point.events == 1  # the first person's event
    tight = choose_operating_point([person(SPIKES), quiet], POLICY, 0.4, "two days")
    assert tight.threshold == 0.96 and tight.false_alerts_per_day == 0.0


def test_no_threshold_within_budget_uses_the_quietest_and_says_so():
    loud = person({"02:00": 1.0, "05:00": 1.0, "09:00": 0.5, "11:40": 0.9})
    point = choose_operating_point([loud], POLICY, 1.0, "test day")
    assert not point.met_budget
    assert point.false_alerts_per_day == 2.0  # the two certain spikes alert at any threshold
    assert point.threshold == 0.52  # the quietest rate first reached above 0.5
    assert "NO threshold meets the budget" in point.describe()


def test_a_choice_at_the_top_of_the_grid_is_flagged():
    # false spikes between 0.9998 and 0.9999: only the grid's highest threshold is quiet
    edge = person({"02:00": 0.99985, "05:00": 0.99985, "11:40": 0.99995})
    point = choose_operating_point([edge], POLICY, 1.0, "test day")
    assert point.threshold == 0.9999 and point.at_edge == "highest"
    assert point.sensitivity_early == 1.0
    assert "at the highest threshold searched" in point.describe()


def test_no_prediction_at_all_is_an_error():
    with pytest.raises(ValueError, match="no prediction on nothing"):
        choose_operating_point([], POLICY, 1.0, "nothing")


def test_a_personal_threshold_spends_the_budget_on_the_persons_own_days():
    from tailorml.evaluate.operating_point import budget_threshold

    # no low on these days; spikes 0.95 (03:00), 0.6 (06:00 and 08:00), 0.9 (11:40), 0.97
    # (11:50, 10 min after 11:40: one alert with it under the 30-min snooze)
    first_days = person(SPIKES, event=None)
    knobs = [0.5, 0.7, 0.92, 0.96, 0.99]
    # 0.5: 03:00, 06:00, 08:00, 11:40 = 4 false alerts; 0.7: 03:00, 11:40 = 2; 0.92: 03:00
    # and 11:50 = 2; 0.96: 11:50 = 1 -> the lowest knob within 1 a day is 0.96
    assert budget_threshold(first_days, POLICY, 1.0, knobs) == 0.96
    assert budget_threshold(first_days, POLICY, 2.0, knobs) == 0.7
    # nothing within half an alert a day below 0.99 (no spike reaches it): the highest knob
    assert budget_threshold(first_days, POLICY, 0.5, knobs[:-1]) == 0.96
    assert budget_threshold(first_days, POLICY, 0.5, knobs) == 0.99


def test_a_population_prior_counts_as_days_of_the_persons_own_data():
    from tailorml.evaluate.operating_point import RatePrior, budget_threshold

    first_days = person(SPIKES, event=None)  # 1 day; 4, 2, 2, 1, 0 false alerts at the knobs
    knobs = [0.5, 0.7, 0.92, 0.96, 0.99]
    prior = RatePrior(tuple(knobs), (0.5, 0.4, 0.3, 0.2, 0.0), days=1.0)
    # (own + population) / 2: 2.25, 1.2, 1.15, 0.6, 0 -> within 1.2 a day from 0.7 on
    assert budget_threshold(first_days, POLICY, 1.2, knobs, prior=prior) == 0.7
    assert budget_threshold(first_days, POLICY, 1.2, knobs) == 0.96  # own days alone: 2 > 1.2
    assert budget_threshold(first_days, POLICY, 1.0, knobs, prior=prior) == 0.96
