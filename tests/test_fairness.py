"""Group and trait fairness, paired tests and the roll-out check on toy tables computed by
hand."""

import numpy as np
import pandas as pd
import pytest

from tailorml.evaluate.fairness import (
    gap_change_interval,
    group_fairness,
    personalization_fairness,
    spread_p_value,
    trait_correlations,
)
from tailorml.soft.rollout import check_rollout


def two_groups() -> pd.DataFrame:
    # group x: sensitivities 1.0, 0.8 (mean 0.9); group y: 0.6, 0.4 (mean 0.5)
    return pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d"],
            "group": ["x", "x", "y", "y"],
            "hypo_sensitivity": [1.0, 0.8, 0.6, 0.4],
            "false_alerts_per_day": [1.0, 3.0, 0.0, 0.0],
        }
    )


def test_metric_frame_gap_ratio_and_worst_group_on_two_groups():
    table = group_fairness(two_groups(), metrics=["hypo_sensitivity", "false_alerts_per_day"])
    sens = table.set_index("metric").loc["hypo_sensitivity"]
    assert sens["gap"] == pytest.approx(0.4)  # 0.9 - 0.5
    assert sens["ratio"] == pytest.approx(0.5 / 0.9)
    assert sens["worst_group"] == "y" and sens["worst_value"] == pytest.approx(0.5)
    assert sens["gap_low"] <= 0.4 <= sens["gap_high"]
    false = table.set_index("metric").loc["false_alerts_per_day"]
    assert false["worst_group"] == "x"  # more false alerts is worse: mean 2.0 vs 0.0
    assert false["gap"] == pytest.approx(2.0)


def test_nan_never_counts_as_a_value():
    frame = two_groups()
    frame.loc[3, "hypo_sensitivity"] = np.nan  # d has no event: group y is just c (0.6)
    sens = group_fairness(frame, metrics=["hypo_sensitivity"]).iloc[0]
    assert sens["gap"] == pytest.approx(0.3)
    assert np.isnan(sens["gap_low"])  # one individual in y: no interval


def test_trait_rank_correlation_is_one_for_a_monotone_relation():
    traits = pd.DataFrame({"body_weight_kg": [40.0, 50.0, 60.0, 70.0]}, index=list("dcba"))
    table = trait_correlations(two_groups(), traits, metrics=["hypo_sensitivity"])
    assert table.iloc[0]["rho"] == pytest.approx(1.0)  # heavier -> higher sensitivity


def test_spread_test_on_a_hand_example():
    before = pd.Series([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], index=list("abcdefg"))
    after = pd.Series([0.2, 0.8, 0.3, 0.7, 0.1, 0.9, 0.5], index=list("abcdefg"))
    # distances to the median: before all 0; after 0.3, 0.3, 0.2, 0.2, 0.4, 0.4, 0
    # -> six positive differences, the exact two-sided Wilcoxon p is 2 / 2**6
    assert spread_p_value(after, before) == pytest.approx(2 / 64)
    assert spread_p_value(before, before) == 1.0


def test_gap_change_interval_is_zero_when_nothing_changes_and_positive_when_a_group_falls():
    groups = pd.Series(["x", "x", "y", "y"], index=list("abcd"))
    before = pd.Series([0.9, 0.9, 0.9, 0.9], index=list("abcd"))
    assert gap_change_interval(before, before, groups) == (0.0, 0.0)
    after = pd.Series([0.9, 0.9, 0.5, 0.5], index=list("abcd"))  # group y loses 0.4
    low, high = gap_change_interval(after, before, groups)
    assert low == pytest.approx(0.4) and high == pytest.approx(0.4)


def test_personalization_fairness_reports_before_and_after():
    index = pd.MultiIndex.from_tuples(
        [(m, s, i) for m, s in (("baseline", "B"), ("tl", "TL")) for i in "abcd"],
        names=["method", "setting", "individual"],
    )
    values = pd.DataFrame({"hypo_sensitivity": [1, 1, 1, 1, 1, 1, 0.5, 0.5]}, index=index)
    groups = pd.Series(["x", "x", "y", "y"], index=list("abcd"))
    row = personalization_fairness(values, groups, "baseline", ["hypo_sensitivity"]).iloc[0]
    assert row["setting"] == "TL"
    assert row["gap_before"] == 0.0 and row["gap_after"] == pytest.approx(0.5)
    assert row["worst_group_after"] == "y" and row["worst_value_after"] == 0.5


def test_individuals_without_a_group_are_left_out_of_the_personalization_gaps():
    """A trait the source does not state (t1d_uom's HbA1c) left a missing group, which
    fairlearn refuses: those individuals are left out, the others compared."""
    index = pd.MultiIndex.from_tuples(
        [(m, s, i) for m, s in (("baseline", "B"), ("tl", "TL")) for i in "abcde"],
        names=["method", "setting", "individual"],
    )
    values = pd.DataFrame({"hypo_sensitivity": [1, 1, 1, 1, 0.2, 1, 1, 0.5, 0.5, 0.0]}, index=index)
    groups = pd.Series(["x", "x", "y", "y"], index=list("abcd"))  # e: not stated
    row = personalization_fairness(values, groups, "baseline", ["hypo_sensitivity"]).iloc[0]
    assert row["gap_before"] == 0.0 and row["gap_after"] == pytest.approx(0.5)
    assert row["sd_after"] == pytest.approx(np.std([1, 1, 0.5, 0.5], ddof=1))  # without e


