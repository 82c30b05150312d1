import pytest

from tailorml.config import Config, config_from_dict, load_config, to_toml
from tailorml.errors import ConfigError


def test_defaults_round_trip_through_toml(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(to_toml(Config()))
    assert load_config(path) == Config()


def test_unset_keys_are_shown_as_comments_and_read_back_unset(tmp_path):
    text = to_toml(Config())
    for line in (
        "# max_days = (unset) -- keep only the first days",
        "# gap_minutes = (unset) -- unset = window + horizon (the minimum that prevents leakage)",
        "# max_individuals = (unset) -- the first N only",
        "# required_classes = (unset) -- classes D_I must contain; unset = all",
    ):
        assert line in text.splitlines()
    split = text.split("[split]")[1].split("\n[")[0]  # the comment sits in its own table
    assert "# gap_minutes" in split
    path = tmp_path / "config.toml"
    path.write_text(to_toml(config_from_dict({"split": {"gap_minutes": 40}})))
    assert "gap_minutes = 40" in path.read_text()
    assert "# gap_minutes" not in path.read_text()
    assert load_config(path).split.gap_minutes == 40


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
    with pytest.raises(ConfigError, match="'cgm', 'insulin', 'cho', 'iob' or 'cob'"):
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


def _float_keys(model, prefix=""):
    """Dotted keys of every float-valued field (plain, optional or tuple of floats)."""
    from pydantic import BaseModel

    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from _float_keys(value, key + ".")
        elif (
            isinstance(value, dict)
            and value
            and all(isinstance(v, BaseModel) for v in value.values())
        ):
            for item, sub in value.items():
                yield from _float_keys(sub, f"{key}.{item}.")
        elif "float" in str(info.annotation) and not isinstance(value, dict):  # grids: below
            yield key


def _nested(key, value):
    data = value
    for part in reversed(key.split(".")):
        data = {part: data}
    return data


FLOAT_KEYS = list(_float_keys(Config()))


def test_every_float_field_was_found():
    assert {"train.learning_rate", "robust.eps_grid", "simulation.meals.lunch.grams"} <= set(
        FLOAT_KEYS
    )
    assert len(FLOAT_KEYS) > 50


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_no_float_field_accepts_inf_or_nan(key, bad):
    current = Config().to_dict()
    for part in key.split("."):
        current = current[part]
    value = [bad] * max(1, len(current)) if isinstance(current, list) else bad
    with pytest.raises(ConfigError, match=rf"'{key}(\.0)?': Input should be a finite number"):
        config_from_dict(_nested(key, value))


def test_non_finite_method_grid_values_are_refused_on_one_line():
    with pytest.raises(ConfigError) as error:
        config_from_dict({"methods": {"transfer": {"n": [float("inf")]}}})
    lines = str(error.value).splitlines()
    assert lines[1] == "  - 'methods.transfer.n.0': Input should be a finite number (got inf)"
    assert len(lines) == 3


def test_infinite_learning_rate_from_toml_names_the_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlearning_rate = inf\n")
    with pytest.raises(ConfigError, match=r"'train\.learning_rate': Input should be a finite"):
        load_config(path)


@pytest.mark.parametrize("channels", [[0], [16, 0], [-4], []])
def test_conv_channels_must_be_positive_and_present(channels):
    with pytest.raises(ConfigError, match=r"model\.conv_channels"):
        config_from_dict({"model": {"conv_channels": channels}})


@pytest.mark.parametrize("key", ["run", "experiment"])
@pytest.mark.parametrize("name", ["/../../../x", "../x", "a/b", "..", ".hidden", ""])
def test_names_that_become_directories_must_be_safe(key, name):
    from tailorml.io import UNSAFE_NAME

    with pytest.raises(ConfigError) as error:
        config_from_dict({key: {"name": name}})
    assert f"'{key}.name': " + UNSAFE_NAME.format(what="name", name=name) in str(error.value)


def test_a_non_utf8_file_is_named_with_the_fix(tmp_path):
    from tailorml.config import NOT_UTF8

    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[run]\nname = 'caf\xe9'\n")  # 'é' in Latin-1 is the byte 0xE9 at 17
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == NOT_UTF8.format(path=path, position=17)


def test_a_utf8_byte_order_mark_is_not_a_toml_error(tmp_path):
    path = tmp_path / "notepad.toml"
    path.write_bytes(b"\xef\xbb\xbf[train]\nepochs = 3\n")  # Windows Notepad's UTF-8
    assert load_config(path).train.epochs == 3


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (
            {"transfer": {"n": []}},
            "[methods.transfer] n = [] gives the method no setting to run; list at least one "
            "value, or remove [methods.transfer]",
        ),
        (
            {"transfer": {"n": [10, 300, 10]}},
            "[methods.transfer] n repeats 10; list each value once",
        ),
    ],
)
def test_a_method_grid_with_no_or_a_repeated_value_is_refused(grid, message):
    """n = [] made the method vanish from the results; a repeated value ran one setting
    and counted it as two."""
    from tailorml.personalize.grid import expand

    with pytest.raises(ConfigError) as error:
        expand(config_from_dict({"methods": {"baseline": {}, **grid}}).methods)
    assert str(error.value) == message


def test_repeated_seeds_are_refused():
    """[0, 0] ran seed 0 once: the run had fewer seeds than the config said."""
    with pytest.raises(ConfigError, match=r"'experiment.seeds': seeds repeat \[0\]"):
        config_from_dict({"experiment": {"seeds": [0, 1, 0]}})


def test_an_empty_methods_table_is_a_config_error():
    from tailorml.personalize.grid import EMPTY_TABLE, expand

    with pytest.raises(ConfigError) as error:
        expand(config_from_dict({"methods": {}}).methods)
    assert str(error.value) == EMPTY_TABLE.format(table="methods")
    with pytest.raises(ConfigError, match=r"\[soft\.candidates\] table is empty"):
        expand({}, table="soft.candidates")


def test_thresholds_must_lie_strictly_between_0_and_1_and_a_config_folder_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"'soft\.thresholds\.1'"):
        config_from_dict({"soft": {"thresholds": [0.5, 1.5]}})
    with pytest.raises(ConfigError, match=r"'soft\.thresholds'"):
        config_from_dict({"soft": {"thresholds": []}})
    assert config_from_dict({"soft": {"thresholds": [0.3, 0.97]}}).soft.thresholds == [0.3, 0.97]
    with pytest.raises(ConfigError, match="is a folder; pass the TOML config file inside it"):
        load_config(tmp_path)


def test_a_simulation_start_that_is_not_iso_is_a_config_error():
    """It passed the config and crashed in the simulator (ValueError traceback)."""
    with pytest.raises(ConfigError, match=r"'simulation\.start': start 'yesterday' is not an ISO"):
        config_from_dict({"simulation": {"start": "yesterday"}})
    assert config_from_dict({"simulation": {"start": "2025-03-01"}}).simulation.start
