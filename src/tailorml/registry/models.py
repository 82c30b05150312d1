"""The model registry: models, candidates, gate results, reviews, active-model history and
the append-only audit log (`registry.database`), in the data directory's SQLite file or in
a PostgreSQL database (`Registry(root, database=URL)`, the service's `--database`), beside
content-addressed model files in `root` either way.

Every multi-row change is one transaction, so a process killed mid-way leaves
either all of a personalization session or none of it. Model files are written atomically
under their sha256 before the transaction that references them; a crash in between leaves
at most an unreferenced file, never a reference to a missing or partial one.

The typed methods below are the one door to the registry (the CLI, the model card, and
the service and device updates use them); SQL never leaves the registry package. Reads return
frozen dataclasses with JSON columns already decoded:

- `active_model(individual)`: which model this person uses, with which threshold and why.
- `candidates(...)`, `candidate(id)`, `session(id)`: what was proposed, with its gates.
- `reviews(individual)`, `history(individual)`: what was decided and what was active when.
- `audit(individual)`: everything that happened, from the append-only log.

Writes: `register_predefined`, `register_session`, `decide`, `rollback`, and `retire` when a
person's data is erased (their personalized models were trained on it).

What the service runs (`serving`): each servable model's ONNX file, stored beside the model
file under its own sha256, and its alert policy as JSON, recorded in `model_exports` by the
transaction that registers the model (the predefined one and a session's proposal: the only
ones a person can be given). Registration happens where torch already is (the CLI, the
personalization worker), so the API processes read the ONNX file and the policy without
importing torch; `prepare_serving` makes them for a model registered before they existed.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import shutil
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tailorml.errors import ModelFileError, NotFoundError, TailormlError
from tailorml.io import atomic_write_bytes, sha256_file
from tailorml.policy import AlertPolicy
from tailorml.registry import consent
from tailorml.registry.database import (
    add_columns,
    audit,
    for_update,
    insert_id,
    lock_key,
    now,
    open_database,
)

if TYPE_CHECKING:  # torch: imported only where a model file is loaded, never by the service
    from tailorml.models.cnn import SmallCNN

# the registry's messages reach API callers too: they name no directory and no CLI command
NO_CANDIDATE = "no candidate {id}: list the candidates, reviewed ones too, to find its id"

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
    metrics_json TEXT NOT NULL,
    superseded_by INTEGER,
    withdrawn_reason TEXT
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
CREATE TABLE IF NOT EXISTS retired_models (
    model_id INTEGER PRIMARY KEY REFERENCES models(id),
    individual TEXT NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS model_exports (
    model_sha256 TEXT PRIMARY KEY,
    onnx_sha256 TEXT NOT NULL,
    policy_json TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS candidates_by_individual ON candidates(individual);
CREATE INDEX IF NOT EXISTS active_by_individual ON active_models(individual, id);
"""

#: An older pending proposal whose person has a newer session that proposed one: it stays
#: `pending_review` in the table (whose CHECK predates it) with `superseded_by` set, reads as
#: SUPERSEDED, and can no longer be approved (it was judged on older data than the newer one).
SUPERSEDED = "superseded"
_SUPERSEDE = (
    "UPDATE candidates SET superseded_by = ? WHERE individual = ? AND status = 'pending_review'"
    " AND superseded_by IS NULL AND withdrawn_reason IS NULL AND session_id < ?"
)
#: A proposal still awaiting review when its person withdrew consent to personalization
#: (`consent.close_candidates`): `pending_review` in the table with `withdrawn_reason` set,
#: reads as WITHDRAWN and can never be approved or rejected (nothing awaits review).
WITHDRAWN = "withdrawn"


def _reading(row: sqlite3.Row) -> str:
    """A candidate's status as read: a pending proposal closed by a withdrawal of consent
    or superseded by a newer one says so."""
    if row["status"] == "pending_review":
        if row["withdrawn_reason"] is not None:
            return WITHDRAWN
        if row["superseded_by"] is not None:
            return SUPERSEDED
    return row["status"]


