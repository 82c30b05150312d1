"""The SQLite -> PostgreSQL translation of the registry's SQL (registry.dialect): each rule
on the statements the store writes, and what it refuses (no server needed)."""

from __future__ import annotations

import pytest

from tailorml.registry import consent, dialect


def test_placeholders_and_percent_signs_become_psycopgs():
    assert dialect.statement("SELECT * FROM t WHERE a = ? AND b IN (?, ?)") == (
        "SELECT * FROM t WHERE a = %s AND b IN (%s, %s)"
    )
    # a literal % is doubled everywhere (psycopg reads strings too); a ? in a string stays
    assert dialect.statement("SELECT printf('%d?', x) FROM t WHERE y LIKE 'a%' AND z = ?") == (
        "SELECT printf('%%d?', x) FROM t WHERE y LIKE 'a%%' AND z = %s"
    )
    assert dialect.statement("SELECT 'it''s ?' WHERE a = ?;") == "SELECT 'it''s ?' WHERE a = %s"


def test_insert_or_ignore_becomes_on_conflict_do_nothing():
    assert dialect.statement(
        "INSERT OR IGNORE INTO assignments (clinician_id, patient_id) VALUES (?, ?)"
    ) == (
        "INSERT INTO assignments (clinician_id, patient_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"
    )
    with pytest.raises(dialect.UntranslatableSQL):
        dialect.statement("INSERT OR REPLACE INTO t VALUES (?)")
    with pytest.raises(dialect.UntranslatableSQL):
        dialect.statement("INSERT OR IGNORE INTO t VALUES (?) RETURNING id")


def test_sqlites_null_safe_is_becomes_is_not_distinct_from():
    assert dialect.statement("SELECT 1 FROM c WHERE c.clinician_id IS ? AND x IS NULL") == (
        "SELECT 1 FROM c WHERE c.clinician_id IS NOT DISTINCT FROM %s AND x IS NULL"
    )
    assert "IS NOT DISTINCT FROM assignments.clinician_id" in dialect.statement(
        consent.CONSENTED_ASSIGNMENT
    )
    for kept in ("a IS NOT NULL", "a IS TRUE", "a IS NOT DISTINCT FROM b"):
        assert dialect.statement(kept) == kept


def test_table_info_is_read_from_information_schema_and_other_pragmas_refused():
    translated = dialect.statement("PRAGMA table_info(jobs)")
    assert "information_schema.columns" in translated and "table_name = 'jobs'" in translated
    assert translated.index("column_name AS name") < translated.index("data_type AS type")
    with pytest.raises(dialect.UntranslatableSQL, match="PRAGMA"):
        dialect.statement("PRAGMA secure_delete=ON")


def test_ddl_is_refused_it_belongs_in_a_revision():
    for ddl in (
        "CREATE TABLE t (a INTEGER)",
        "ALTER TABLE jobs ADD COLUMN n INTEGER",
        "  drop index x",
    ):
        with pytest.raises(dialect.UntranslatableSQL, match="registry/migrations"):
            dialect.statement(ddl)
