import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta

from conftest import START
from tailorml.config import SoftConfig
from tailorml.errors import ConfigError
from tailorml.policy import AlertPolicy
from tailorml.soft.gates import (
    CertifiedRobustness,
    Evidence,
    GeneralFloor,
    HarmfulStates,
    SafetyNonInferiority,
    build_gates,
    calibrate_threshold,
    data_sufficiency,
    sensitivity_lower_bound,
)
from tailorml.soft.stress import stress_inputs, stress_traces


def evidence(name="c", caught=(True,) * 5, stress=(True, True), acc_general=0.9, early=None):
    caught = np.array(caught, dtype=bool)
    return Evidence(
        name=name,
        threshold=0.5,
        calibration={},
        event_caught=caught,
        event_caught_early=caught if early is None else np.array(early, dtype=bool),
        useful_lead_minutes=15,
        sensitivity=float(caught.mean()) if len(caught) else float("nan"),
        false_alerts_per_day=1.0,
        in_range_predictions=np.zeros(10, int),
        acc_general=acc_general,
        stress_alerts=np.array(stress, dtype=bool),
        stress_names=[f"trace {i}" for i in range(len(stress))],
    )


def test_one_sided_exact_lower_bound_by_hand():
    # all n caught: the bound solves p**n = 1 - confidence
    assert sensitivity_lower_bound(5, 5, 0.8) == pytest.approx(0.2 ** (1 / 5))
    # otherwise the Clopper-Pearson bound is a Beta quantile
    assert sensitivity_lower_bound(8, 10, 0.8) == pytest.approx(beta.ppf(0.2, 8, 3))
    assert sensitivity_lower_bound(0, 0, 0.8) == 0.0


def _curve(caught_of: dict[float, tuple[int, int]]) -> pd.DataFrame:
    """A sweep as `evaluate.curves.sweep` gives it: per threshold, caught of events."""
    return pd.DataFrame([{"knob": k, "caught": c, "events": n} for k, (c, n) in caught_of.items()])


def test_calibration_picks_the_highest_threshold_that_meets_the_bound():
    curve = _curve(
        {
            0.9: (1, 10),
            0.5: (8, 10),  # bound ~0.62 < 0.7
            0.3: (10, 10),  # bound 0.2 ** 0.1 = 0.851 >= 0.7
            0.1: (10, 10),
        }
    )
    result = calibrate_threshold(curve, target=0.7, confidence=0.8, default=0.5)
    assert result["feasible"] and result["threshold"] == 0.3
    assert result["lower_bound"] == pytest.approx(0.2**0.1)
    assert [row["threshold"] for row in result["searched"]] == [0.9, 0.5, 0.3]
    assert not result["at_edge"]


def test_calibration_says_when_the_threshold_is_the_highest_searched():
    # a well-separated model: even the top of the grid catches every event
    curve = _curve({0.9999: (10, 10), 0.99: (10, 10), 0.5: (10, 10)})
    result = calibrate_threshold(curve, target=0.7, confidence=0.8, default=0.5)
    assert result["threshold"] == 0.9999 and result["at_edge"]


def test_calibration_without_enough_events_keeps_the_default():
    curve = _curve({0.5: (2, 2), 0.1: (2, 2)})
    result = calibrate_threshold(curve, target=0.7, confidence=0.8, default=0.5)
    assert not result["feasible"] and result["threshold"] == 0.5
    assert result["lower_bound"] == pytest.approx(0.2**0.5)
    assert not result["at_edge"]


def test_non_inferiority_passes_identical_behaviour_and_refuses_a_regression():
    gate = SafetyNonInferiority(SoftConfig())
    same = gate.check(evidence(caught=[True] * 6), evidence(caught=[True] * 6))
    assert same.passed and same.numbers["difference_lower_bound"] == 0.0
    worse = gate.check(
        evidence(caught=[False, False, True, True, True, True]), evidence(caught=[True] * 6)
    )
    assert not worse.passed and "beyond" in worse.reason


def test_a_candidate_that_alerts_too_late_fails_the_safety_gate():
    """Every event still caught, but 4 of 6 now less than 15 min ahead (28.5 -> 7.5 min on
    child-004 in the issue): any-lead sensitivity is equal, early sensitivity drops 0.67."""
    gate = SafetyNonInferiority(SoftConfig())
    late = gate.check(
        evidence(caught=[True] * 6, early=[True, True, False, False, False, False]),
        evidence(caught=[True] * 6, early=[True] * 6),
    )
    assert not late.passed
    assert late.numbers["difference_lower_bound"] == 0.0  # any lead: no change
    assert late.numbers["early_difference_lower_bound"] < -0.05
    assert late.numbers["candidate_early_sensitivity"] == pytest.approx(2 / 6)
    assert "alerted >= 15 min ahead: -0.67" in late.reason


def test_the_safety_gate_shows_the_lead_time_it_judges():
    """child-004 in the issue: every low still caught, but the mean lead drops from 28.5 to
    7.5 min — below the 15 min that leave time to act, so the gate fails and says so."""
    gate = SafetyNonInferiority(SoftConfig(bootstrap_samples=500))
    predefined = evidence(caught=[True] * 4, early=[True] * 4)
    predefined.event_leads = np.array([30.0, 27.0, 30.0, 27.0])
    later = evidence(caught=[True] * 4, early=[False] * 4)
    later.event_leads = np.array([9.0, 6.0, 9.0, 6.0])
    result = gate.check(later, predefined)
    assert not result.passed
    assert result.numbers["predefined_mean_lead_minutes"] == 28.5
    assert result.numbers["candidate_mean_lead_minutes"] == 7.5
    assert "alerted >= 15 min ahead: -1.00" in result.reason
    assert result.reason.endswith("mean lead 28.5 -> 7.5 min")
    # later but still >= 15 min ahead: actionable, passes, and the drop is still shown
    still = evidence(caught=[True] * 4, early=[True] * 4)
    still.event_leads = np.array([18.0, 15.0, 18.0, 15.0])
    kept = gate.check(still, predefined)
    assert kept.passed and kept.reason.endswith("mean lead 28.5 -> 16.5 min")


