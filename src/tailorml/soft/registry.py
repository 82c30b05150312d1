"""The model registry: models, candidates, gate results, reviews, active-model history and
an append-only audit log, in one SQLite file (standard library) beside content-addressed
model files.

Why SQLite: one file, transactions and a write-ahead log come with Python, and two processes
personalizing different individuals can share it safely (WAL mode, `BEGIN IMMEDIATE`, a busy
timeout). Every multi-row change is one transaction, so a process killed mid-way leaves
either all of a personalization session or none of it. Model files are written atomically
under their sha256 before the transaction that references them; a crash in between leaves
at most an unreferenced file, never a reference to a missing or partial one.
"""

from __future__ import annotations

import getpass
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tailorml.errors import TailormlError
from tailorml.io import atomic_write_bytes, sha256_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('predefined', 'candidate')),
    created TEXT NOT NULL,
    data_hash TEXT NOT NULL,
    config_json TEXT NOT NULL,
    code_version TEXT,
    description TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    individual TEXT NOT NULL,
    created TEXT NOT NULL,
    actor TEXT NOT NULL,
    predefined_model_id INTEGER NOT NULL REFERENCES models(id),
    data_hash TEXT NOT NULL,
    refused_reason TEXT,
    proposal_candidate_id INTEGER,
    n_candidates INTEGER NOT NULL,
    summary_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    individual TEXT NOT NULL,
    model_id INTEGER NOT NULL REFERENCES models(id),
    name TEXT NOT NULL,
    threshold REAL NOT NULL,
    passed_gates INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN
        ('failed_gates', 'not_selected', 'pending_review', 'approved', 'rejected')),
    metrics_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS gate_results (
    id INTEGER PRIMARY KEY,
    candidate_id INTEGER NOT NULL REFERENCES candidates(id),
    gate TEXT NOT NULL,
    passed INTEGER NOT NULL,
    numbers_json TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY,
    candidate_id INTEGER NOT NULL REFERENCES candidates(id),
    reviewer TEXT NOT NULL,
    role TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
    comment TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS active_models (
    id INTEGER PRIMARY KEY,
    individual TEXT NOT NULL,
    model_id INTEGER NOT NULL REFERENCES models(id),
    candidate_id INTEGER REFERENCES candidates(id),
    threshold REAL NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    created TEXT NOT NULL
);
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
CREATE INDEX IF NOT EXISTS candidates_by_individual ON candidates(individual);
CREATE INDEX IF NOT EXISTS active_by_individual ON active_models(individual, id);
"""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(frozen=True)
class ModelRecord:
    id: int
    sha256: str
    kind: str
    path: Path
    description: str


@dataclass
class CandidateRecord:
    """What a personalization session registers for one candidate."""

    name: str
    model_bytes: bytes
    threshold: float
    passed_gates: bool
    metrics: dict[str, Any]
    gates: list[dict[str, Any]]  # {"gate", "passed", "numbers", "reason"}
    config: dict[str, Any]
    reuse_model_id: int | None = None  # the predefined model itself, not a new file


class Registry:
    """Open (creating if needed) the registry in `root`: registry.sqlite + models/."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.models_dir = self.root / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "registry.sqlite"
        with self._connect() as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=30000")
        return connection

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; anything raised inside rolls everything back."""
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            connection.close()

    def query(self, sql: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        connection = self._connect()
        try:
            return connection.execute(sql, parameters).fetchall()
        finally:
            connection.close()

    # -- model files -------------------------------------------------------------------

    def model_path(self, sha256: str) -> Path:
        return self.models_dir / f"{sha256}.pt"

    def _store_file(self, data: bytes) -> str:
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        target = self.model_path(digest)
        if not target.exists():
            atomic_write_bytes(target, data)
        return digest

    def _insert_model(
        self,
        connection,
        sha256: str,
        kind: str,
        data_hash: str,
        config: dict,
        code_version: str | None,
        description: str,
    ) -> int:
        row = connection.execute("SELECT id FROM models WHERE sha256 = ?", (sha256,)).fetchone()
        if row:
            return int(row["id"])
        cursor = connection.execute(
            "INSERT INTO models (sha256, kind, created, data_hash, config_json, code_version,"
            " description) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                sha256,
                kind,
                now(),
                data_hash,
                json.dumps(config, sort_keys=True),
                code_version,
                description,
            ),
        )
        return int(cursor.lastrowid)

    @staticmethod
    def _audit(connection, actor: str, action: str, individual: str | None, details: dict) -> None:
        connection.execute(
            "INSERT INTO audit_log (created, actor, action, individual, details_json)"
            " VALUES (?, ?, ?, ?, ?)",
            (now(), actor, action, individual, json.dumps(details, sort_keys=True, default=str)),
        )

    # -- predefined model ----------------------------------------------------------------

    def register_predefined(
        self,
        model_file: str | Path,
        data_hash: str,
        config: dict,
        code_version: str | None,
        description: str,
        actor: str | None = None,
    ) -> ModelRecord:
        data = Path(model_file).read_bytes()
        digest = self._store_file(data)
        actor = actor or default_actor()
        with self.transaction() as connection:
            model_id = self._insert_model(
                connection, digest, "predefined", data_hash, config, code_version, description
            )
            self._audit(
                connection,
                actor,
                "register_predefined",
                None,
                {"model_id": model_id, "sha256": digest, "description": description},
            )
        return self.model(model_id)

    def predefined(self) -> ModelRecord | None:
        rows = self.query("SELECT * FROM models WHERE kind = 'predefined' ORDER BY id DESC LIMIT 1")
        return self._model_record(rows[0]) if rows else None

    def model(self, model_id: int) -> ModelRecord:
        rows = self.query("SELECT * FROM models WHERE id = ?", (model_id,))
        if not rows:
            raise TailormlError(f"no model {model_id} in the registry {self.root}")
        return self._model_record(rows[0])

    def _model_record(self, row) -> ModelRecord:
        path = self.model_path(row["sha256"])
        return ModelRecord(int(row["id"]), row["sha256"], row["kind"], path, row["description"])

    def verify(self, record: ModelRecord) -> None:
        """Refuse a model file whose content does not match its recorded hash."""
        if not record.path.exists() or sha256_file(record.path) != record.sha256:
            raise TailormlError(
                f"model file {record.path} is missing or does not match its sha256; the registry "
                "refuses to use it"
            )

    # -- personalization sessions ----------------------------------------------------------

    def register_session(
        self,
        individual: str,
        predefined_id: int,
        data_hash: str,
        candidates: list[CandidateRecord],
        proposal: int | None,
        summary: dict[str, Any],
        refused_reason: str | None = None,
        code_version: str | None = None,
        actor: str | None = None,
    ) -> int:
        """Register a whole session (candidates, their models and gate results) atomically.

        `proposal` indexes `candidates` (the one sent to review) or is None (keep the
        predefined model). Returns the session id."""
        actor = actor or default_actor()
        digests = [
            None if c.reuse_model_id is not None else self._store_file(c.model_bytes)
            for c in candidates
        ]
        with self.transaction() as connection:
            cursor = connection.execute(
                "INSERT INTO sessions (individual, created, actor, predefined_model_id, data_hash,"
                " refused_reason, n_candidates, summary_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    individual,
                    now(),
                    actor,
                    predefined_id,
                    data_hash,
                    refused_reason,
                    len(candidates),
                    json.dumps(summary, sort_keys=True, default=str),
                ),
            )
            session_id = int(cursor.lastrowid)
            proposal_id = None
            for index, (candidate, digest) in enumerate(zip(candidates, digests, strict=True)):
                model_id = candidate.reuse_model_id
                if model_id is None:
                    model_id = self._insert_model(
                        connection,
                        digest,
                        "candidate",
                        data_hash,
                        candidate.config,
                        code_version,
                        f"{candidate.name} for {individual}",
                    )
                if index == proposal:
                    status = "pending_review"
                else:
                    status = "not_selected" if candidate.passed_gates else "failed_gates"
                cursor = connection.execute(
                    "INSERT INTO candidates (session_id, individual, model_id, name, threshold,"
                    " passed_gates, status, metrics_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        session_id,
                        individual,
                        model_id,
                        candidate.name,
                        candidate.threshold,
                        int(candidate.passed_gates),
                        status,
                        json.dumps(candidate.metrics, sort_keys=True, default=str),
                    ),
                )
                candidate_id = int(cursor.lastrowid)
                if index == proposal:
                    proposal_id = candidate_id
                connection.executemany(
                    "INSERT INTO gate_results (candidate_id, gate, passed, numbers_json, reason)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [
                        (
                            candidate_id,
                            g["gate"],
                            int(g["passed"]),
                            json.dumps(g["numbers"], sort_keys=True, default=str),
                            g["reason"],
                        )
                        for g in candidate.gates
                    ],
                )
            connection.execute(
                "UPDATE sessions SET proposal_candidate_id = ? WHERE id = ?",
                (proposal_id, session_id),
            )
            self._audit(
                connection,
                actor,
                "personalize",
                individual,
                {
                    "session_id": session_id,
                    "candidates": len(candidates),
                    "proposal_candidate_id": proposal_id,
                    "refused_reason": refused_reason,
                },
            )
        return session_id

    # -- review and activation ---------------------------------------------------------------

    def candidate(self, candidate_id: int) -> sqlite3.Row:
        rows = self.query("SELECT * FROM candidates WHERE id = ?", (candidate_id,))
        if not rows:
            raise TailormlError(
                f"no candidate {candidate_id}; `tailorml review list` shows the candidates"
            )
        return rows[0]

    def decide(
        self, candidate_id: int, decision: str, reviewer: str, role: str, comment: str
    ) -> None:
        """Record a review; an approval makes the candidate the individual's active model."""
        if decision not in ("approve", "reject"):
            raise TailormlError(f"decision must be approve or reject, not {decision!r}")
        if not reviewer.strip():
            raise TailormlError("a review needs the reviewer's name (--reviewer)")
        with self.transaction() as connection:
            row = connection.execute(
                "SELECT * FROM candidates WHERE id = ?", (candidate_id,)
            ).fetchone()
            if row is None:
                raise TailormlError(
                    f"no candidate {candidate_id}; `tailorml review list` shows the candidates"
                )
            if row["status"] != "pending_review":
                raise TailormlError(
                    f"candidate {candidate_id} is '{row['status']}', not pending review: only "
                    "the candidate a personalization session proposed (all gates passed) can be "
                    "approved or rejected"
                )
            connection.execute(
                "INSERT INTO reviews (candidate_id, reviewer, role, decision, comment, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (candidate_id, reviewer, role, decision, comment, now()),
            )
            status = "approved" if decision == "approve" else "rejected"
            connection.execute(
                "UPDATE candidates SET status = ? WHERE id = ?", (status, candidate_id)
            )
            if decision == "approve":
                connection.execute(
                    "INSERT INTO active_models (individual, model_id, candidate_id, threshold,"
                    " reason, actor, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        row["individual"],
                        row["model_id"],
                        candidate_id,
                        row["threshold"],
                        f"approved by {reviewer} ({role}): {comment}",
                        reviewer,
                        now(),
                    ),
                )
            self._audit(
                connection,
                reviewer,
                decision,
                row["individual"],
                {
                    "candidate_id": candidate_id,
                    "role": role,
                    "comment": comment,
                },
            )

    def active(self, individual: str) -> dict[str, Any]:
        """The individual's active model: the latest activation, or the predefined model."""
        rows = self.query(
            "SELECT a.*, m.sha256, m.kind, m.description FROM active_models a "
            "JOIN models m ON m.id = a.model_id WHERE a.individual = ? ORDER BY a.id DESC LIMIT 1",
            (individual,),
        )
        if rows:
            return dict(rows[0])
        predefined = self.predefined()
        if predefined is None:
            raise TailormlError(
                f"the registry {self.root} has no model yet; run `tailorml personalize` first"
            )
        return {
            "individual": individual,
            "model_id": predefined.id,
            "candidate_id": None,
            "threshold": None,
            "sha256": predefined.sha256,
            "kind": "predefined",
            "description": predefined.description,
            "reason": "default: no personalized model has been approved",
            "actor": None,
            "created": None,
        }

    def rollback(
        self, individual: str, reason: str, actor: str | None = None, default_threshold: float = 0.5
    ) -> None:
        """Return the individual to the predefined model (recorded, never deleting history)."""
        actor = actor or default_actor()
        predefined = self.predefined()
        if predefined is None:
            raise TailormlError(f"the registry {self.root} has no predefined model")
        with self.transaction() as connection:
            connection.execute(
                "INSERT INTO active_models (individual, model_id, candidate_id, threshold,"
                " reason, actor, created) VALUES (?, ?, NULL, ?, ?, ?, ?)",
                (individual, predefined.id, default_threshold, f"rollback: {reason}", actor, now()),
            )
            self._audit(connection, actor, "rollback", individual, {"reason": reason})

    def history(self, individual: str) -> list[dict[str, Any]]:
        return [
            dict(row)
            for row in self.query(
                "SELECT * FROM active_models WHERE individual = ? ORDER BY id", (individual,)
            )
        ]

    def audit(self, individual: str | None = None) -> list[dict[str, Any]]:
        if individual is None:
            rows = self.query("SELECT * FROM audit_log ORDER BY id")
        else:
            rows = self.query(
                "SELECT * FROM audit_log WHERE individual = ? ORDER BY id", (individual,)
            )
        return [dict(row) for row in rows]
