"""What `tailorml cohort import` echoes from an export reaches a terminal: an id kept with
--keep-ids, a file name or a cell in an error is shown with its control characters
escaped (ESC would recolour, clear or retitle the terminal, BS overwrite)."""

from __future__ import annotations


def generic_csv(ids: list[str]) -> str:
    lines = ["time,cgm,id"]
    for person in ids:
        lines += [f"2024-03-20 08:{5 * i:02d},{100 + i},{person}" for i in range(6)]
    return "\n".join(lines) + "\n"


def test_kept_ids_are_printed_with_their_control_characters_escaped(tmp_path, tailorml_in_process):
    source = tmp_path / "export.csv"
    source.write_text(generic_csv(["\x1b]0;owned\x07\x1b[2Jmallory", "bob\broot", "\u202eeve"]))
    out = tmp_path / "cohort.parquet"
    result = tailorml_in_process(
        "cohort", "import", str(source), "--out", str(out), "--keep-ids", "--id-column", "id"
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\b" not in result.stdout
    assert "\u202e" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b]0;owned\\x07\\x1b[2Jmallory: 6 readings" in result.stdout
    assert "bob\\x08root: 6 readings" in result.stdout and "\\u202eeve: 6 readings" in result.stdout


def test_an_error_naming_a_file_escapes_its_control_characters(tmp_path, tailorml_in_process):
    source = tmp_path / "a\x1b[31mred.csv"
    source.write_text("not,an,export\n1,2,3\n")
    out = tmp_path / "cohort.parquet"
    result = tailorml_in_process("cohort", "import", str(source), "--out", str(out))
    assert result.returncode == 2
    assert "\x1b" not in result.stderr and "a\\x1b[31mred.csv" in result.stderr
