"""A patient's consents: to personalization, and to each assigned clinician's access.

Seed 000 names informed consent among the ethical issues of every deployment scenario. A
consent is a row in `consents`, append-only like the audit log (the database refuses UPDATE
and DELETE): the current state of a scope is its newest row, and the rows before it are the
history a patient, an auditor or an export reads. A scope without any row is **not**
granted (the safe reading), so every path that grants writes a row saying who and why:

- `enrollment`: `tailorml users add` on the server, by the site that enrolls the patient
  (no self-sign-up: a person is enrolled after being told what personalization does);
- `assignment`: `tailorml users assign`, for that clinician, unless the patient withdrew
  that clinician's access before (a patient's withdrawal is never undone by an assignment);
- `migration`: accounts and assignments that existed before consents were recorded keep
  what they had (see `migrate`) until the patient withdraws;
- `patient`: the patient's own switch (the API or their page);
- `administrator`: `tailorml users consent`, e.g. a signed paper form.

Withdrawing consent to personalization also stops it, in the same transaction: queued jobs
fail without running, a running job loses its lease, so its worker records nothing, and the
person's proposals awaiting review close (`withdrawn`, the reason kept, an audit line): no
clinician is left with a review that can never be approved. A session whose registration
reaches the registry after the withdrawal is refused there (`Registry.register_session`
checks consent in its own transaction), so no candidate of a withdrawn person ever awaits
review, whichever transaction comes first.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from tailorml.errors import TailormlError
from tailorml.registry.database import audit, dialect_of, now, table_columns

PERSONALIZATION, CLINICIAN = "personalization", "clinician_access"
SCOPES = (PERSONALIZATION, CLINICIAN)
SOURCES = ("enrollment", "assignment", "migration", "patient", "administrator")
WITHDRAWN_JOB = "consent to personalization was withdrawn; nothing of this job was personalized"
WITHDRAWN_CANDIDATE = "consent to personalization was withdrawn before it was reviewed"
NOT_CONSENTED_SESSION = (
    "the patient has withdrawn consent to personalization: this personalization session was "
    "not registered and its files were deleted"
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS consents (
    id INTEGER PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES people(id),
    scope TEXT NOT NULL CHECK (scope IN ('personalization', 'clinician_access')),
    clinician_id TEXT REFERENCES people(id),
    granted INTEGER NOT NULL CHECK (granted IN (0, 1)),
    source TEXT NOT NULL,
    actor TEXT NOT NULL,
    created TEXT NOT NULL,
    CHECK ((scope = 'personalization') = (clinician_id IS NULL))
);
CREATE INDEX IF NOT EXISTS consents_by_patient ON consents(patient_id, scope, clinician_id, id);
CREATE TRIGGER IF NOT EXISTS consents_no_update BEFORE UPDATE ON consents
BEGIN SELECT RAISE(ABORT, 'consents are append-only: add a row'); END;
CREATE TRIGGER IF NOT EXISTS consents_no_delete BEFORE DELETE ON consents
BEGIN SELECT RAISE(ABORT, 'consents are append-only: add a row'); END;
"""

#: the newest row of (patient, scope, clinician): 1 granted, 0 withdrawn, NULL never recorded
LATEST = (
    "(SELECT c.granted FROM consents c WHERE c.patient_id = {patient} AND c.scope = '{scope}'"
    " AND c.clinician_id IS {clinician} ORDER BY c.id DESC LIMIT 1)"
)
CONSENTED_ASSIGNMENT = (
    "COALESCE("
    + LATEST.format(
        patient="assignments.patient_id", scope=CLINICIAN, clinician="assignments.clinician_id"
    )
    + ", 0) = 1"
)


class NotConsented(TailormlError):
    """The patient has not given (or withdrew) the consent this needs."""


@dataclass(frozen=True)
class Consent:
    """One recorded grant or withdrawal."""

    id: int
    patient_id: str
    scope: str
    clinician_id: str | None
    granted: bool
    source: str
    actor: str
    created: str

    def public(self) -> dict:
        return {
            "scope": self.scope,
            "clinician": self.clinician_id,
            "granted": self.granted,
            "source": self.source,
            "actor": self.actor,
            "created": self.created,
        }


def _consent(row: sqlite3.Row) -> Consent:
    return Consent(
        row["id"],
        row["patient_id"],
        row["scope"],
        row["clinician_id"],
        bool(row["granted"]),
        row["source"],
        row["actor"],
        row["created"],
    )


def latest(
    connection: sqlite3.Connection, patient_id: str, scope: str, clinician_id: str | None = None
) -> Consent | None:
    row = connection.execute(
        "SELECT * FROM consents WHERE patient_id = ? AND scope = ? AND clinician_id IS ?"
        " ORDER BY id DESC LIMIT 1",
        (patient_id, scope, clinician_id),
    ).fetchone()
    return None if row is None else _consent(row)


def granted(
    connection: sqlite3.Connection, patient_id: str, scope: str, clinician_id: str | None = None
) -> bool:
    found = latest(connection, patient_id, scope, clinician_id)
    return found is not None and found.granted


NOT_CONSENTED_APPROVAL = (
    "the patient has withdrawn consent to personalization: no personalized model can be "
    "approved for them (reject it, or wait for their consent)"
)


