"""The experiment's robustness table: sensor faults against the clean test period, life
changes against the same new days unchanged, and each method's drops against the
reference method's."""

import numpy as np
import pandas as pd
import pytest

from tailorml.experiment.generalization import robustness_table


def results() -> pd.DataFrame:
    rows = []
    # (method, individual): clean hypo sensitivity, under dropouts, new days unchanged, meals
    values = {
        ("baseline", "a"): (1.0, 0.5, 0.8, 0.6),
        ("baseline", "b"): (0.5, 0.5, 1.0, 1.0),
        ("transfer", "a"): (1.0, 1.0, 0.9, 0.3),
        ("transfer", "b"): (1.0, 0.5, 1.0, 0.5),
    }
    for (method, individual), (clean, faulted, unchanged, meals) in values.items():
        rows.append(
            {
                "method": method,
                "setting": method,
                "individual": individual,
                "seed": 0,
                "status": "ok",
                "hypo_sensitivity": clean,
                "dropouts__hypo_sensitivity": faulted,
                "life_unchanged__hypo_sensitivity": unchanged,
                "life_meals__hypo_sensitivity": meals,
                # growth: only individual b is a child (NaN for a)
                "life_growth__hypo_sensitivity": np.nan if individual == "a" else meals,
            }
        )
    return pd.DataFrame(rows)


def test_faults_drop_from_the_clean_period_and_life_changes_from_the_unchanged_days():
    table = robustness_table(results(), "baseline").set_index(["setting", "shift"])
    assert set(table.index.get_level_values("shift")) == {"dropouts", "life_meals", "life_growth"}
    # baseline dropouts: (0.5 - 1.0 + 0.5 - 0.5) / 2; meals: (0.6 - 0.8 + 1.0 - 1.0) / 2
    assert table.loc[("baseline", "dropouts"), "drop"] == pytest.approx(-0.25)
    assert table.loc[("baseline", "dropouts"), "clean"] == pytest.approx(0.75)
    assert table.loc[("baseline", "dropouts"), "reference"] == "clean"
    assert table.loc[("baseline", "life_meals"), "drop"] == pytest.approx(-0.1)
    assert table.loc[("baseline", "life_meals"), "clean"] == pytest.approx(0.9)
    assert table.loc[("baseline", "life_meals"), "reference"] == "life_unchanged"
    # transfer meals: (0.3 - 0.9 + 0.5 - 1.0) / 2
    assert table.loc[("transfer", "life_meals"), "drop"] == pytest.approx(-0.55)
    # two pairs of drops against the reference's: p exists (no p for the reference itself)
    assert np.isfinite(table.loc[("transfer", "life_meals"), "drop_vs_reference_p"])
    assert np.isnan(table.loc[("baseline", "life_meals")].get("drop_vs_reference_p", np.nan))

    # a shift some individuals do not have: means over the individuals that have it
    growth = table.loc[("transfer", "life_growth")]
    assert growth["clean"] == pytest.approx(1.0) and growth["shifted"] == pytest.approx(0.5)
    assert growth["drop"] == pytest.approx(-0.5)
