"""Names that become paths: user names are refused unless safe, data ids are encoded."""

import re

import pytest

from tailorml.errors import TailormlError
from tailorml.io import UNSAFE_NAME, decode_component, encode_component, safe_component

UNSAFE = ["/../../../x", "..", ".", "../x", "a/b", "a\\b", "", " x", ".hidden", "x y", "é", "a\0b"]


@pytest.mark.parametrize("name", ["demo", "table1", "run-2.v3_final", "A" * 100])
def test_safe_names_pass_unchanged(name):
    assert safe_component(name, "run.name") == name


@pytest.mark.parametrize("name", [*UNSAFE, "A" * 101])
def test_unsafe_names_are_refused_naming_the_key(name):
    with pytest.raises(TailormlError) as error:
        safe_component(name, "run.name")
    assert str(error.value) == UNSAFE_NAME.format(what="run.name", name=name)


def test_ids_encode_to_one_safe_component_by_hand():
    assert encode_component("child-001") == "child-001"
    assert encode_component("../../../x") == "%2E.%2F..%2F..%2Fx"
    assert encode_component("a/b") == "a%2Fb"
    assert encode_component("50%") == "50%25"
    assert encode_component("é") == "%C3%A9"
    assert encode_component(".") == "%2E"
    assert encode_component("Alice") == "%41lice"  # 'A' is byte 0x41
    assert encode_component("adult-001.v2") == "adult-001.v2"  # lower case stays readable


def test_ids_differing_only_in_case_get_names_that_differ_ignoring_case(tmp_path):
    """macOS and Windows file systems ignore case: "Alice" and "alice" must not be one file."""
    values = ["Alice", "alice", "ALICE", "aLiCe", "%41lice", "*", "%2a", "Z", "z"]
    names = [encode_component(value) for value in values]
    assert len({name.casefold() for name in names}) == len(values)
    assert [decode_component(name) for name in names] == values


@pytest.mark.parametrize("value", [*[u for u in UNSAFE if u], "007", "7", "07.0", "%2F", "a b"])
def test_encoding_is_safe_and_reversible_for_the_whole_class(value):
    encoded = encode_component(value)
    assert re.fullmatch(r"[A-Za-z0-9_%-][A-Za-z0-9._%-]*", encoded)  # no '/', no leading '.'
    assert encoded not in (".", "..")
    assert decode_component(encoded) == value


def test_distinct_ids_give_distinct_names():
    values = ["007", "7", "07.0", "a/b", "a%2Fb", "a_2Fb", "..", "%2E."]
    assert len({encode_component(value) for value in values}) == len(values)


def test_empty_and_overlong_ids_are_refused():
    with pytest.raises(TailormlError, match="empty id"):
        encode_component("")
    with pytest.raises(TailormlError, match="too long"):
        encode_component("/" * 67)  # 67 * 3 = 201 characters


def test_writing_onto_a_folder_or_inside_a_file_is_a_clear_error(tmp_path):
    from tailorml.io import TARGET_INSIDE_A_FILE, TARGET_IS_A_FOLDER, atomic_write_text

    (tmp_path / "folder").mkdir()
    with pytest.raises(TailormlError) as error:
        atomic_write_text(tmp_path / "folder", "x")
    assert str(error.value) == TARGET_IS_A_FOLDER.format(path=tmp_path / "folder")
    (tmp_path / "file").write_text("keep")
    with pytest.raises(TailormlError) as error:
        atomic_write_text(tmp_path / "file" / "out.csv", "x")
    assert str(error.value) == TARGET_INSIDE_A_FILE.format(
        path=tmp_path / "file" / "out.csv", parent=tmp_path / "file"
    )
    assert (tmp_path / "file").read_text() == "keep"


def test_json_never_holds_a_bare_nan(tmp_path):
    import json

    from tailorml.io import atomic_write_json

    path = atomic_write_json(
        tmp_path / "m.json", {"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": 2.0}}
    )
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5, None], "c": {"d": 2.0}}
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
