import numpy as np
import pytest

from tailorml.evaluate.alerts import alert_metrics, hyper_events, hypo_events, snooze_alerts

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
    alerts = snooze_alerts(times, np.ones(6, bool), snooze_minutes=30)
    assert alerts.tolist() == [True, False, False, True, False, True]


def test_alert_metrics_by_hand():
    from tailorml.evaluate.alerts import Event

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