def _migrate(connection: sqlite3.Connection) -> None:
    """Registries written before superseding: add the column, and mark the older pending
    proposals of each person who has a newer proposing session (idempotent)."""
    add_columns(connection, "candidates", {"superseded_by": "INTEGER", "withdrawn_reason": "TEXT"})
    newest = connection.execute(
        "SELECT individual, MAX(id) AS session_id FROM sessions WHERE proposal_candidate_id"
        " IS NOT NULL GROUP BY individual"
    ).fetchall()
    for individual, session_id in newest:
        (proposal,) = connection.execute(
            "SELECT proposal_candidate_id FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        connection.execute(_SUPERSEDE, (proposal, individual, session_id))


def _lock_individual(connection, individual: str) -> None:
    """Inside a write transaction: the individual's changes take turns (`lock_key`), so on
    PostgreSQL their activations are numbered in commit order (the newest id is the active
    model) and two sessions' superseding cannot interleave."""
    lock_key(connection, f"registry:{individual}")


def load_model(path, data: bytes | None = None) -> SmallCNN:
    """`tailorml.models.cnn.load_model`, imported when called: it needs torch, which the
    service's API processes never import (they read `serving` instead)."""
    from tailorml.models.cnn import load_model as load

    return load(path, data)


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


@dataclass(frozen=True)
class Serving:
    """What the service runs for a model: its ONNX file (named by its own sha256, checked
    against it by `onnx_bytes`) and its alert policy, both made from the model file."""

    model_sha256: str
    onnx_path: Path
    onnx_sha256: str
    policy: AlertPolicy


@dataclass(frozen=True)
class ActiveModel:
    """The model an individual uses now, and why. `kind` is "personalized" when an
    approved candidate is active, else "predefined" (the default, or after a rollback);
    `threshold` None means the predefined model's default alert threshold."""

    individual: str
    model: ModelRecord
    kind: str
    candidate_id: int | None
    threshold: float | None
    reason: str
    created: str | None
    actor: str | None

    def load(self) -> SmallCNN:
        """The active model, deciding at the active threshold (a personal one once approved):
        what the service and the device run for this person."""
        model = load_model(self.model.path)
        if self.threshold is not None:
            model.policy = model.policy.with_threshold(self.threshold)
        return model


PASS, FAIL, NOT_INFORMATIVE = "pass", "fail", "not informative"


def gate_outcome(passed: bool, numbers: dict[str, Any]) -> str:
    """What a reader is told: pass, fail, or "not informative" — a gate whose data cannot
    tell the candidate from the predefined model (numbers["informative"] is False). That
    outcome does not block (`passed` stays True): see soft.gates.CertifiedRobustness."""
    if numbers.get("informative") is False:
        return NOT_INFORMATIVE
    return PASS if passed else FAIL


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict on one candidate, as a gate returns it (`tailorml.soft.gates`)
    and as the registry keeps it: defined here, where it is stored, so both share it."""

    gate: str
    passed: bool  # False blocks the candidate
    numbers: dict[str, Any]
    reason: str

    @property
    def outcome(self) -> str:
        return gate_outcome(self.passed, self.numbers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CandidateView:
    """A registered candidate; `created` is its session's time."""

    id: int
    session_id: int
    individual: str
    name: str
    model_id: int
    threshold: float
    passed_gates: bool
    status: str  # failed_gates, not_selected, pending_review, superseded, withdrawn,
    # approved, rejected
    metrics: dict[str, Any]
    gates: list[GateResult]
    created: str
    superseded_by: int | None = None  # the newer proposal that superseded this one
    withdrawn_reason: str | None = None  # why it closed unreviewed (consent withdrawn)


@dataclass(frozen=True)
class SessionView:
    id: int
    individual: str
    created: str
    actor: str
    predefined_model_id: int
    data_hash: str
    refused_reason: str | None
    proposal_candidate_id: int | None
    summary: dict[str, Any]
    candidates: list[CandidateView]


@dataclass(frozen=True)
class SessionRecord:
    """What `register_session` registered: ids to refer to the session and its candidates."""

    id: int
    candidate_ids: dict[str, int]  # by candidate name, in registration order
    proposal_candidate_id: int | None


@dataclass(frozen=True)
class ReviewView:
    id: int
    candidate_id: int
    candidate_name: str
    individual: str
    reviewer: str
    role: str
    decision: str  # approve or reject
    comment: str
    created: str


@dataclass(frozen=True)
class Activation:
    """One change of an individual's active model (an approval or a rollback)."""

    id: int
    individual: str
    model_id: int
    candidate_id: int | None
    threshold: float
    reason: str
    actor: str
    created: str


@dataclass(frozen=True)
class AuditEntry:
    id: int
    created: str
    actor: str
    action: str
    individual: str | None
    details: dict[str, Any]


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
    """Open (creating if needed) the registry in `root`: registry.sqlite + models/; with
    `database` (a `postgresql://` URL) its tables live in that database instead, and `root`
    keeps the files (models/ and their ONNX files, session artifacts, cards)."""

    def __init__(self, root: str | Path, database: str | None = None) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise TailormlError(f"registry {self.root} is a file; pass a directory (--registry)")
        self.models_dir = self.root / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.database_url = database
        if database is not None:
            self.path = None
            self.database = open_database(database, SCHEMA, "--database", migrate=_migrate)
        else:
            self.path = self.root / "registry.sqlite"
            self.database = open_database(self.path, SCHEMA, migrate=_migrate)

    @classmethod
    def existing(cls, root: str | Path, database: str | None = None) -> Registry:
        """Open a registry that must already exist (commands that read or decide): a
        mistyped path is an error, not a new empty registry."""
        if database is None and not (Path(root) / "registry.sqlite").is_file():
            raise TailormlError(
                f"no registry at {root}; check --registry (or soft.registry), or run "
                "`tailorml personalize` first to create one"
            )
        return cls(root, database)

    def knows(self, individual: str) -> bool:
        """Whether `individual` was ever personalized here (has a session)."""
        return bool(
            self._query("SELECT 1 FROM sessions WHERE individual = ? LIMIT 1", (individual,))
        )

    def _reader(self):
        """This thread's connection, for reads outside a transaction (either backend)."""
        return self.database.reader()

    def _transaction(self):
        return self.database.transaction()

    def _query(self, sql: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        return self.database.query(sql, parameters)

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
        return insert_id(
            connection,
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

    @staticmethod
    def _audit(connection, actor: str, action: str, individual: str | None, details: dict) -> None:
        audit(connection, actor, action, individual, details)

    def note(self, actor: str, action: str, individual: str | None, details: dict) -> None:
        """Record a decision taken outside the registry's own operations (e.g. a roll-out
        held back for a group) in the append-only audit log."""
        with self._transaction() as connection:
            self._audit(connection, actor, action, individual, details)

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
        export = self._servable(data, model_file)
        actor = actor or default_actor()
        with self._transaction() as connection:
            model_id = self._insert_model(
                connection, digest, "predefined", data_hash, config, code_version, description
            )
            self._record_export(connection, digest, export)
            self._audit(
                connection,
                actor,
                "register_predefined",
                None,
                {"model_id": model_id, "sha256": digest, "description": description},
            )
        return self.model(model_id)

    def predefined(self) -> ModelRecord | None:
        rows = self._query(
            "SELECT * FROM models WHERE kind = 'predefined' ORDER BY id DESC LIMIT 1"
        )
        return self._model_record(rows[0]) if rows else None

    def model(self, model_id: int) -> ModelRecord:
        rows = self._query("SELECT * FROM models WHERE id = ?", (model_id,))
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

    # -- what the service runs: ONNX file and policy, made where torch is -------------------

    def onnx_path(self, onnx_sha256: str) -> Path:
        return self.models_dir / f"{onnx_sha256}.onnx"

    def serving(self, record: ModelRecord) -> Serving | None:
        """The model's recorded ONNX file and alert policy; None when none was made (a model
        registered before they were, or a file that is not a model)."""
        rows = self._query("SELECT * FROM model_exports WHERE model_sha256 = ?", (record.sha256,))
        if not rows:
            return None
        row = rows[0]
        policy = AlertPolicy.from_dict(
            json.loads(row["policy_json"]), f"the registry's policy of model {record.id}"
        )
        onnx_sha256 = row["onnx_sha256"]
        return Serving(record.sha256, self.onnx_path(onnx_sha256), onnx_sha256, policy)

    def onnx_bytes(self, serving: Serving) -> bytes:
        """The ONNX file's content, refused unless it matches its recorded sha256 (as
        `verify` refuses a model file): the caller runs these bytes, not the file again."""
        try:
            data = serving.onnx_path.read_bytes()
        except OSError:
            data = b""
        if hashlib.sha256(data).hexdigest() != serving.onnx_sha256:
            raise TailormlError(
                f"ONNX file {serving.onnx_path} is missing or does not match its sha256; the "
                "registry refuses to use it"
            )
        return data

    def policy(self, record: ModelRecord) -> AlertPolicy:
        """The model's own alert policy: the recorded JSON (no torch), else the model file's."""
        serving = self.serving(record)
        return serving.policy if serving is not None else load_model(record.path).policy

    def prepare_serving(self, record: ModelRecord) -> Serving:
        """Make and record the model's ONNX file and policy unless a sound pair is recorded:
        for models registered before they were made. Needs torch: the service runs it in a
        process of its own (`tailorml.service.runtime`)."""
        serving = self.serving(record)
        if serving is not None:
            try:
                self.onnx_bytes(serving)
                return serving
            except TailormlError:
                pass  # the file went missing: made again below
        data = record.path.read_bytes() if record.path.is_file() else b""
        if hashlib.sha256(data).hexdigest() != record.sha256:
            self.verify(record)  # the registry's own message
        export = self._export(data, record.path)
        with self._transaction() as connection:
            self._record_export(connection, record.sha256, export)
        made = self.serving(record)
        assert made is not None  # recorded just above
        return made

    def _export(self, data: bytes, source: str | Path) -> tuple[str, dict]:
        """The ONNX file of a model file's content, stored under its own sha256 (written
        before the transaction that records it, as model files are); returns its sha256
        and the model's policy as a dict."""
        from tailorml.models.onnx_runtime import onnx_of_model_file

        exported, policy = onnx_of_model_file(data, source)
        digest = hashlib.sha256(exported).hexdigest()
        target = self.onnx_path(digest)
        if not target.exists():
            atomic_write_bytes(target, exported)
        return digest, policy

    def _servable(self, data: bytes, source: str | Path) -> tuple[str, dict] | None:
        """`_export`, or None for bytes that are not a model file: the registry never
        required one; such a model is refused where it would be served, as before."""
        try:
            return self._export(data, source)
        except ModelFileError:
            return None

    @staticmethod
    def _record_export(connection, model_sha256: str, export: tuple[str, dict] | None) -> None:
        if export is None:
            return
        onnx_sha256, policy = export
        connection.execute(
            "INSERT INTO model_exports (model_sha256, onnx_sha256, policy_json, created) VALUES"
            " (?, ?, ?, ?) ON CONFLICT (model_sha256) DO UPDATE SET onnx_sha256 ="
            " excluded.onnx_sha256, policy_json = excluded.policy_json, created = excluded.created",
            (model_sha256, onnx_sha256, json.dumps(policy, sort_keys=True), now()),
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
    ) -> SessionRecord:
        """Register a whole session (candidates, their models and gate results) atomically.

        `proposal` indexes `candidates` (the one sent to review) or is None (keep the
        predefined model). Candidate names must be distinct within a session.

        Refused (`consent.NotConsented`, nothing registered, the session's artifacts and new
        model files deleted) when the individual is an account that has withdrawn consent to
        personalization, checked again inside the transaction: a job that was running when
        the patient withdrew never adds a candidate after the withdrawal closed theirs."""
        names = [c.name for c in candidates]
        if len(set(names)) != len(names):
            raise TailormlError(f"candidate names in a session must be distinct: {names}")
        actor = actor or default_actor()
        self._refuse_without_consent(individual, summary, [])
        digests = [
            None if c.reuse_model_id is not None else self._store_file(c.model_bytes)
            for c in candidates
        ]
        # the proposal is the one model of the session a person can be given: its ONNX file
        # and policy are made here, where torch is, not by the service
        export = None
        if proposal is not None and digests[proposal] is not None:
            export = self._servable(candidates[proposal].model_bytes, f"candidate {proposal}")
        try:
            return self._register(
                individual,
                predefined_id,
                data_hash,
                candidates,
                proposal,
                summary,
                refused_reason,
                code_version,
                actor,
                digests,
                export,
            )
        except consent.NotConsented:  # withdrawn while the session was trained or stored
            onnx = [export[0]] if export is not None else []
            self._refuse_without_consent(individual, summary, [d for d in digests if d], onnx)
            raise

    def _register(
        self,
        individual: str,
        predefined_id: int,
        data_hash: str,
        candidates: list[CandidateRecord],
        proposal: int | None,
        summary: dict[str, Any],
        refused_reason: str | None,
        code_version: str | None,
        actor: str,
        digests: list[str | None],
        export: tuple[str, dict] | None,
    ) -> SessionRecord:
        with self._transaction() as connection:
            _lock_individual(connection, individual)
            if not consent.may_personalize(connection, individual, lock=True):
                raise consent.NotConsented(consent.NOT_CONSENTED_SESSION)
            session_id = insert_id(
                connection,
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
            proposal_id = None
            candidate_ids: dict[str, int] = {}
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
                candidate_id = insert_id(
                    connection,
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
                candidate_ids[candidate.name] = candidate_id
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
            if proposal is not None and digests[proposal] is not None:
                self._record_export(connection, digests[proposal], export)
            superseded = []
            if proposal_id is not None:
                superseded = [
                    int(r["id"])
                    for r in connection.execute(
                        "SELECT id FROM candidates WHERE individual = ? AND status ="
                        " 'pending_review' AND superseded_by IS NULL AND withdrawn_reason IS"
                        " NULL AND session_id < ?",
                        (individual, session_id),
                    )
                ]
                connection.execute(_SUPERSEDE, (proposal_id, individual, session_id))
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
                }
                | ({"superseded_candidate_ids": superseded} if superseded else {}),
            )
        return SessionRecord(session_id, candidate_ids, proposal_id)

    def _refuse_without_consent(
        self,
        individual: str,
        summary: dict[str, Any],
        digests: list[str],
        onnx: list[str] | None = None,
    ) -> None:
        """Raise `consent.NotConsented` when `individual` may not be personalized, after
        deleting what the refused session left: its artifacts (held-out readings in the
        clear), and the model files `digests` and ONNX files `onnx` it wrote that no
        registered model names."""
        connection = self._reader()
        if consent.may_personalize(connection, individual):
            return
        models = {r["sha256"] for r in connection.execute("SELECT sha256 FROM models")}
        exports = {
            r["onnx_sha256"] for r in connection.execute("SELECT onnx_sha256 FROM model_exports")
        }
        key = summary.get("artifacts")
        if isinstance(key, str) and key and "/" not in key and key not in (".", ".."):
            shutil.rmtree(self.root / "artifacts" / key, ignore_errors=True)
        for digest in set(digests) - models:
            self.model_path(digest).unlink(missing_ok=True)
        for digest in set(onnx or []) - exports:
            self.onnx_path(digest).unlink(missing_ok=True)
        raise consent.NotConsented(consent.NOT_CONSENTED_SESSION)

    # -- review and activation ---------------------------------------------------------------

    def decide(
        self, candidate_id: int, decision: str, reviewer: str, role: str, comment: str
    ) -> CandidateView:
        """Record a review; an approval makes the candidate the individual's active model.
        Returns the candidate as decided."""
        if decision not in ("approve", "reject"):
            raise TailormlError(f"decision must be approve or reject, not {decision!r}")
        if not reviewer.strip():
            raise TailormlError("a review needs the reviewer's name (--reviewer)")
        known = self.candidate(candidate_id)  # an unknown id: a clear error before any write
        with self._transaction() as connection:
            # on PostgreSQL, in this order: the individual's turn, their consent (a withdrawal
            # waits, or is read), the candidate as it is now (another decision waits)
            _lock_individual(connection, known.individual)
            consented = consent.may_personalize(connection, known.individual, lock=True)
            row = connection.execute(
                f"SELECT * FROM candidates WHERE id = ?{for_update(connection)}", (candidate_id,)
            ).fetchone()
            if row is None:
                raise TailormlError(NO_CANDIDATE.format(id=candidate_id))
            if self._retired(row["model_id"]):
                raise TailormlError(
                    f"candidate {candidate_id} was retired (its person's data was erased); it "
                    "can no longer be approved or rejected"
                )
            if row["status"] == "pending_review" and row["superseded_by"] is not None:
                raise TailormlError(
                    f"candidate {candidate_id} was superseded by candidate "
                    f"{row['superseded_by']}, proposed by a newer personalization session on "
                    "newer data: review that one instead"
                )
            if row["status"] != "pending_review":
                raise TailormlError(
                    f"candidate {candidate_id} is '{row['status']}', not pending review: only "
                    "the candidate a personalization session proposed (all gates passed) can be "
                    "approved or rejected"
                )
            if decision == "approve" and not consented:
                raise TailormlError(consent.NOT_CONSENTED_APPROVAL)
            if row["status"] == "pending_review" and row["withdrawn_reason"] is not None:
                raise TailormlError(
                    f"candidate {candidate_id} is closed: {row['withdrawn_reason']}; it awaits "
                    "no review (a new personalization, with the patient's consent, proposes a "
                    "new one)"
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
        return self.candidate(candidate_id)

    def rollback(self, individual: str, reason: str, actor: str | None = None) -> ActiveModel:
        """Return the individual to the predefined model at its own alert threshold (recorded,
        never deleting history). Returns the new active model."""
        actor = actor or default_actor()
        if not reason.strip():
            raise TailormlError("a rollback needs a reason: it is recorded for audit")
        predefined = self.predefined()
        if predefined is None:
            raise TailormlError(f"the registry {self.root} has no predefined model")
        if not self.knows(individual):
            raise TailormlError(
                f"{individual!r} has never been personalized here; nothing to roll back (check "
                "the id against the candidates, reviewed ones too)"
            )
        default_threshold = self.policy(predefined).threshold
        with self._transaction() as connection:
            _lock_individual(connection, individual)
            connection.execute(
                "INSERT INTO active_models (individual, model_id, candidate_id, threshold,"
                " reason, actor, created) VALUES (?, ?, NULL, ?, ?, ?, ?)",
                (individual, predefined.id, default_threshold, f"rollback: {reason}", actor, now()),
            )
            self._audit(connection, actor, "rollback", individual, {"reason": reason})
        return self.active_model(individual)

    # -- reading: which model, what was proposed, what was decided, what happened ------------

    def active_model(self, individual: str) -> ActiveModel:
        """The individual's active model: the latest activation, or the predefined model."""
        rows = self._query(
            "SELECT * FROM active_models WHERE individual = ? ORDER BY id DESC LIMIT 1",
            (individual,),
        )
        if rows and not self._retired(rows[0]["model_id"]):
            row = rows[0]
            return ActiveModel(
                individual=individual,
                model=self.model(row["model_id"]),
                kind="predefined" if row["candidate_id"] is None else "personalized",
                candidate_id=row["candidate_id"],
                threshold=row["threshold"],
                reason=row["reason"],
                created=row["created"],
                actor=row["actor"],
            )
        predefined = self.predefined()
        if predefined is None:
            raise TailormlError(
                f"the registry {self.root} has no model yet; run `tailorml personalize` first"
            )
        return ActiveModel(
            individual=individual,
            model=predefined,
            kind="predefined",
            candidate_id=None,
            threshold=None,
            reason="default: no personalized model has been approved",
            created=None,
            actor=None,
        )

    def _retired(self, model_id: int) -> bool:
        return bool(self._query("SELECT 1 FROM retired_models WHERE model_id = ?", (model_id,)))

    def retired(self, individual: str) -> list[int]:
        rows = self._query(
            "SELECT model_id FROM retired_models WHERE individual = ? ORDER BY model_id",
            (individual,),
        )
        return [int(row["model_id"]) for row in rows]

    def retire(self, individual: str, reason: str, actor: str) -> list[int]:
        """Retire every personalized model trained on `individual`'s data (erasure): recorded,
        never served again, their files, stored predictions and cards deleted; the person's
        active model returns to the predefined one. Returns the retired model ids."""
        rows = self._query(
            "SELECT DISTINCT c.model_id, m.sha256 FROM candidates c JOIN models m ON"
            " m.id = c.model_id WHERE c.individual = ? AND m.kind = 'candidate'",
            (individual,),
        )
        sessions = self._query(
            "SELECT summary_json FROM sessions WHERE individual = ?", (individual,)
        )
        predefined = self.predefined()
        with self._transaction() as connection:
            _lock_individual(connection, individual)
            for row in rows:
                connection.execute(
                    "INSERT OR IGNORE INTO retired_models (model_id, individual, reason, actor,"
                    " created) VALUES (?, ?, ?, ?, ?)",
                    (row["model_id"], individual, reason, actor, now()),
                )
            if predefined is not None and self.knows(individual):
                connection.execute(
                    "INSERT INTO active_models (individual, model_id, candidate_id, threshold,"
                    " reason, actor, created) VALUES (?, ?, NULL, ?, ?, ?, ?)",
                    (
                        individual,
                        predefined.id,
                        self.policy(predefined).threshold,
                        f"retired: {reason}",
                        actor,
                        now(),
                    ),
                )
            # what the sessions learned from the person's data goes too: their summaries
            # (data gate, glycaemic figures), the candidates' held-out metrics and the gates'
            # numbers and wording; ids, names, statuses and the audit trail stay
            gone = json.dumps({"erased": reason})
            connection.execute(
                "UPDATE sessions SET summary_json = ? WHERE individual = ?", (gone, individual)
            )
            connection.execute(
                "UPDATE candidates SET metrics_json = '{}' WHERE individual = ?", (individual,)
            )
            connection.execute(
                "UPDATE gate_results SET numbers_json = '{}', reason = ? WHERE candidate_id IN"
                " (SELECT id FROM candidates WHERE individual = ?)",
                (f"removed: {reason}", individual),
            )
            self._audit(
                connection,
                actor,
                "retire_models",
                individual,
                {"model_ids": [int(row["model_id"]) for row in rows], "reason": reason},
            )
        # Files go after the commit: a crash in between leaves files of retired models (deleted
        # by the next retire), never a served model without its file.
        for row in rows:
            self.model_path(row["sha256"]).unlink(missing_ok=True)
        for onnx_sha256 in self._retired_exports([row["sha256"] for row in rows]):
            self.onnx_path(onnx_sha256).unlink(missing_ok=True)
        for session in sessions:
            key = str(json.loads(session["summary_json"]).get("artifacts") or "")
            if key.isalnum():  # a uuid hex written by the session; anything else is not ours
                folder = self.root / "artifacts" / key
                for file in folder.glob("*"):
                    file.unlink()
                if folder.is_dir():
                    folder.rmdir()
        from tailorml.io import encode_component

        (self.root / "cards" / f"{encode_component(individual)}.html").unlink(missing_ok=True)
        return [int(row["model_id"]) for row in rows]

    def _retired_exports(self, model_sha256s: list[str]) -> list[str]:
        """The ONNX files of these (retired) models that no model still served shares."""
        if not model_sha256s:
            return []
        marks = ", ".join("?" * len(model_sha256s))
        rows = self._query(
            f"SELECT DISTINCT e.onnx_sha256 FROM model_exports e WHERE e.model_sha256 IN ({marks})"
            " AND NOT EXISTS (SELECT 1 FROM model_exports o JOIN models m ON m.sha256 ="
            " o.model_sha256 WHERE o.onnx_sha256 = e.onnx_sha256 AND m.id NOT IN"
            " (SELECT model_id FROM retired_models))",
            tuple(model_sha256s),
        )
        return [row["onnx_sha256"] for row in rows]

    def candidate(self, candidate_id: int) -> CandidateView:
        in_range = -(2**63) <= candidate_id < 2**63  # SQLite integers; larger ids do not exist
        found = self._candidates("c.id = ?", (candidate_id,)) if in_range else []
        if not found:
            raise NotFoundError(NO_CANDIDATE.format(id=candidate_id))
        return found[0]

    def candidates(
        self, individual: str | None = None, pending_only: bool = True
    ) -> list[CandidateView]:
        """Candidates in registration order: those pending review (or all of them), of one
        individual or of everyone."""
        where, parameters = [], []
        if pending_only:
            where.append(
                "c.status = 'pending_review' AND c.superseded_by IS NULL"
                " AND c.withdrawn_reason IS NULL"
            )
        if individual is not None:
            where.append("c.individual = ?")
            parameters.append(individual)
        return self._candidates(" AND ".join(where) or "TRUE", tuple(parameters))

    def session(self, session_id: int) -> SessionView:
        rows = self._query("SELECT * FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            raise TailormlError(f"no personalization session {session_id} in {self.root}")
        row = rows[0]
        return SessionView(
            id=row["id"],
            individual=row["individual"],
            created=row["created"],
            actor=row["actor"],
            predefined_model_id=row["predefined_model_id"],
            data_hash=row["data_hash"],
            refused_reason=row["refused_reason"],
            proposal_candidate_id=row["proposal_candidate_id"],
            summary=json.loads(row["summary_json"]),
            candidates=self._candidates("c.session_id = ?", (session_id,)),
        )

    def latest_session(self, individual: str) -> int | None:
        """The id of the individual's newest personalization session, if any."""
        rows = self._query(
            "SELECT id FROM sessions WHERE individual = ? ORDER BY id DESC LIMIT 1", (individual,)
        )
        return int(rows[0]["id"]) if rows else None

    def reviews(self, individual: str) -> list[ReviewView]:
        rows = self._query(
            "SELECT r.*, c.name AS candidate_name, c.individual FROM reviews r "
            "JOIN candidates c ON c.id = r.candidate_id WHERE c.individual = ? ORDER BY r.id",
            (individual,),
        )
        return [
            ReviewView(
                id=row["id"],
                candidate_id=row["candidate_id"],
                candidate_name=row["candidate_name"],
                individual=row["individual"],
                reviewer=row["reviewer"],
                role=row["role"],
                decision=row["decision"],
                comment=row["comment"],
                created=row["created"],
            )
            for row in rows
        ]

    def history(self, individual: str) -> list[Activation]:
        """Every change of the individual's active model, oldest first."""
        rows = self._query(
            "SELECT * FROM active_models WHERE individual = ? ORDER BY id", (individual,)
        )
        return [Activation(**dict(row)) for row in rows]

    def audit(self, individual: str | None = None) -> list[AuditEntry]:
        if individual is None:
            rows = self._query("SELECT * FROM audit_log ORDER BY id")
        else:
            rows = self._query(
                "SELECT * FROM audit_log WHERE individual = ? ORDER BY id", (individual,)
            )
        return [
            AuditEntry(
                id=row["id"],
                created=row["created"],
                actor=row["actor"],
                action=row["action"],
                individual=row["individual"],
                details=json.loads(row["details_json"]),
            )
            for row in rows
        ]

    def _candidates(self, where: str, parameters: tuple) -> list[CandidateView]:
        """Candidates matching `where` (over candidates c), with their gates, by id."""
        connection = self._reader()
        rows = connection.execute(
            "SELECT c.*, s.created FROM candidates c JOIN sessions s ON s.id = c.session_id "
            f"WHERE {where} ORDER BY c.id",
            parameters,
        ).fetchall()
        gates: dict[int, list[GateResult]] = {row["id"]: [] for row in rows}
        if rows:
            marks = ", ".join("?" * len(gates))
            for gate in connection.execute(
                f"SELECT * FROM gate_results WHERE candidate_id IN ({marks}) ORDER BY id",
                tuple(gates),
            ):
                gates[gate["candidate_id"]].append(
                    GateResult(
                        gate=gate["gate"],
                        passed=bool(gate["passed"]),
                        numbers=json.loads(gate["numbers_json"]),
                        reason=gate["reason"],
                    )
                )
        return [
            CandidateView(
                id=row["id"],
                session_id=row["session_id"],
                individual=row["individual"],
                name=row["name"],
                model_id=row["model_id"],
                threshold=row["threshold"],
                passed_gates=bool(row["passed_gates"]),
                status=_reading(row),
                metrics=json.loads(row["metrics_json"]),
                gates=gates[row["id"]],
                created=row["created"],
                superseded_by=row["superseded_by"],
                withdrawn_reason=row["withdrawn_reason"],
            )
            for row in rows
        ]
