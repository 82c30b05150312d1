"""The append-only audit log's table, applied by both backends with every store's schema
(its own module so that `registry.database` and `registry.postgres`, which each apply it,
do not import each other). Written in SQLite's dialect; `registry.dialect` turns the two
triggers into PostgreSQL's function and triggers."""

AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY,
    created TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    individual TEXT,
    details_json TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE INDEX IF NOT EXISTS audit_by_individual ON audit_log(individual, id);
"""
