"""The safety rules of a decision (docs/alerts.md), on hand-made readings: the urgent-low
floor, hysteresis, the re-alert of a snoozed low that keeps falling, no decision from a
gap, staleness, and how older model files and configs meet the new fields."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailorml.config import load_config
from tailorml.errors import ConfigError
from tailorml.policy import AlertPolicy, AlertState, Raised

MIN = 60_000
POLICY = AlertPolicy(threshold=0.9)  # hysteresis 0.05, snooze 30, re-alert after 10 mg/dL


def hypo(p: float) -> np.ndarray:
    return np.array([(1 - p) * 0.9, p, (1 - p) * 0.1])


@pytest.mark.parametrize(
    ("now", "before", "urgent"),
    [
        (55, 50, True),  # at the floor, even rising
        (56, 50, False),  # above it and rising
        (69, 70, True),  # below 70 and falling
        (69, 69, False),  # below 70, level
        (69, float("nan"), False),  # below 70, no reading before: not known to fall
        (70, 80, False),  # not below 70
        (39, float("nan"), True),  # a Low code
        (float("nan"), 60, False),  # no reading now: nothing to judge
    ],
)
def test_the_urgent_low_floor_by_hand(now, before, urgent):
    assert POLICY.is_urgent_low(now, before) is urgent


def test_an_urgent_low_sounds_over_a_gap_a_confident_model_and_a_snooze():
    state = AlertState(True, (Raised("hypo", 0, 80.0),))
    verdict, after = POLICY.judge(state, 5 * MIN, 52, 58, None, "gap")
    assert (verdict.decision, verdict.kind) == ("urgent", "hypo")
    assert after.last("hypo") == Raised("hypo", 5 * MIN, 52)
    verdict, _ = POLICY.judge(AlertState(), 0, 52, 58, hypo(0.0))
    assert verdict.decision == "urgent" and "at or below 55 mg/dL" in verdict.reason


def test_a_gap_gives_no_decision_and_keeps_the_state():
    state = AlertState(True, (Raised("hypo", 0, 90.0),))
    verdict, after = POLICY.judge(state, 5 * MIN, 100, 100, None, "2 of 24 readings missing")
    assert (verdict.decision, verdict.kind, verdict.reason) == (
        "no_decision",
        None,
        "2 of 24 readings missing",
    )
    assert after == state and not verdict.raises


def test_hysteresis_holds_an_alert_until_its_probability_falls_below_the_release():
    decisions, state = [], AlertState()
    for minute, p in enumerate([0.92, 0.86, 0.851, 0.849, 0.88, 0.91]):
        verdict, state = POLICY.judge(state, minute * 5 * MIN, 100, 100, hypo(p))
        decisions.append(verdict.decision)
    # 0.92 alerts; 0.86 and 0.851 stay on (>= 0.85); 0.849 releases; 0.88 is below the
    # threshold with the alert off: in range; 0.91 is on again but inside the snooze
    assert decisions == ["alert", "snoozed", "snoozed", "none", "none", "snoozed"]


def test_a_snoozed_low_re_alerts_once_glucose_fell_ten_more():
    state = AlertState()
    out = []
    for step, cgm in enumerate([100, 95, 91, 90, 81, 79]):
        verdict, state = POLICY.judge(state, step * 5 * MIN, cgm, cgm + 2, hypo(0.95))
        out.append(verdict.decision)
    # 100 alerts; 95 / 91 are 5 / 9 below it; 90 is 10 below: re-alert (then the
    # reference is 90); 81 is 9 below 90; 79 is 11 below: re-alert
    assert out == ["alert", "snoozed", "snoozed", "alert", "snoozed", "alert"]


def test_the_snooze_ends_after_its_minutes():
    state = AlertState(False, (Raised("hypo", 0, 100.0),))
    at_29, _ = POLICY.judge(state, 29 * MIN, 100, 100, hypo(0.95))
    at_30, _ = POLICY.judge(state, 30 * MIN, 100, 100, hypo(0.95))
    assert (at_29.decision, at_30.decision) == ("snoozed", "alert")


def test_a_hyper_prediction_alerts_as_hyper_with_its_own_snooze():
    high = np.array([0.1, 0.05, 0.85])
    verdict, state = POLICY.judge(AlertState(), 0, 240, 230, high)
    assert (verdict.decision, verdict.kind) == ("alert", "hyper")
    verdict, _ = POLICY.judge(state, 5 * MIN, 245, 240, hypo(0.95))
    assert (verdict.decision, verdict.kind) == ("alert", "hypo")  # hyper's snooze is its own


@pytest.mark.parametrize(
    ("reading_min", "stale", "alarm"),
    [(0, False, False), (15, False, False), (16, True, False), (30, True, False), (45, True, True)],
)
def test_staleness_as_nightscout_reports_it(reading_min, stale, alarm):
    found = POLICY.staleness(0, reading_min * MIN)
    assert (found["stale"], found["stale_alarm"], found["age_minutes"]) == (
        stale,
        alarm,
        reading_min,
    )
    assert POLICY.staleness(3 * MIN, 0)["age_minutes"] == 0  # a little ahead: age 0


def test_a_model_file_from_before_the_safety_rules_gets_their_defaults():
    old = AlertPolicy(threshold=0.8).to_dict()
    for name in (
        "urgent_low_mgdl",
        "hysteresis",
        "realert_drop_mgdl",
        "stale_minutes",
        "stale_alarm_minutes",
        "future_minutes",
    ):
        del old[name]
    loaded = AlertPolicy.from_dict(old)
    assert loaded == AlertPolicy(threshold=0.8)
    assert (loaded.urgent_low_mgdl, loaded.hysteresis, loaded.stale_minutes) == (55.0, 0.05, 15)


def test_the_safety_rules_come_from_the_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        "[alerts]\nurgent_low_mgdl = 50\nhysteresis = 0.1\nrealert_drop_mgdl = 15\n"
        "stale_minutes = 10\nstale_alarm_minutes = 20\nfuture_minutes = 2\n"
    )
    policy = AlertPolicy.from_config(load_config(path), sample_minutes=5)
    assert (policy.urgent_low_mgdl, policy.hysteresis, policy.realert_drop_mgdl) == (50, 0.1, 15)
    assert (policy.stale_minutes, policy.stale_alarm_minutes, policy.future_minutes) == (10, 20, 2)


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("stale_minutes = 40", "stale_minutes must be at most stale_alarm_minutes"),
        ("urgent_low_mgdl = 75", "urgent_low_mgdl"),
        ("hysteresis = 1.5", "hysteresis"),
    ],
)
def test_bad_safety_settings_are_one_line_errors(tmp_path, line, named):
    path = tmp_path / "c.toml"
    path.write_text(f"[alerts]\n{line}\n")
    with pytest.raises(ConfigError, match=named):
        load_config(path)


# -- offline evaluation applies the same rules (vectorised twin of `judge`) ---------------

T0 = np.datetime64("2025-01-06T00:00")


def five_minutes(n: int) -> np.ndarray:
    return T0 + (np.arange(n) * 5).astype("timedelta64[m]")


def test_offline_positives_hold_on_a_trace_that_hovers_at_the_threshold():
    """P(hypo) hovers at 0.9 +- 0.03: without hysteresis the alert would flicker on and off
    six times; held until it falls below 0.85, it is one run, ending at 0.80."""
    p = np.array([0.5, 0.91, 0.88, 0.92, 0.87, 0.9, 0.86, 0.80, 0.88, 0.5])
    probabilities = np.stack([hypo(value) for value in p])
    level = np.full(len(p), 120.0)
    positive = POLICY.positives(probabilities, level, level)
    assert positive.tolist() == [False] + [True] * 6 + [False] * 3
    # one alert for the whole run (the rest is inside the snooze), not one per crossing
    alerts = POLICY.raised(five_minutes(len(p)), positive, level, level)
    assert np.flatnonzero(alerts).tolist() == [1]


def test_offline_an_urgent_low_alerts_inside_the_snooze_and_a_fall_re_alerts():
    """A model alert at 0 min (100 mg/dL); 10 min later 64 and falling (urgent: sounds
    inside the snooze); the model then stays positive while CGM drifts 64 -> 62 -> 60 ->
    54 (54 <= 55: urgent again)."""
    cgm = np.array([100.0, 90.0, 64.0, 64.0, 64.0, 60.0, 54.0])
    before = np.concatenate(([100.0], cgm[:-1]))
    probabilities = np.stack([hypo(0.95)] * len(cgm))
    positive = POLICY.positives(probabilities, cgm, before)
    alerts = POLICY.raised(five_minutes(len(cgm)), positive, cgm, before)
    # 0: first alert; 5: snoozed (90 is 10 below 100: re-alerts!); 10: urgent (falling to
    # 64); 15, 20: level, snoozed; 25: 60 is falling below 70: urgent; 30: 54: urgent
    assert np.flatnonzero(alerts).tolist() == [0, 1, 2, 5, 6]


def test_offline_metrics_count_an_urgent_low_as_an_alert_and_never_as_false():
    """A low the model misses entirely: CGM falls 75 -> 68 -> 62 -> 60 (event from 68);
    the urgent floor alerts at 68, 62 and 60 (each lower than the one before) — never false
    (a low now) — but only from the event's start on, so it does not count as caught."""
    cgm = np.array([100.0] * 10 + [75.0, 68.0, 62.0, 60.0, 60.0, 60.0, 100.0, 100.0])
    before = np.concatenate(([100.0], cgm[:-1]))
    times = five_minutes(len(cgm))
    probabilities = np.stack([hypo(0.01)] * len(cgm))
    labels = np.where(cgm < 70, 1, 0)
    labels[5:11] = 1  # the 30 min before the event
    events = POLICY.hypo_events(times, cgm)
    assert len(events) == 1 and events[0].start == times[11]
    metrics = POLICY.alert_metrics(events, times, probabilities, labels, cgm, before)
    assert (metrics["alerts"], metrics["false_alerts"]) == (3, 0)
    assert metrics["hypo_caught"] == 0  # the alerts come at and after the start, not before
    assert metrics["alert_precision"] == 1.0


