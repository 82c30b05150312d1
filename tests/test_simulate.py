import json

import numpy as np
import pandas as pd
import pytest

from tailorml.config import SimulationConfig
from tailorml.data import simulate
from tailorml.data.cohort import default_cohort_path
from tailorml.data.simulate import metadata_path, simulate_cohort, simulate_patient


def shipped_scenario() -> SimulationConfig:
    metadata = json.loads(metadata_path(default_cohort_path()).read_text())
    return SimulationConfig.model_validate_json(json.dumps(metadata["scenario"]))


def test_regenerating_six_hours_matches_the_shipped_cohort_exactly():
    shipped = pd.read_parquet(default_cohort_path())
    expected = shipped[shipped["patient_id"] == "child-001"].head(72).reset_index(drop=True)
    frame, _ = simulate_patient("child#001", shipped_scenario(), minutes=6 * 60)
    assert len(frame) == 72  # 6 h of 5-min readings
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)


def test_same_seed_same_data_other_seed_other_data():
    config = SimulationConfig(days=1)
    first, info = simulate_patient("adult#002", config, minutes=180)
    again, _ = simulate_patient("adult#002", config, minutes=180)
    other, _ = simulate_patient("adult#002", SimulationConfig(days=1, seed=7), minutes=180)
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    assert not np.array_equal(first["cgm"].to_numpy(), other["cgm"].to_numpy())
    assert set(info["behaviour"]) == {"carb_bias", "basal_factor", "correction_gain", "meal_scale"}


def test_pump_occlusion_delivers_no_insulin():
    config = SimulationConfig(days=1, occlusion_per_week=7.0, dropout_per_day=0.0)
    frame, _ = simulate_patient("adult#003", config)
    plan = simulate.scenario.draw_day(
        config,
        simulate.scenario.draw_behaviour(config, "adult", simulate._rng(config, 12, 0)),
        0,
        simulate._rng(config, 12, 1, 0),
    )
    ((start, end),) = plan.occlusions
    minutes_of_row = np.arange(len(frame)) * 5
    # a row holds the insulin of the 5 minutes before it
    inside = (minutes_of_row - 5 >= start) & (minutes_of_row <= min(end, 1440))
    assert inside.sum() > 10
    assert (frame.loc[inside, "insulin"] == 0).all()
    assert (frame.loc[~inside & (minutes_of_row > 0), "insulin"] > 0).all()


def test_unknown_patient_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown virtual patient 'adult-099'.*adult-001"):
        simulate.resolve_patients(["adult-099"])


def test_cohort_simulation_resumes_after_a_failure(tmp_path, monkeypatch):
    config = SimulationConfig(days=1, patients=["child-002", "child-003"], engine="reference")
    out = tmp_path / "cohort.parquet"
    real = simulate._simulate_to_part

    def fail_on_second(name, config_json, part):
        if name == "child#003":
            raise RuntimeError("killed")
        return real(name, config_json, part)

    monkeypatch.setattr(simulate, "_simulate_to_part", fail_on_second)
    with pytest.raises(RuntimeError, match="killed"):
        simulate_cohort(config, out, workers=1)
    assert not out.exists()  # nothing half-written where the result belongs

    monkeypatch.setattr(simulate, "_simulate_to_part", real)
    seen = []
    simulate_cohort(config, out, workers=1, on_patient_done=lambda n, r: seen.append((n, r)))
    assert ("child#002", True) in seen and ("child#003", False) in seen
    cohort = pd.read_parquet(out)
    assert cohort["patient_id"].unique().tolist() == ["child-002", "child-003"]
    assert len(cohort) == 2 * 288
    metadata = json.loads(metadata_path(out).read_text())
    assert metadata["synthetic"] is True and metadata["patients"] == ["child-002", "child-003"]
    assert not (tmp_path / "cohort.parquet.parts").exists()

    seen.clear()
    simulate_cohort(config, out, workers=1, on_patient_done=lambda n, r: seen.append((n, r)))
    assert seen == [("child#002", True), ("child#003", True)]  # up to date: nothing redone


def test_out_csv_writes_csv_that_loads_and_other_suffixes_are_refused(tmp_path):
    from tailorml.data.cohort import load_cohort
    from tailorml.data.simulate import BAD_OUT_SUFFIX
    from tailorml.errors import ConfigError

    config = SimulationConfig(days=1, patients=["child-002"], engine="reference")  # fastest for 1
    out = simulate_cohort(config, tmp_path / "o.csv", workers=1)
    assert out.read_bytes().startswith(b"patient_id,")  # text, not Parquet bytes
    cohort = load_cohort(out)
    assert cohort.ids == ["child-002"] and len(cohort.readings) == 288  # 1 day of 5-min
    assert cohort.synthetic  # o.json beside it
    for name in ("o.txt", "o", "o.parquet.bak"):
        with pytest.raises(ConfigError) as error:
            simulate_cohort(config, tmp_path / name, workers=1)
        suffix = (tmp_path / name).suffix
        assert str(error.value) == BAD_OUT_SUFFIX.format(path=tmp_path / name, suffix=suffix)
        assert not (tmp_path / f"{name}.parts").exists()  # refused before any work