def test_rollout_holds_back_the_group_whose_worst_case_fell():
    table = pd.DataFrame(
        {
            "group": ["x", "x", "y", "y"],
            "sensitivity_before": [1.0, 0.8, 1.0, 1.0],
            "sensitivity_after": [1.0, 0.9, 1.0, 0.6],  # x: worst 0.8 -> 0.9; y: 1.0 -> 0.6
        }
    )
    check = check_rollout(table)
    assert check.held_back == ["y"]
    deployed = check.deployed(table, "sensitivity_before", "sensitivity_after")
    assert deployed.tolist() == [1.0, 0.9, 1.0, 1.0]
    assert check_rollout(table, tolerance=0.5).held_back == []  # a fall of 0.4 is tolerated
    with pytest.raises(ValueError, match="tolerance"):
        check_rollout(table, tolerance=float("nan"))


def test_an_evaluation_writes_its_fairness_tables(trained, tmp_path):
    from tailorml.evaluate.individuals import write_fairness

    per_individual = pd.DataFrame(
        {
            "patient_id": ["adolescent-003", "adult-008", "child-004"],
            "group": ["adolescent", "adult", "child"],
            "skipped": ["", "", ""],
            "hypo_sensitivity": [1.0, 0.5, 0.75],
        }
    )
    write_fairness(tmp_path, per_individual, trained.prepared)
    table = pd.read_csv(tmp_path / "fairness.csv")
    assert table.loc[0, "gap"] == pytest.approx(0.5) and table.loc[0, "worst_group"] == "adult"
    traits = pd.read_csv(tmp_path / "fairness_traits.csv")
    assert set(traits["trait"]) <= {
        "body_weight_kg",
        "insulin_sensitivity_vmx",
        "total_daily_insulin_u",
        "age_years",
    }
    assert len(traits)  # the simulated cohort carries its traits


def test_a_categorical_trait_of_the_cohort_file_gets_its_own_group_table(trained, tmp_path):
    import dataclasses
    from types import SimpleNamespace

    from tailorml.evaluate.individuals import write_fairness

    sex = {"adolescent-003": "f", "adult-008": "m", "child-004": "f"}
    people = [
        dataclasses.replace(person, categories={"sex": sex[person.id]})
        for person in trained.prepared.cohort.individuals
        if person.id in sex
    ]
    prepared = SimpleNamespace(cohort=SimpleNamespace(individuals=people))
    per_individual = pd.DataFrame(
        {
            "patient_id": list(sex),
            "group": ["adolescent", "adult", "child"],
            "skipped": ["", "", ""],
            "hypo_sensitivity": [1.0, 0.5, 0.75],
        }
    )
    write_fairness(tmp_path, per_individual, prepared)
    table = pd.read_csv(tmp_path / "fairness.csv").set_index("trait")
    assert table.loc["group", "gap"] == pytest.approx(0.5)  # 1.0 (adolescent) - 0.5 (adult)
    # f: (1.0 + 0.75) / 2 = 0.875, m: 0.5
    assert table.loc["sex", "gap"] == pytest.approx(0.375)
    assert table.loc["sex", "worst_group"] == "m"


def test_experiment_fairness_by_age_group_and_by_a_categorical_trait():
    from tailorml.experiment.fairness import add_gap_columns, experiment_fairness

    rows = []
    sensitivity = {"B": [1, 1, 1, 1], "TL": [1, 0.5, 1, 0.5]}
    for method, setting in (("baseline", "B"), ("tl", "TL")):
        for k, individual in enumerate("abcd"):
            rows.append(
                {
                    "method": method,
                    "setting": setting,
                    "individual": individual,
                    "group": "xxyy"[k],
                    "seed": 0,
                    "status": "ok",
                    "hypo_sensitivity": sensitivity[setting][k],
                }
            )
    results = pd.DataFrame(rows)
    categories = pd.DataFrame({"sex": ["f", "m", "f", "m"]}, index=list("abcd"))
    table = experiment_fairness(results, "baseline", categories=categories)
    by = table.set_index("trait")
    # age groups x = {a, b}, y = {c, d}: after 0.75 and 0.75, no gap
    assert by.loc["group", "gap_after"] == pytest.approx(0.0)
    # sex f = {a, c}: 1.0, m = {b, d}: 0.5 -> a gap of 0.5, the worst group m
    assert by.loc["sex", "gap_after"] == pytest.approx(0.5)
    assert by.loc["sex", "worst_group_after"] == "m"
    summary = pd.DataFrame({"method": ["baseline", "tl"], "setting": ["B", "TL"]})
    gaps = add_gap_columns(summary, table, "baseline")  # Table I keeps the age-group gap
    assert gaps["hypo_sensitivity_group_gap"].tolist() == [0.0, 0.0]
