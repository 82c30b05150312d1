import numpy as np
import pandas as pd
import pytest

from conftest import cohort_frame
from tailorml.data.cohort import AMBIGUOUS_DATES, MIXED_SAMPLING, default_cohort_path, load_cohort
from tailorml.errors import CohortError


def test_the_default_cohort_is_the_real_one():
    cohort = load_cohort()
    assert cohort.source == "real" and not cohort.synthetic and len(cohort.individuals) == 51


def test_shipped_synthetic_cohort_is_the_30_patient_virtual_cohort():
    cohort = load_cohort("synthetic")
    assert cohort.source == str(default_cohort_path())
    assert cohort.synthetic
    assert cohort.sample_minutes == 5
    assert len(cohort.individuals) == 30
    groups = pd.Series([individual.group for individual in cohort.individuals]).value_counts()
    assert groups.to_dict() == {"adolescent": 10, "adult": 10, "child": 10}
    assert {"body_weight_kg", "age_years"} <= set(cohort.individuals[0].traits)
    for column in ("patient_id", "group", "time", "cgm", "bg", "cho", "insulin"):
        assert column in cohort.readings.columns
    # 14 days of 5-minute readings per patient
    assert (cohort.readings.groupby("patient_id").size() == 14 * 288).all()


def test_missing_required_column_names_file_and_columns(write_cohort):
    frame = cohort_frame({"a": [100.0] * 5}).drop(columns=["cgm"])
    path = write_cohort(frame)
    with pytest.raises(CohortError, match=r"cohort\.parquet: missing required column\(s\) cgm"):
        load_cohort(path)


def test_time_going_back_is_reported_with_patient_and_row(write_cohort):
    frame = cohort_frame({"a": [100.0] * 5})
    frame.loc[3, "time"] = frame.loc[1, "time"]
    with pytest.raises(CohortError, match=r"goes back in time for patient 'a' at row 3"):
        load_cohort(write_cohort(frame))


def test_duplicate_timestamp_is_reported(write_cohort):
    frame = cohort_frame({"a": [100.0] * 5})
    frame.loc[2, "time"] = frame.loc[1, "time"]
    with pytest.raises(CohortError, match="repeats"):
        load_cohort(write_cohort(frame))


def test_impossible_glucose_is_rejected_with_the_value(write_cohort):
    frame = cohort_frame({"a": [100.0, 100.0, -5.0, 100.0]})
    with pytest.raises(CohortError, match=r"impossible glucose.*row 2.*value -5"):
        load_cohort(write_cohort(frame))


def test_mmol_per_litre_gets_a_conversion_hint(write_cohort):
    frame = cohort_frame({"a": [5.5, 6.0, 7.2, 8.1]})
    with pytest.raises(CohortError, match=r"mmol/L.*18\.016"):
        load_cohort(write_cohort(frame))


def test_text_device_codes_are_rejected_with_a_fix(write_cohort):
    frame = cohort_frame({"a": [100.0] * 4})
    frame["cgm"] = frame["cgm"].astype(object)
    frame.loc[1, "cgm"] = "Low"
    with pytest.raises(CohortError, match=r"non-numeric.*'Low'"):
        load_cohort(write_cohort(frame, "cohort.csv"))


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(CohortError, match="not found"):
        load_cohort(tmp_path / "none.parquet")
    other = tmp_path / "cohort.xlsx"
    other.write_text("x")
    with pytest.raises(CohortError, match=r"must be \.parquet or \.csv"):
        load_cohort(other)


def test_nan_is_a_missing_reading_and_absent_slots_become_nan(write_cohort):
    frame = cohort_frame({"a": [100.0, np.nan, 110.0, 120.0, 130.0]})
    frame = frame.drop(index=3)  # the 09-minute reading is absent from the file
    cohort = load_cohort(write_cohort(frame, "cohort.csv"))
    readings = cohort.of("a")
    assert len(readings) == 5
    assert np.isnan(readings["cgm"].to_numpy()[[1, 3]]).all()
    assert readings["cgm"].to_numpy()[4] == 130.0
    assert cohort.notes["missing_slots_inserted"] == 1