def may_personalize(connection, individual: str, lock: bool = False) -> bool:
    """Whether a personalized model may be approved for `individual`: always in a registry
    that holds no accounts (a research registry of cohort ids), else only with the account's
    consent to personalization. One rule for the API, the review page and the CLI.

    `lock` (inside a write transaction): on PostgreSQL the person's row is share-locked
    until the transaction ends, so a withdrawal (which locks it to write) waits for the
    caller's commit, or the caller reads the withdrawal; SQLite's write transaction holds
    the whole file already."""
    if not table_columns(connection, "consents"):
        return True
    share = " FOR SHARE" if lock and dialect_of(connection) != "sqlite" else ""
    known = connection.execute(
        f"SELECT 1 FROM people WHERE id = ?{share}", (individual,)
    ).fetchone()
    return known is None or granted(connection, individual, PERSONALIZATION)


def history(connection: sqlite3.Connection, patient_id: str) -> list[Consent]:
    rows = connection.execute(
        "SELECT * FROM consents WHERE patient_id = ? ORDER BY id", (patient_id,)
    ).fetchall()
    return [_consent(row) for row in rows]


def record(
    connection: sqlite3.Connection,
    patient_id: str,
    scope: str,
    clinician_id: str | None,
    grant: bool,
    source: str,
    actor: str,
) -> bool:
    """Inside the caller's write transaction: a grant or withdrawal with its audit line;
    False (nothing written) when it is the current state already. A withdrawal of
    personalization fails the person's queued and running jobs in the same transaction."""
    if scope not in SCOPES or source not in SOURCES:
        raise ValueError(f"unknown consent scope {scope!r} or source {source!r}")
    current = latest(connection, patient_id, scope, clinician_id)
    if current is not None and current.granted == grant:
        return False
    connection.execute(
        "INSERT INTO consents (patient_id, scope, clinician_id, granted, source, actor, created)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (patient_id, scope, clinician_id, int(grant), source, actor, now()),
    )
    details = {"scope": scope, "source": source}
    if clinician_id is not None:
        details["clinician"] = clinician_id
    audit(
        connection, actor, "consent_granted" if grant else "consent_withdrawn", patient_id, details
    )
    if scope == PERSONALIZATION and not grant:
        stop_jobs(connection, patient_id, actor)
        close_candidates(connection, patient_id, actor)
    return True


def stop_jobs(connection: sqlite3.Connection, patient_id: str, actor: str) -> list[int]:
    """The person's queued and running jobs fail now: a queued one never runs, a running
    one's lease is gone (its worker exits at its next renewal and records nothing)."""
    rows = connection.execute(
        "SELECT id FROM jobs WHERE person_id = ? AND status IN ('queued', 'running')",
        (patient_id,),
    ).fetchall()
    for row in rows:
        connection.execute(
            "UPDATE jobs SET status = 'failed', error = ?, finished = ?, lease_owner = NULL,"
            " lease_expires_s = NULL WHERE id = ?",
            (WITHDRAWN_JOB, now(), row["id"]),
        )
        audit(connection, actor, "personalization_stopped", patient_id, {"job": row["id"]})
    return [int(row["id"]) for row in rows]


def close_candidates(connection: sqlite3.Connection, patient_id: str, actor: str) -> list[int]:
    """The person's proposals awaiting review close: they read as `withdrawn` with
    WITHDRAWN_CANDIDATE as the reason, leave the review lists and can never be approved
    (a consent granted later does not reopen them: a new job, requested with it, proposes
    anew).
    One audit line names them. Nothing if the registry has no candidates table yet."""
    columns = {row["name"] for row in connection.execute("PRAGMA table_info(candidates)")}
    if not columns:
        return []
    for column, kind in (("superseded_by", "INTEGER"), ("withdrawn_reason", "TEXT")):
        if column not in columns:  # a registry from before, not yet opened by `Registry`
            connection.execute(f"ALTER TABLE candidates ADD COLUMN {column} {kind}")
    ids = [
        int(row["id"])
        for row in connection.execute(
            "SELECT id FROM candidates WHERE individual = ? AND status = 'pending_review' AND"
            " superseded_by IS NULL AND withdrawn_reason IS NULL ORDER BY id",
            (patient_id,),
        )
    ]
    if ids:
        marks = ", ".join("?" for _ in ids)
        connection.execute(
            f"UPDATE candidates SET withdrawn_reason = ? WHERE id IN ({marks})",
            (WITHDRAWN_CANDIDATE, *ids),
        )
        audit(
            connection,
            actor,
            "candidates_withdrawn",
            patient_id,
            {"candidate_ids": ids, "reason": WITHDRAWN_CANDIDATE},
        )
    return ids


def migrate(connection: sqlite3.Connection) -> None:
    """A data directory from before consents were recorded: every patient keeps
    personalization and every existing assignment keeps its access, recorded as `migration`
    (with an audit line), until the patient withdraws. Why not "withdrawn until asked": the
    service's accounts were enrolled by a site and assigned by its administrator, and
    cutting a clinician off a person's alerts, or their approved model, at an upgrade is a
    risk to that person that no one chose. Idempotent: only scopes without any row."""
    patients = connection.execute(
        "SELECT id FROM people WHERE role = 'patient' AND erased IS NULL AND NOT EXISTS"
        " (SELECT 1 FROM consents c WHERE c.patient_id = people.id AND c.scope = ?)",
        (PERSONALIZATION,),
    ).fetchall()
    for row in patients:
        record(connection, row["id"], PERSONALIZATION, None, True, "migration", "migration")
    assignments = connection.execute(
        "SELECT clinician_id, patient_id FROM assignments WHERE NOT EXISTS (SELECT 1 FROM"
        " consents c WHERE c.patient_id = assignments.patient_id AND c.scope = ? AND"
        " c.clinician_id = assignments.clinician_id)",
        (CLINICIAN,),
    ).fetchall()
    for row in assignments:
        record(
            connection,
            row["patient_id"],
            CLINICIAN,
            row["clinician_id"],
            True,
            "migration",
            "migration",
        )