def judged_one_by_one(policy: AlertPolicy, times, probabilities, cgm, before):
    """The service's way: `judge` reading by reading, carrying the state."""
    state, positive, alerts, hyper = AlertState(), [], [], []
    at_ms = (np.asarray(times, "datetime64[ms]").astype(np.int64)).tolist()
    for index, at in enumerate(at_ms):
        verdict, state = policy.judge(state, at, cgm[index], before[index], probabilities[index])
        positive.append(verdict.kind == "hypo")
        alerts.append(verdict.raises and verdict.kind == "hypo")
        hyper.append(verdict.kind == "hyper")
    return np.array(positive), np.array(alerts), np.array(hyper)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 1.0),  # P(hypo)
            st.floats(0.0, 1.0),  # share of the rest that is hyper
            st.sampled_from([40.0, 54.0, 55.0, 60.0, 64.0, 69.0, 70.0, 75.0, 90.0, 140.0, 260.0]),
            st.integers(1, 4),  # readings since the last one (a gap between decisions)
        ),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from([0.3, 0.5, 0.9]),
)
def test_offline_evaluation_decides_exactly_as_the_service(steps, threshold):
    policy = AlertPolicy(threshold=threshold)
    p = np.array([step[0] for step in steps])
    hyper_share = np.array([step[1] for step in steps])
    probabilities = np.column_stack([(1 - p) * (1 - hyper_share), p, (1 - p) * hyper_share])
    cgm = np.array([step[2] for step in steps])
    before = np.concatenate(([np.nan], cgm[:-1]))
    times = T0 + (np.cumsum([step[3] for step in steps]) * 5).astype("timedelta64[m]")
    positive, alerts, hyper = judged_one_by_one(policy, times, probabilities, cgm, before)
    offline_positive = policy.positives(probabilities, cgm, before)
    assert offline_positive.tolist() == positive.tolist()
    assert policy.raised(times, offline_positive, cgm, before).tolist() == alerts.tolist()
    assert policy.hyper_positives(probabilities, cgm, before).tolist() == hyper.tolist()
