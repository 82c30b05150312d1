"""The shipped real cohorts (`tailorml.data.real`): loading by name, the counted handling of
artefacts, codes and conflicting sensors, and the traits fairness groups by."""

import numpy as np
import pandas as pd
import pytest

from tailorml.data import real
from tailorml.data.cohort import load_cohort
from tailorml.errors import CohortError

PEOPLE_COLUMNS = "patient_id,dataset,age_years,sex,hba1c_percent,cgm_device,licence\n"


@pytest.fixture
def tiny_azt1d(tmp_path, monkeypatch):
    """A two-person "azt1d" in the shipped layout, small enough to count by hand."""
    start = pd.Timestamp("2024-03-01 00:02:00")
    minutes = np.arange(8) * 5.0
    a = pd.DataFrame(
        {
            "patient_id": "A",
            "time": start + pd.to_timedelta(minutes, unit="min"),
            # 1.8 is an artefact; 39 is Dexcom's Low code
            "cgm": [120.0, 118.0, 1.8, 110.0, 39.0, 100.0, 98.0, 97.0],
            # 2 U, and 476.6 U with a 1,430 g meal (an entry no person takes at once)
            "insulin": [np.nan, 2.0, np.nan, np.nan, np.nan, 476.6, np.nan, np.nan],
            "cho": [30.0, np.nan, np.nan, np.nan, np.nan, 1430.0, np.nan, np.nan],
        }
    )
    # B wears two sensors for one reading: 150 and 230 one minute apart
    b = pd.DataFrame(
        {
            "patient_id": "B",
            "time": start + pd.to_timedelta([0, 5, 6, 10, 15], unit="min"),
            "cgm": [150.0, 152.0, 230.0, 149.0, 401.0],
            "insulin": np.nan,
            "cho": np.nan,
        }
    )
    pd.concat([a, b]).to_parquet(tmp_path / "azt1d.parquet", index=False)
    (tmp_path / "azt1d_people.csv").write_text(
        PEOPLE_COLUMNS + "A,azt1d,65,male,7.2,Dexcom G6 Pro,CC BY 4.0\n"
        "B,azt1d,39,female,,Dexcom G6 Pro,CC BY 4.0\n"
    )
    monkeypatch.setattr(real, "real_folder", lambda: tmp_path)
    real._real_frame.cache_clear()
    yield
    real._real_frame.cache_clear()


def test_artefacts_become_missing_codes_are_kept_and_both_are_counted(tiny_azt1d):
    cohort = load_cohort("azt1d")
    a = cohort.of("A")
    np.testing.assert_array_equal(
        a["cgm"].to_numpy(), [120.0, 118.0, np.nan, 110.0, 39.0, 100.0, 98.0, 97.0]
    )
    assert cohort.notes["artefact_readings_blanked"] == 1
    assert cohort.notes["low_codes"] == 1 and cohort.notes["high_codes"] == 1
    # carbs at 00:02 fall in the interval ending at the first slot, insulin at the second
    assert a["cho"].tolist()[:2] == [30.0, 0.0] and a["insulin"].tolist()[:2] == [0.0, 2.0]
    assert a["insulin"].sum() == 2.0 and a["cho"].sum() == 30.0  # the implausible dropped
    assert cohort.notes["implausible_insulin_events_dropped"] == 1
    assert cohort.notes["implausible_cho_events_dropped"] == 1
    assert not cohort.synthetic and cohort.metadata["retrospective"]


def test_two_sensors_that_disagree_leave_their_slot_missing(tiny_azt1d):
    b = load_cohort("azt1d").of("B")
    np.testing.assert_array_equal(b["cgm"].to_numpy(), [150.0, np.nan, 149.0, 401.0])


def test_people_tables_become_groups_and_traits(tiny_azt1d):
    cohort = load_cohort("azt1d")
    a, b = cohort.individual("A"), cohort.individual("B")
    assert (a.group, b.group) == ("60+", "18-39")
    assert a.traits == {"age_years": 65.0, "hba1c_percent": 7.2}
    assert a.categories == {
        "sex": "male",
        "dataset": "azt1d",
        "sensor": "Dexcom G6 Pro",
        "hba1c_band": "HbA1c >= 7 %",
    }
    assert "hba1c_band" not in b.categories  # not stated: no band, never a guess


def test_a_sensor_the_source_does_not_name_is_described_by_its_sampling():
    times = pd.Series(pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(20) * 15, "min"))
    assert real.sampling_of(times) == "15-min sensor"
    mixed = pd.concat(
        [times, pd.Series(times.iloc[-1] + pd.to_timedelta(np.arange(1, 21) * 5, "min"))]
    )
    assert real.sampling_of(mixed) == "mixed 5/15-min sensors"


def test_the_shipped_physiocgm_cohort_loads_with_its_documented_counts():
    cohort = load_cohort("physiocgm")
    assert len(cohort.individuals) == 9 and cohort.sample_minutes == 5
    # the data README: 218 Dexcom Low readings (39); one reading of 28 mg/dL
    assert cohort.notes["low_codes"] == 218
    assert cohort.notes["artefact_readings_blanked"] == 1
    assert {person.categories["sensor"] for person in cohort.individuals} == {"Dexcom G6"}
    assert "insulin" not in cohort.readings  # physiocgm has CGM only


def test_real_pools_all_three_datasets_with_their_people_and_age_bands():
    cohort = load_cohort("real")
    people = pd.concat(real.people_table(name) for name in real.DATASETS)
    assert sorted(cohort.ids) == sorted(people["patient_id"])
    bands = pd.cut(people["age_years"], [0, 40, 60, 200], right=False).value_counts()
    expected = dict(zip(["18-39", "40-59", "60+"], bands.sort_index().tolist(), strict=True))
    groups = pd.Series([person.group for person in cohort.individuals]).value_counts()
    assert groups.to_dict() == expected
    assert "insulin" not in cohort.readings  # only azt1d records insulin and carbs
    assert set(cohort.metadata["datasets"]) == set(real.DATASETS)


def test_an_unknown_cohort_name_lists_the_shipped_ones():
    with pytest.raises(CohortError, match="a shipped cohort is one of real, azt1d"):
        load_cohort("reall")
