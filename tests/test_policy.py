"""The alert policy: decisions by hand, its round trip through a model file, and the places
that must use the *configured* event definition and thresholds (data gate, describe)."""

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import cohort_frame
from tailorml.config import SoftConfig, load_config
from tailorml.data.describe import describe_cohort
from tailorml.errors import ConfigError, ModelFileError
from tailorml.models.cnn import CNNSpec, SmallCNN, load_model, save_model
from tailorml.policy import AlertPolicy
from tailorml.soft.gates import GATES, DataSufficiency, build_gates, data_sufficiency


def test_alert_rule_decides_by_hand():
    policy = AlertPolicy(threshold=0.3)  # classes in_range, hypo, hyper
    probabilities = np.array(
        [
            [0.6, 0.3, 0.1],  # P(hypo) reaches 0.3: hypo although in range is likelier
            [0.5, 0.2, 0.3],  # below the threshold: the likelier of in range / hyper
            [0.2, 0.29, 0.51],  # hyper
        ]
    )
    assert policy.decide(probabilities).tolist() == [1, 0, 2]
    assert policy.with_threshold(0.25).decide(probabilities).tolist() == [1, 0, 1]
    assert policy.alerting(probabilities).tolist() == [True, False, False]


def test_argmax_policy_has_no_alert():
    policy = AlertPolicy.argmax(["a", "b", "c"])
    assert policy.decide(np.array([[0.2, 0.5, 0.3]])).tolist() == [1]
    assert not policy.is_alert and policy.alert_index is None
    with pytest.raises(ValueError, match="no alerts"):
        policy.alerting(np.array([[0.2, 0.5, 0.3]]))


def test_policy_from_config_takes_every_configured_number(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        "[task]\nhypo_mgdl = 65\nhorizon_minutes = 45\n"
        "[alerts]\nprobability_threshold = 0.4\nsnooze_minutes = 20\n"
        "event_min_minutes = 30\nevent_end_minutes = 10\n"
    )
    policy = AlertPolicy.from_config(load_config(path), sample_minutes=5)
    assert (policy.hypo_mgdl, policy.horizon_minutes, policy.threshold) == (65, 45, 0.4)
    assert (policy.snooze_minutes, policy.event_min_minutes, policy.event_end_minutes) == (
        20,
        30,
        10,
    )
    assert policy.sample_minutes == 5 and policy.channels == ("cgm",)
    assert AlertPolicy.from_dict(policy.to_dict()) == policy


def test_policy_from_a_dict_with_missing_fields_names_them():
    data = AlertPolicy().to_dict()
    del data["threshold"]
    with pytest.raises(ModelFileError, match=r"m\.pt: alert policy has missing field.*threshold"):
        AlertPolicy.from_dict(data, "m.pt")


def test_policy_refuses_data_on_another_grid():
    model = AlertPolicy(sample_minutes=3)
    with pytest.raises(ModelFileError, match=r"CGM interval \(minutes\) 3 but cohort.csv has 5"):
        model.require_same_input(AlertPolicy(sample_minutes=5), "model.pt", "cohort.csv")
    model.require_same_input(AlertPolicy(sample_minutes=3, threshold=0.2), "m", "d")  # fine


def _tiny_model() -> SmallCNN:
    spec = CNNSpec(in_channels=1, length=8, n_classes=3, conv_channels=[2], hidden=4)
    return SmallCNN(spec, torch.zeros(1), torch.ones(1))


def test_a_model_without_policy_can_be_neither_saved_nor_loaded(tmp_path):
    model = _tiny_model()
    with pytest.raises(ValueError, match=r"set model\.policy"):
        save_model(model, tmp_path / "m.pt")
    # a file written without a policy (as older versions did)
    torch.save({"spec": model.spec.to_dict(), "state_dict": model.state_dict()}, tmp_path / "o.pt")
    with pytest.raises(ModelFileError, match=r"o\.pt has no alert policy"):
        load_model(tmp_path / "o.pt")


@pytest.mark.parametrize(
    "content", [b"", b"patient_id,time,cgm\nx,2024-01-01,100\n", bytes(range(256)), "truncated"]
)
def test_anything_but_a_model_file_is_a_clear_error(tmp_path, content):
    if content == "truncated":
        model = _tiny_model()
        model.policy = AlertPolicy()
        save_model(model, tmp_path / "full.pt")
        content = (tmp_path / "full.pt").read_bytes()[:200]
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(ModelFileError, match=r"bad\.pt is not a tailorml model file"):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="model file not found"):
        load_model(tmp_path / "absent.pt")


def test_an_unreadable_model_path_is_not_called_a_bad_model(tmp_path):
    (tmp_path / "run.pt").mkdir()  # unreadable as a file even for root
    with pytest.raises(
        ModelFileError, match=r"cannot read model file .*run\.pt \(Is a directory\)"
    ):
        load_model(tmp_path / "run.pt")


def _trace(values: list[float]) -> pd.DataFrame:
    times = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(len(values)) * 5, unit="min")
    return pd.DataFrame({"time": times, "cgm": np.asarray(values, dtype=float)})


# Two lows of 20 min (4 readings) and one of 40 min (8 readings) on a 5-minute grid, then a
# dip to 75 mg/dL for 30 min; 2 h of 120 mg/dL between them.
LOWS = [120.0] * 24 + [60.0] * 4 + [120.0] * 24 + [60.0] * 4 + [120.0] * 24 + [60.0] * 8
TRACE = LOWS + [120.0] * 24 + [75.0] * 6 + [120.0] * 24