def test_non_inferiority_needs_enough_held_out_events():
    result = SafetyNonInferiority(SoftConfig()).check(
        evidence(caught=[True, True]), evidence(caught=[True, True])
    )
    assert not result.passed and "only 2 held-out hypo events" in result.reason


def test_harmful_states_names_the_missed_traces():
    result = HarmfulStates(SoftConfig()).check(evidence(stress=[True, False]), evidence())
    assert not result.passed and result.numbers["missed"] == ["trace 1"]


def test_general_floor_by_hand():
    gate = GeneralFloor(SoftConfig(general_accuracy_margin=0.02))
    assert gate.check(evidence(acc_general=0.881), evidence(acc_general=0.9)).passed
    assert not gate.check(evidence(acc_general=0.879), evidence(acc_general=0.9)).passed


def test_certified_robustness_compares_paired_certificates():
    def with_flags(flags):
        item = evidence()
        item.certified = np.array(flags, bool)
        item.robust_eps, item.robust_method = 10.0, "crown"
        return item

    gate = CertifiedRobustness(SoftConfig(robustness_margin=0.05, bootstrap_samples=500))
    predefined = with_flags([True] * 50 + [False] * 50)
    same = gate.check(with_flags([True] * 50 + [False] * 50), predefined)
    assert same.passed and same.numbers["difference_lower_bound"] == 0.0
    # 20 of the predefined model's 50 certified windows lost: a difference of -0.2
    worse = gate.check(with_flags([True] * 30 + [False] * 70), predefined)
    assert not worse.passed and worse.numbers["candidate_verified"] == 0.3
    assert "beyond the -0.05 margin" in worse.reason
    # losing 2 of 100 is within the margin only if the bound says so: -0.02 mean, bound lower
    slightly = gate.check(with_flags([True] * 48 + [False] * 52), predefined)
    assert slightly.numbers["difference_lower_bound"] <= -0.02
    assert slightly.passed == (slightly.numbers["difference_lower_bound"] >= -0.05)


def test_certified_robustness_is_not_informative_when_neither_model_verifies_anything():
    """0 of 40 verified for both: "pass" would claim a comparison that never happened."""
    from tailorml.registry.models import NOT_INFORMATIVE, PASS

    def with_flags(flags):
        item = evidence()
        item.certified = np.array(flags, bool)
        item.robust_eps, item.robust_method = 10.0, "crown"
        return item

    gate = CertifiedRobustness(SoftConfig(bootstrap_samples=200))
    nothing = gate.check(with_flags([False] * 40), with_flags([False] * 40))
    assert nothing.outcome == NOT_INFORMATIVE and nothing.numbers["informative"] is False
    assert nothing.passed  # visible, but it does not block (see the class docstring)
    assert nothing.reason.startswith("not informative: neither the candidate nor the predefined")
    assert "any of 40 windows at ±10 mg/dL" in nothing.reason
    # one verified window on either side is a comparison again
    better = gate.check(with_flags([True] + [False] * 39), with_flags([False] * 40))
    assert better.outcome == PASS and "informative" not in better.numbers
    worse = gate.check(with_flags([False] * 40), with_flags([True] * 10 + [False] * 30))
    assert worse.outcome == "fail" and not worse.passed


def test_gate_views_from_the_registry_keep_the_outcome():
    from tailorml.registry.models import GateResult

    view = GateResult("certified_robustness", True, {"informative": False}, "not informative: …")
    assert view.outcome == "not informative"
    assert GateResult("general_floor", False, {}, "").outcome == "fail"


def test_unknown_gate_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown gate.*robustness.*valid: safety"):
        build_gates(SoftConfig(gates=["robustness"]))


def readings(cgm):
    return pd.DataFrame(
        {
            "time": START + pd.to_timedelta(np.arange(len(cgm)) * 3, unit="min"),
            "cgm": np.asarray(cgm, dtype=float),
        }
    )


def test_data_gate_refuses_two_days_of_data():
    day = [120.0] * 200 + [60.0] * 10 + [120.0] * 150 + [300.0] * 10 + [120.0] * 110
    result = data_sufficiency(readings(day * 2), AlertPolicy(sample_minutes=3), SoftConfig())
    assert not result.passed
    assert result.numbers["days"] == pytest.approx(2.0)
    assert result.numbers["hypo_events"] == 2 and result.numbers["hyper_events"] == 2
    assert "2.0 days of data, need 7" in result.reason
    assert "hypo events" in result.reason  # 2 < 3


def test_data_gate_accepts_enough_representative_data():
    day = [120.0] * 200 + [60.0] * 10 + [120.0] * 150 + [300.0] * 10 + [120.0] * 110
    assert data_sufficiency(readings(day * 8), AlertPolicy(sample_minutes=3), SoftConfig()).passed


def test_stress_traces_are_dangerous_by_construction():
    traces = stress_traces(40, 3)
    assert len(traces) == 15
    for trace in traces:
        if trace.kind == "falling fast":
            slope = (trace.cgm[-1] - trace.cgm[-11]) / 30  # mg/dL per minute, last 30 min
            assert (
                trace.cgm[-1] >= 80 and trace.cgm[-1] + 10 * slope <= 70
            )  # reaches 70 within 10 min
        else:
            assert trace.cgm[-1] < 70
    x = stress_inputs(traces, ["cgm", "insulin"])
    assert x.shape == (15, 2, 40) and not x[:, 1].any()
