import numpy as np
import pytest

from tailorml.alerts import alert_metrics, hyper_events, hypo_events, raise_alerts

T0 = np.datetime64("2025-01-06T00:00")


def minutes(values):
    return T0 + np.asarray(values, dtype="timedelta64[m]")


def test_hypo_events_need_15_minutes_and_merge_short_recoveries():
    cgm = [100] * 3 + [65] * 5 + [100] * 2 + [60] * 5 + [100] * 10 + [50] * 4 + [100] * 5 + [55] * 6
    times = minutes(np.arange(len(cgm)) * 3)
    events = hypo_events(times, np.array(cgm, float), 70, sample_minutes=3)
    # run at readings 3-7 and 10-14 merge (6 min of recovery); 25-28 is only 12 min long
    assert [(e.start, e.end) for e in events] == [
        (minutes(9), minutes(42)),
        (minutes(102), minutes(117)),
    ]


def test_a_missing_reading_breaks_a_low_run():
    cgm = np.array([65, 65, np.nan, 65, 65, 65, 100], float)
    assert hypo_events(minutes(np.arange(7) * 3), cgm, 70, sample_minutes=3) == []


def test_hyper_events_mirror_hypo_events():
    cgm = np.array([200, 260, 270, 280, 255, 251, 200], float)
    events = hyper_events(minutes(np.arange(7) * 3), cgm, 250, sample_minutes=3)
    assert [(e.start, e.end) for e in events] == [(minutes(3), minutes(15))]


def test_snooze_thins_repeated_positives():
    times = minutes([0, 3, 6, 33, 36, 66])
    alerts = raise_alerts(times, np.ones(6, bool), snooze_minutes=30)
    assert alerts.tolist() == [True, False, False, True, False, True]


def test_snooze_counts_from_the_last_alert_and_zero_minutes_keeps_every_positive():
    times = minutes([0, 20, 29, 30, 45, 59, 61])
    positive = np.array([True, True, False, True, True, False, True])
    # 0 alerts; 20 is within 30 min; 30 is exactly 30 after 0: alerts; 45 within; 61 alerts
    alerts = raise_alerts(times, positive, snooze_minutes=30)
    assert alerts.tolist() == [True, False, False, True, False, False, True]
    assert raise_alerts(times, positive, snooze_minutes=0).tolist() == positive.tolist()
    assert not raise_alerts(times, np.zeros(7, bool), snooze_minutes=30).any()


def test_alert_metrics_by_hand():
    from tailorml.alerts import Event

    events = [
        Event(minutes(60), minutes(75)),
        Event(minutes(150), minutes(160)),
        Event(minutes(300), minutes(310)),
    ]
    pred_minutes = np.arange(0, 268, 3)  # 90 predictions, the last at 267 min
    times = minutes(pred_minutes)
    positive = np.isin(pred_minutes, [45, 99])
    label_is_hypo = ((pred_minutes >= 30) & (pred_minutes < 60)) | (
        (pred_minutes >= 120) & (pred_minutes < 150)
    )
    result = alert_metrics(
        events,
        times,
        positive,
        label_is_hypo,
        np.full(90, 100.0),
        threshold=70,
        horizon_minutes=30,
        snooze_minutes=30,
        sample_minutes=3,
    )
    # event 1 caught at 45 (lead 15), event 2 missed, event 3 has no prediction before it
    assert result["hypo_events"] == 2
    assert result["hypo_events_not_evaluable"] == 1
    assert result["hypo_sensitivity"] == pytest.approx(0.5)
    assert result["median_lead_minutes"] == 15
    # the alert at 99 min has no low now or in its horizon: false; 90 x 3 min = 0.1875 days
    assert result["alerts"] == 2
    assert result["false_alerts"] == 1
    assert result["false_alerts_per_day"] == pytest.approx(1 / 0.1875)
    # lead 15 is useful at the default 15 min, not when 20 min are asked for
    assert (result["hypo_caught_early"], result["hypo_sensitivity_early"]) == (1, 0.5)
    stricter = alert_metrics(
        events,
        times,
        positive,
        label_is_hypo,
        np.full(90, 100.0),
        threshold=70,
        horizon_minutes=30,
        snooze_minutes=30,
        sample_minutes=3,
        useful_lead_minutes=20,
    )
    assert (stricter["hypo_caught_early"], stricter["hypo_sensitivity"]) == (0, 0.5)
    # one of two alerts was followed by a low
    assert result["alert_precision"] == 0.5
    # exact intervals: 1 of 2 events (Clopper-Pearson), 1 false alert in 0.1875 days (Garwood)
    assert result["hypo_sensitivity_low"] == pytest.approx(0.01258, abs=1e-5)
    assert result["hypo_sensitivity_high"] == pytest.approx(0.98742, abs=1e-5)
    assert result["false_alerts_per_day_low"] == pytest.approx(0.02532 / 0.1875, rel=1e-3)
    assert result["false_alerts_per_day_high"] == pytest.approx(5.5716 / 0.1875, rel=1e-3)