def test_jittered_timestamps_snap_to_the_grid(write_cohort):
    frame = cohort_frame({"a": [100.0, 101.0, 102.0, 103.0]}, sample_minutes=5)
    frame.loc[2, "time"] += pd.Timedelta(seconds=40)
    cohort = load_cohort(write_cohort(frame))
    assert cohort.sample_minutes == 5
    steps = np.diff(cohort.of("a")["time"].to_numpy()) / np.timedelta64(1, "m")
    assert steps.tolist() == [5.0, 5.0, 5.0]


def test_unknown_individual_lists_the_valid_ones(write_cohort):
    path = write_cohort(cohort_frame({"a": [100.0] * 4, "b": [100.0] * 4}))
    with pytest.raises(CohortError, match=r"unknown individual.*z.*the file has a, b"):
        load_cohort(path, individuals=["z"])
    assert load_cohort(path, individuals=["b"]).ids == ["b"]


def _rows(patient, times):
    return pd.DataFrame({"patient_id": patient, "time": times, "cgm": 100.0})


@pytest.mark.parametrize("name", ["cohort.csv", "cohort.parquet"])
def test_ids_are_text_never_numbers(write_cohort, name):
    times = ["2025-01-06 00:00", "2025-01-06 00:05"]
    ids = ["001", "007", "7", "07.0"]
    frame = pd.concat([_rows(patient, times) for patient in ids], ignore_index=True)
    assert load_cohort(write_cohort(frame, name)).ids == ids


def test_a_consistent_day_first_column_is_read_day_first(write_cohort):
    times = ["05/01/2025 10:00", "05/01/2025 10:05", "25/01/2025 10:10"]  # 25 is no month
    cohort = load_cohort(write_cohort(_rows("a", times), "cohort.csv"))
    start = cohort.of("a")["time"]
    assert start.iloc[0] == pd.Timestamp("2025-01-05 10:00")
    assert start.iloc[-1] == pd.Timestamp("2025-01-25 10:10")


@pytest.mark.parametrize(
    ("times", "formats"),
    [
        (["05/01/2025 10:00", "05/01/2025 10:05"], "%d/%m/%Y %H:%M and %m/%d/%Y %H:%M"),
        (["01-02-2025 10:00:00", "01-02-2025 10:05:00"], "%d-%m-%Y %H:%M:%S and %m-%d-%Y %H:%M:%S"),
    ],
)
def test_ambiguous_day_month_dates_are_refused_naming_the_formats(write_cohort, times, formats):
    path = write_cohort(_rows("a", times), "cohort.csv")
    with pytest.raises(CohortError) as error:
        load_cohort(path)
    assert str(error.value) == AMBIGUOUS_DATES.format(
        path=path, formats=formats, row=0, value=times[0]
    )


def test_epoch_seconds_are_read_as_utc(write_cohort):
    # 1736150400 s = 2025-01-06T08:00:00Z; 5-min steps
    frame = _rows("a", [1736150400 + 300 * k for k in range(3)])
    cohort = load_cohort(write_cohort(frame, "cohort.csv"))
    assert cohort.sample_minutes == 5
    assert cohort.of("a")["time"].tolist() == [
        pd.Timestamp("2025-01-06 08:00"),
        pd.Timestamp("2025-01-06 08:05"),
        pd.Timestamp("2025-01-06 08:10"),
    ]


@pytest.mark.parametrize(
    ("scale", "hint"), [(1000, "milliseconds: divide by 1000"), (1e-6, "not Unix seconds")]
)
def test_epoch_times_outside_seconds_are_refused(write_cohort, scale, hint):
    frame = _rows("a", [int((1736150400 + 300 * k) * scale) for k in range(3)])
    with pytest.raises(CohortError, match=f"read as Unix epoch seconds.*{hint}"):
        load_cohort(write_cohort(frame, "cohort.csv"))