def test_data_gate_counts_events_under_the_policy_event_definition():
    default = data_sufficiency(_trace(TRACE), AlertPolicy(sample_minutes=5), SoftConfig())
    assert default.numbers["hypo_events"] == 3  # >= 15 min below 70
    longer = AlertPolicy(sample_minutes=5, event_min_minutes=30)
    assert data_sufficiency(_trace(TRACE), longer, SoftConfig()).numbers["hypo_events"] == 1
    higher = AlertPolicy(sample_minutes=5, hypo_mgdl=80.0)  # the 75 mg/dL dip is a low now
    result = data_sufficiency(_trace(TRACE), higher, SoftConfig())
    assert result.numbers["hypo_events"] == 4
    low_share = (4 + 4 + 8 + 6) / len(TRACE)  # readings below 80 mg/dL
    assert result.numbers["fraction_low"] == pytest.approx(low_share)
    assert result.numbers["low_mgdl"] == 80.0


def test_describe_counts_events_under_the_policy_but_keeps_consensus_ranges(tmp_path):
    from tailorml.data.cohort import load_cohort

    path = tmp_path / "c.csv"
    cohort_frame({"p1": TRACE}, sample_minutes=5).to_csv(path, index=False)
    cohort = load_cohort(path)
    default = describe_cohort(cohort, AlertPolicy(sample_minutes=5)).iloc[0]
    longer = describe_cohort(cohort, AlertPolicy(sample_minutes=5, event_min_minutes=30)).iloc[0]
    assert (default["hypo_events"], longer["hypo_events"]) == (3, 1)
    higher = describe_cohort(cohort, AlertPolicy(sample_minutes=5, hypo_mgdl=80.0)).iloc[0]
    assert higher["hypo_events"] == 4
    # time below 70 is a consensus metric: the same whatever the alert threshold
    assert higher["time_below_70"] == default["time_below_70"] == pytest.approx(16 / len(TRACE))


def test_safety_gates_cannot_be_configured_away():
    with pytest.raises(ConfigError, match="safety_non_inferiority, harmful_states"):
        build_gates(SoftConfig(gates=[]))
    with pytest.raises(ConfigError, match=r"must include the safety gate.*harmful_states"):
        build_gates(SoftConfig(gates=["safety_non_inferiority"]))
    gates = build_gates(SoftConfig(gates=["harmful_states", "safety_non_inferiority"]))
    assert [gate.name for gate in gates] == ["harmful_states", "safety_non_inferiority"]


def test_every_gate_has_one_identity():
    identities = [DataSufficiency, *GATES.values()]
    numbers = sorted(identity.number for identity in identities)
    assert numbers == list(range(1, len(identities) + 1))  # 1..n, no gaps, no repeats
    assert all(identity.short and identity.title for identity in identities)
    assert GATES["threshold_calibration"].heading().startswith("6. ")


def test_alert_outcomes_and_event_leads_follow_the_metrics_by_hand():
    """The report's trace draws what the policy decides: predictions every 3 min from 0 to
    267 min; P(hypo) >= 0.5 at 0, 3, 45 and 90 min; the window at 45 min is labelled hypo."""
    from tailorml.alerts import Event

    policy = AlertPolicy(threshold=0.5, snooze_minutes=30, horizon_minutes=30)
    t0 = np.datetime64("2025-01-06T00:00")
    pred_minutes = np.arange(0, 268, 3)
    times = t0 + pred_minutes.astype("timedelta64[m]")
    p_hypo = np.where(np.isin(pred_minutes, [0, 3, 45, 90]), 0.8, 0.1)
    probabilities = np.column_stack([1 - p_hypo, p_hypo, np.zeros_like(p_hypo)])
    labels = np.where(pred_minutes == 45, 1, 0)
    flat = np.full(90, 100.0)  # steady in range: no urgent low
    alerts, false = policy.alert_outcomes(times, probabilities, labels, flat, flat)
    # 3 min is snoozed; the alerts at 0 and 90 min have no low now or ahead
    assert pred_minutes[alerts].tolist() == [0, 45, 90]
    assert pred_minutes[false].tolist() == [0, 90]
    events = [Event(t0 + np.timedelta64(60, "m"), t0 + np.timedelta64(75, "m"))]
    events.append(Event(t0 + np.timedelta64(300, "m"), t0 + np.timedelta64(310, "m")))
    leads = policy.event_leads(events, times, probabilities, flat, flat)
    assert leads[0] == 15 and np.isnan(leads[1])  # no prediction in [270, 300): not evaluable
    metrics = policy.alert_metrics(events, times, probabilities, labels, flat, flat)
    assert (metrics["alerts"], metrics["false_alerts"]) == (alerts.sum(), false.sum())
    assert metrics["hypo_events_not_evaluable"] == np.isnan(leads).sum()


def test_hyper_alerts_are_windows_decided_hyper():
    policy = AlertPolicy(threshold=0.5)
    assert policy.defines_hyper and not AlertPolicy.argmax(["a", "b"]).defines_hyper
    t0 = np.datetime64("2025-01-06T00:00")
    times = t0 + (np.arange(20) * 5).astype("timedelta64[m]")  # the policy's 5-min grid
    probabilities = np.tile([0.6, 0.1, 0.3], (20, 1))
    probabilities[5] = [0.2, 0.1, 0.7]  # hyper at 25 min, no high now or ahead: false
    probabilities[6] = [0.1, 0.6, 0.3]  # hypo alert: not a hyper alert
    high = np.full(20, 180.0)
    metrics = policy.hyper_alert_metrics([], times, probabilities, np.zeros(20), high, high)
    assert (metrics["hyper_alerts"], metrics["hyper_false_alerts"]) == (1, 1)
    assert metrics["hyper_false_alerts_per_day"] == pytest.approx(1 / (100 / 1440))
    with pytest.raises(ValueError, match="no hyper alerts"):
        AlertPolicy.argmax(["a", "b"]).hyper_alert_metrics([], times, probabilities, [], [], [])