def test_an_alert_while_already_low_is_not_false():
    result = alert_metrics(
        [],
        minutes([0]),
        np.array([True]),
        np.array([False]),
        np.array([60.0]),
        threshold=70,
        horizon_minutes=30,
        snooze_minutes=30,
        sample_minutes=3,
    )
    assert result["false_alerts"] == 0
    assert np.isnan(result["hypo_sensitivity"])


def test_exact_intervals_match_the_published_tables():
    from tailorml.alerts import proportion_interval, rate_interval

    # Clopper-Pearson 95 %: 0/10, 5/10, 10/10
    assert proportion_interval(0, 10) == pytest.approx((0.0, 0.30850), abs=1e-5)
    assert proportion_interval(5, 10) == pytest.approx((0.18709, 0.81291), abs=1e-5)
    assert proportion_interval(10, 10) == pytest.approx((0.69150, 1.0), abs=1e-5)
    assert all(np.isnan(proportion_interval(0, 0)))
    # Garwood 95 % for counts 0 and 4 (per unit exposure: 0-3.689, 1.090-10.242); 2 days halve it
    assert rate_interval(0, 1.0) == pytest.approx((0.0, 3.68888), abs=1e-4)
    assert rate_interval(4, 2.0) == pytest.approx((1.08987 / 2, 10.24159 / 2), abs=1e-4)


def test_hyper_alert_metrics_mirror_the_hypo_ones_with_their_own_keys():
    """The hand-made case above, mirrored above 250 mg/dL: event 1 caught 15 min ahead,
    event 2 missed, event 3 not evaluable; the alert at 99 min has no high now or ahead."""
    from tailorml.alerts import Event

    events = [
        Event(minutes(60), minutes(75)),
        Event(minutes(150), minutes(160)),
        Event(minutes(300), minutes(310)),
    ]
    pred_minutes = np.arange(0, 268, 3)
    label_is_hyper = ((pred_minutes >= 30) & (pred_minutes < 60)) | (
        (pred_minutes >= 120) & (pred_minutes < 150)
    )
    result = alert_metrics(
        events,
        minutes(pred_minutes),
        np.isin(pred_minutes, [45, 99]),
        label_is_hyper,
        np.full(90, 200.0),  # in range: below the hyper threshold
        threshold=250,
        horizon_minutes=30,
        snooze_minutes=30,
        sample_minutes=3,
        kind="hyper",
    )
    assert all(key.startswith("hyper_") for key in result)
    assert (result["hyper_events"], result["hyper_events_not_evaluable"]) == (2, 1)
    assert result["hyper_sensitivity"] == pytest.approx(0.5)
    assert result["hyper_sensitivity_early"] == pytest.approx(0.5)
    assert (result["hyper_alerts"], result["hyper_false_alerts"]) == (2, 1)
    assert result["hyper_alert_precision"] == 0.5
    assert result["hyper_false_alerts_per_day"] == pytest.approx(1 / 0.1875)
    assert result["hyper_median_lead_minutes"] == 15
    assert result["hyper_sensitivity_low"] == pytest.approx(0.01258, abs=1e-5)


def test_a_hyper_alert_while_already_high_is_not_false_but_one_at_a_low_is():
    from tailorml.alerts import false_alerts

    alerts = np.array([True, True, True, False])
    not_hyper = np.zeros(4, bool)
    cgm = np.array([260.0, 250.0, 60.0, 300.0])
    # above 250 now: a high is present; exactly 250 is not above; a low is not a high
    assert false_alerts(alerts, not_hyper, cgm, 250, "hyper").tolist() == [
        False,
        True,
        True,
        False,
    ]
    # the hypo rule on the same readings: only the one below 70 is not false
    assert false_alerts(alerts, not_hyper, cgm, 70).tolist() == [True, True, False, False]