@pytest.mark.parametrize("name", ["cohort.csv", "cohort.parquet"])
def test_dst_fall_back_keeps_utc_order_and_counts_the_repeated_hour(write_cohort, name):
    # Berlin 2025-10-26: 02:00-02:55 happens twice (+02:00, then +01:00): 61 readings in 5 h
    times = pd.date_range("2025-10-26 00:00", "2025-10-26 04:00", freq="5min", tz="Europe/Berlin")
    assert len(times) == 61
    frame = _rows("a", [t.isoformat() for t in times] if name.endswith(".csv") else times)
    cohort = load_cohort(write_cohort(frame, name))
    readings = cohort.of("a")
    assert cohort.notes["local_time_repeats_dropped"] == 12  # the second 02:00-02:55
    assert len(readings) == 49  # 00:00 .. 04:00 local, every 5 min
    assert readings["time"].iloc[0] == pd.Timestamp("2025-10-26 00:00")
    assert readings["time"].iloc[-1] == pd.Timestamp("2025-10-26 04:00")


def test_dst_spring_forward_hour_is_missing_readings(write_cohort):
    times = pd.date_range("2025-03-30 00:00", "2025-03-30 04:00", freq="5min", tz="Europe/Berlin")
    assert len(times) == 37  # 02:00-02:55 does not exist
    cohort = load_cohort(write_cohort(_rows("a", [t.isoformat() for t in times]), "cohort.csv"))
    assert cohort.notes["missing_slots_inserted"] == 12
    assert len(cohort.of("a")) == 49


def test_mixed_offsets_and_utc_out_of_order(write_cohort):
    times = ["2025-01-06T10:00:00+01:00", "2025-01-06T09:05:00Z", "2025-01-06T10:10:00+01:00"]
    cohort = load_cohort(write_cohort(_rows("a", times), "cohort.csv"))
    # 09:00Z, 09:05Z, 09:10Z: wall times 10:00 (+01), 09:05 (Z) then 10:10 (+01)
    assert cohort.notes["local_time_repeats_dropped"] == 1
    backwards = ["2025-01-06T10:05:00+01:00", "2025-01-06T09:00:00Z"]
    with pytest.raises(CohortError, match=r"goes back in time \(in UTC\)"):
        load_cohort(write_cohort(_rows("a", backwards), "back.csv"))


def test_times_with_and_without_offset_are_refused(write_cohort):
    times = ["2025-01-06T00:00:00+01:00", "2025-01-06T00:05:00"]
    with pytest.raises(CohortError, match=r"mixes times with and without a UTC offset \(row 1"):
        load_cohort(write_cohort(_rows("a", times), "cohort.csv"))


def test_mixed_sampling_names_individuals_and_intervals(write_cohort):
    five = pd.date_range("2025-01-06", periods=7, freq="5min")
    fifteen = pd.date_range("2025-01-06", periods=3, freq="15min")
    frame = pd.concat(
        [_rows("a", five), _rows("b", fifteen), _rows("c", fifteen)], ignore_index=True
    )
    path = write_cohort(frame)
    with pytest.raises(CohortError) as error:
        load_cohort(path)
    assert str(error.value) == MIXED_SAMPLING.format(path=path, groups="5 min: a; 15 min: b, c")
    assert load_cohort(path, individuals=["b", "c"]).sample_minutes == 15


def test_an_infinite_dose_or_a_blank_id_is_refused(write_cohort):
    from tailorml.data.cohort import NOT_FINITE

    frame = cohort_frame({"p1": [120.0] * 10})
    frame.loc[3, "insulin"] = float("inf")
    path = write_cohort(frame, "inf.csv")
    with pytest.raises(CohortError) as error:
        load_cohort(path)
    assert str(error.value) == NOT_FINITE.format(path=path, column="insulin", count=1, row=3)
    frame = cohort_frame({" ": [120.0] * 10})
    with pytest.raises(CohortError, match="'patient_id' is blank at row 0"):
        load_cohort(write_cohort(frame, "blank.csv"))


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"), ("utf-8", b"\xef\xbb\xbf")],
)
def test_a_utf16_or_bom_csv_reads_like_utf8(tmp_path, encoding, bom):
    frame = cohort_frame({"Jürgen": [100.0, 110.0, np.nan, 130.0], "007": [90.0] * 4})
    path = tmp_path / "cohort.csv"
    path.write_bytes(bom + frame.to_csv(index=False).encode(encoding))
    cohort = load_cohort(path)
    assert cohort.ids == ["Jürgen", "007"]
    assert cohort.of("Jürgen")["cgm"].tolist()[:2] == [100.0, 110.0]
    assert np.isnan(cohort.of("Jürgen")["cgm"].iloc[2])


