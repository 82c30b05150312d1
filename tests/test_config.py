import pytest

from tailorml.config import Config, config_from_dict, load_config, to_toml
from tailorml.errors import ConfigError


def test_defaults_round_trip_through_toml(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(to_toml(Config()))
    assert load_config(path) == Config()


def test_toml_file_overrides_only_the_keys_it_names(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[train]\nepochs = 3\n[task]\nchannels = ['cgm', 'insulin']\n")
    config = load_config(path)
    assert config.train.epochs == 3
    assert config.task.channels == ["cgm", "insulin"]
    assert config.train.batch_size == Config().train.batch_size


def test_unknown_key_is_rejected_with_its_dotted_name():
    with pytest.raises(ConfigError, match=r"unknown key 'train\.epoch'"):
        config_from_dict({"train": {"epoch": 3}})


def test_unknown_section_is_rejected():
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        config_from_dict({"trian": {"epochs": 3}})


def test_wrong_type_names_the_key_and_the_value():
    with pytest.raises(ConfigError, match=r"'train\.epochs'.*got '3'"):
        config_from_dict({"train": {"epochs": "3"}})


def test_float_is_not_silently_truncated_to_int():
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        config_from_dict({"train": {"epochs": 2.5}})


def test_invalid_channel_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="'cgm', 'insulin' or 'cho'"):
        config_from_dict({"task": {"channels": ["cgm", "heart_rate"]}})


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match="must be 1"):
        config_from_dict({"split": {"train": 0.5, "val": 0.2, "test": 0.2}})


def test_reversed_range_is_rejected():
    with pytest.raises(ConfigError, match="late_bolus_minutes"):
        config_from_dict({"simulation": {"late_bolus_minutes": [60, 15]}})


def test_missing_file_and_bad_toml_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