def test_a_latin1_csv_is_refused_naming_the_byte(tmp_path):
    path = tmp_path / "cohort.csv"
    path.write_bytes(cohort_frame({"Jürgen": [100.0, 110.0]}).to_csv(index=False).encode("latin-1"))
    offset = path.read_bytes().index(b"\xfc")
    with pytest.raises(CohortError, match=f"cohort.csv is not UTF-8 .*byte {offset} .*iconv"):
        load_cohort(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{garbage", "is not readable JSON"),
        (b"\xff\xfe\xfa", "is not readable JSON"),
        (b"[1, 2]", "is a JSON list, not an object"),
        (b'{"synthetic": "no"}', "has \"synthetic\": 'no', not true or false"),
        (b'{"real_individuals": "p1"}', "has \"real_individuals\": 'p1', not a list"),
    ],
)
def test_a_broken_metadata_file_beside_the_cohort_is_named(write_cohort, content, problem):
    path = write_cohort(cohort_frame({"p1": [100.0, 110.0]}))
    path.with_suffix(".json").write_bytes(content)
    with pytest.raises(CohortError) as error:
        load_cohort(path)
    assert str(error.value).startswith(f"{path.with_suffix('.json')} (the metadata beside")
    assert problem in str(error.value)


def test_a_metadata_folder_beside_the_cohort_is_named(write_cohort):
    path = write_cohort(cohort_frame({"p1": [100.0, 110.0]}))
    path.with_suffix(".json").mkdir()
    with pytest.raises(CohortError, match=r"cohort.json .* is a folder; fix it, or delete it"):
        load_cohort(path)
    path.with_suffix(".json").rmdir()
    (path.with_suffix(".json")).write_text('{"synthetic": true}')
    assert load_cohort(path).synthetic is True


def test_real_individuals_of_a_synthetic_cohort_are_not_called_simulated(write_cohort):
    path = write_cohort(cohort_frame({"p1": [100.0, 110.0], "me": [120.0, 130.0]}))
    path.with_suffix(".json").write_text('{"synthetic": true, "real_individuals": ["me"]}')
    cohort = load_cohort(path)
    assert cohort.synthetic
    assert cohort.is_synthetic("p1") and not cohort.is_synthetic("me")
    path.with_suffix(".json").write_text('{"synthetic": false, "real_individuals": ["me"]}')
    assert not load_cohort(path).is_synthetic("p1")


def test_an_insulin_or_carb_amount_no_person_takes_at_once_is_refused(write_cohort):
    frame = cohort_frame({"p1": [120.0] * 20}, sample_minutes=5)
    frame.loc[7, "insulin"] = 150.0  # 150 U in five minutes: a unit or column mistake
    with pytest.raises(CohortError, match=r"'insulin' has 150 U in one interval \(row 7"):
        load_cohort(write_cohort(frame))
    frame.loc[7, "insulin"] = 12.0
    frame.loc[3, "cho"] = 5000.0
    with pytest.raises(CohortError, match=r"'cho' has 5000 g in one interval \(row 3"):
        load_cohort(write_cohort(frame))


def test_a_raw_export_given_as_a_cohort_never_shows_the_name_in_its_header(tmp_path):
    """A LibreView export's preamble row becomes the header of a cohort CSV: the error
    names the schema's columns it has (none) and only counts the others."""
    export = tmp_path / "export.csv"
    export.write_text(
        "Glucose Data,Generated on,12-05-2026 10:00 UTC,Generated by,Jane Doe\n"
        "Device,Serial Number,Device Timestamp,Record Type,Historic Glucose mg/dL\n"
        "FreeStyle LibreLink,ABC-123,12-05-2026 09:00,0,104\n"
    )
    with pytest.raises(CohortError) as raised:
        load_cohort(export)
    message = str(raised.value)
    assert "Jane Doe" not in message and "Generated by" not in message
    assert "none of the schema's columns and 5 other column(s), not shown" in message
    assert "tailorml cohort import" in message


def test_a_directory_is_not_a_cohort_file(tmp_path):
    folder = tmp_path / "cohort.csv"
    folder.mkdir()
    with pytest.raises(CohortError, match=r"cohort\.csv is a directory; give a \.parquet"):
        load_cohort(folder)
