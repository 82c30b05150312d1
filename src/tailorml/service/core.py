"""What the service does, without HTTP: each method takes the authenticated caller, checks
access, does the work through the registry, and records the access in the audit log.

The routes (`service.app`) only parse requests and shape responses; tests and the load
benchmark can call this directly, and every rule (who may see whom, what is sealed, what
is recorded) lives in one place.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tailorml.errors import NotFoundError, TailormlError
from tailorml.policy import MINUTE_MS
from tailorml.registry.models import Registry
from tailorml.registry.people import PeopleStore, Person
from tailorml.service import nightscout
from tailorml.service.auth import AccessDenied, may_access, subject
from tailorml.service.crypto import ServerKey
from tailorml.service.encrypted import EncryptedAlerts
from tailorml.service.jobs import JobRunner
from tailorml.service.keyring import Keyring
from tailorml.service.live import ALERT, ENTRY, TREATMENT, LiveAlerts
from tailorml.service.runtime import Runtimes

log = logging.getLogger("tailorml.service")


class Service:
    def __init__(
        self,
        data_dir: str | Path,
        server_key: ServerKey,
        config_path=None,
        durability: str = "normal",
        he_model: str | Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.store = PeopleStore(self.data_dir, durability)
        self.registry = Registry(self.data_dir)
        if self.registry.predefined() is None:
            raise TailormlError(
                f"{self.data_dir} has no predefined model; start with `tailorml serve --data "
                f"{self.data_dir} --predefined RUN` (a train or demo run directory)"
            )
        foreign = [k for k in self.store.wrapping_key_ids() if k != server_key.key_id]
        if foreign:
            # with another key every upload would be answered 400 and every reading lost:
            # refuse to start instead of reporting ok
            raise TailormlError(
                f"{self.data_dir} holds data keys wrapped by server key {', '.join(foreign)}, "
                f"not by the key given ({server_key.key_id}); start with the key that created "
                "them (--key-file or $TAILORML_SERVER_KEY)"
            )
        self.server_key = server_key
        self.keyring = Keyring(self.store, server_key)
        self.runtimes = Runtimes(self.registry, self.data_dir / "onnx")
        self.live = LiveAlerts(self.store, self.keyring, self.runtimes, clock)
        self.jobs = JobRunner(self.data_dir, server_key, config_path)
        self.encrypted = EncryptedAlerts(self.data_dir, Path(he_model) if he_model else None)

    # -- helpers -----------------------------------------------------------------------

    def _who(self, caller: Person) -> str:
        return f"{caller.name} ({caller.role})"

    def subject(self, caller: Person, patient: str | None, action: str) -> Person:
        try:
            return subject(self.store, caller, patient)
        except AccessDenied:
            # in the person's own audit view when the id is theirs (the answer stays the
            # same for a missing id, so ids still cannot be probed)
            target = self.store.find(patient) if patient else None
            self.store.record(
                self._who(caller),
                f"denied:{action}",
                target.id if target is not None else None,
                {"asked": patient},
            )
            raise

    def uploader(self, caller: Person, patient: str | None, action: str) -> Person:
        """Whose readings an upload adds to: a patient's own, or the patient a clinician
        names. A clinician has no readings of their own, so an upload without
        ?patient= is refused instead of landing in the clinician's account."""
        person = self.subject(caller, patient, action)
        if person.role != "patient":
            raise TailormlError(
                f"{person.name} is a {person.role} and keeps no readings; name the patient "
                "with ?patient=<their id> (p- and 12 hex digits)"
            )
        return person

    # -- entries and treatments ------------------------------------------------------------

    def upload_entries(self, caller: Person, payload: Any, patient: str | None = None):
        """Store entries (each once), decide each new CGM reading; returns the stored
        entries in Nightscout's shape and the new decisions."""
        person = self.uploader(caller, patient, "upload_entries")
        entries = nightscout.entries_from(payload)
        cipher = self.keyring.cipher(person.id)
        rows = [
            (
                e["date"],
                cipher.fingerprint("entry", e["type"], str(e["date"])),
                cipher.seal(nightscout.canonical(e), ENTRY),
            )
            for e in entries
        ]
        stored = self.store.add_entries(person.id, rows, self._who(caller))
        current_until = self.live.current_limit_ms(person.id)
        new_readings = [
            e["date"]
            for e, (_, new) in zip(entries, stored, strict=True)
            if new and e["type"] == "sgv" and e["date"] <= current_until
        ]
        try:
            decisions = self.live.decide(person.id, new_readings)
        except Exception as error:  # the readings are stored; say so instead of a silent gap
            log.exception("the active model of %s could not decide", person.id)
            decisions = self.live.undecided(person.id, new_readings, error)
        now = self.live.now_ms()
        kept = self._as_stored("entries", person.id, ENTRY, entries, stored)
        shaped = [
            e
            | {"_id": nightscout.object_id(row_id)}
            | _future_warning(e["date"], now, current_until)
            for e, (row_id, _) in zip(kept, stored, strict=True)
        ]
        return shaped, decisions

    def _as_stored(self, table, person_id, purpose, records, stored) -> list[dict]:
        """Each record as it is stored: a repeated one (same type and time) keeps the first
        upload's values, and the answer must show those, not the ones just sent."""
        repeated = [row_id for row_id, new in stored if not new]
        if not repeated:
            return list(records)
        cipher = self.keyring.cipher(person_id)
        sealed = self.store.sealed_by_id(table, person_id, repeated)
        return [
            record if new else json.loads(cipher.open(sealed[row_id], purpose))
            for record, (row_id, new) in zip(records, stored, strict=True)
        ]

    def entries(
        self,
        caller: Person,
        patient: str | None,
        count: int,
        since: int | None,
        until: int | None,
        kind: str | None,
    ) -> list[dict]:
        person = self.subject(caller, patient, "read_entries")
        out = self._opened(self.store.entries, person.id, ENTRY, count, since, until, "type", kind)
        self.store.record(self._who(caller), "read_entries", person.id, {"returned": len(out)})
        return out

    def _opened(self, rows_of, person_id, purpose, count, since, until, field, value):
        """Up to `count` records, newest first, opened; with `value`, only those whose sealed
        `field` equals it (read page by page: the filter cannot run in SQL)."""
        cipher = self.keyring.cipher(person_id)
        out: list[dict] = []
        page = count if value is None else max(count, 500)
        offset = 0
        while len(out) < count:
            rows = rows_of(person_id, since, until, page, offset)
            for row in rows:
                record = json.loads(cipher.open(row.sealed, purpose))
                if value is None or record.get(field) == value:
                    out.append(record | {"_id": nightscout.object_id(row.id)})
                    if len(out) == count:
                        break
            if len(rows) < page:
                break
            offset += page
        return out

    def upload_treatments(self, caller: Person, payload: Any, patient: str | None = None):
        person = self.uploader(caller, patient, "upload_treatments")
        treatments = nightscout.treatments_from(payload)
        cipher = self.keyring.cipher(person.id)
        rows = [
            (
                t["date"],
                cipher.fingerprint("treatment", nightscout.canonical(t).decode()),
                cipher.seal(nightscout.canonical(t), TREATMENT),
            )
            for t in treatments
        ]
        stored = self.store.add_treatments(person.id, rows, self._who(caller))
        return [
            t | {"_id": nightscout.object_id(row_id)}
            for t, (row_id, _) in zip(treatments, stored, strict=True)
        ]

    def treatments(self, caller, patient, count, since, until, kind) -> list[dict]:
        person = self.subject(caller, patient, "read_treatments")
        out = self._opened(
            self.store.treatments, person.id, TREATMENT, count, since, until, "eventType", kind
        )
        self.store.record(self._who(caller), "read_treatments", person.id, {"returned": len(out)})
        return out

    # -- alerts and models ----------------------------------------------------------------

    def current_entry(self, caller: Person, patient: str | None) -> list[dict]:
        """The newest CGM reading that is not in the future (a phone with a wrong clock
        must not hide the readings that are)."""
        person = self.subject(caller, patient, "read_entries")
        until = self.live.current_limit_ms(person.id)
        out = self._opened(self.store.entries, person.id, ENTRY, 1, None, until, "type", "sgv")
        self.store.record(self._who(caller), "read_entries", person.id, {"returned": len(out)})
        return out

    def current_alert(self, caller: Person, patient: str | None) -> dict:
        """The decision of the newest reading at or before the server's clock, with its
        age: stale after the policy's `stale_minutes`, an alarm after `stale_alarm_minutes`
        (as Nightscout), and whether it is an urgent low."""
        person = self.subject(caller, patient, "read_alerts")
        policy = self.live.policy_of(person.id)
        now = self.live.now_ms()
        found = self.live.history(person.id, None, now + policy.future_minutes * MINUTE_MS, 1)
        self.store.record(self._who(caller), "read_alerts", person.id, {"returned": len(found)})
        if not found:
            return {"decision": None, "message": "no CGM reading has been decided yet"}
        current = found[0]
        return (
            current
            | policy.staleness(current["reading_ms"], now)
            | {"urgent": current["decision"] == "urgent"}
        )

    def alerts(self, caller, patient, count, since, until) -> list[dict]:
        person = self.subject(caller, patient, "read_alerts")
        found = self.live.history(person.id, since, until, count)
        self.store.record(self._who(caller), "read_alerts", person.id, {"returned": len(found)})
        return found

    def active_model(self, caller, patient) -> dict:
        person = self.subject(caller, patient, "read_model")
        active = self.registry.active_model(person.id)
        self.store.record(self._who(caller), "read_model", person.id, {})
        return {
            "patient": person.id,
            "kind": active.kind,
            "model_id": active.model.id,
            "model_sha256": active.model.sha256,
            "candidate_id": active.candidate_id,
            "threshold": active.threshold
            if active.threshold is not None
            else self.runtimes.for_person(person.id).policy.threshold,
            "reason": active.reason,
            "since": active.created,
        }

    def rollback(self, caller, patient, reason: str) -> dict:
        person = self.subject(caller, patient, "rollback")
        self.registry.rollback(person.id, reason, actor=self._who(caller))
        self.runtimes.forget(person.id)
        return self.active_model(caller, person.id)

    # -- personalization and review ---------------------------------------------------------

    def request_personalization(self, caller, patient) -> dict:
        person = self.subject(caller, patient, "request_personalization")
        if person.role != "patient":
            raise TailormlError("only a patient's model can be personalized")
        job = self.store.add_job(person.id, self._who(caller))
        self.jobs.notify()
        return asdict(job)

    def jobs_of(self, caller, patient) -> list[dict]:
        person = self.subject(caller, patient, "read_jobs")
        return [asdict(job) for job in self.store.jobs(person.id)]

    def job(self, caller, job_id: int) -> dict:
        """A job of a person the caller may see; a missing and a forbidden id get the same
        answer, so ids cannot be probed."""
        try:
            job = self.store.job(job_id)
        except NotFoundError:
            job = None
        if job is None or not may_access(self.store, caller, job.person_id):
            raise AccessDenied(f"you have no access to job {job_id}")
        return asdict(job)

    def candidates(self, caller, patient, pending_only: bool) -> list[dict]:
        people = (
            [self.subject(caller, patient, "read_candidates").id]
            if patient is not None or caller.role == "patient"
            else self.store.patients_of(caller.id)
        )
        found = [
            _candidate(c)
            for person_id in people
            for c in self.registry.candidates(person_id, pending_only)
        ]
        for person_id in people:
            self.store.record(self._who(caller), "read_candidates", person_id, {})
        return found

    def _visible_candidate(self, caller, candidate_id: int):
        try:
            found = self.registry.candidate(candidate_id)
        except NotFoundError:
            found = None
        if found is None or not may_access(self.store, caller, found.individual):
            self.store.record(
                self._who(caller), "denied:read_candidate", None, {"candidate": candidate_id}
            )
            raise AccessDenied(f"you have no access to candidate {candidate_id}")
        return found

    def candidate(self, caller, candidate_id: int) -> dict:
        found = self._visible_candidate(caller, candidate_id)
        self.store.record(
            self._who(caller), "read_candidate", found.individual, {"candidate": candidate_id}
        )
        return _candidate(found)

    def review(self, caller, candidate_id: int, decision: str, comment: str) -> dict:
        """The assigned clinician approves or rejects a proposed candidate."""
        found = self._visible_candidate(caller, candidate_id)
        if caller.role != "clinician" or found.individual not in self.store.patients_of(caller.id):
            self.store.record(self._who(caller), "denied:review", None, {"candidate": candidate_id})
            raise AccessDenied("only a clinician assigned to this patient can review")
        decided = self.registry.decide(candidate_id, decision, caller.name, "expert", comment)
        self.runtimes.forget(found.individual)
        return _candidate(decided)

    def card_html(self, caller, patient: str) -> str | None:
        """The model card of the person's newest personalization session, drawn in memory
        from its sealed tables (the service never keeps a card with readings on disk);
        None before any session."""
        from tailorml.service.artifacts import sealed_reader
        from tailorml.soft.card import card_html

        person = self.subject(caller, patient, "read_card")
        self.store.record(self._who(caller), "read_card", person.id, {})
        session_id = self.registry.latest_session(person.id)
        if session_id is None:
            return None
        return card_html(self.registry, session_id, sealed_reader(self.keyring.cipher(person.id)))

    # -- encrypted alerts (the server cannot read the window) --------------------------------

    def encrypted_spec(self, caller) -> dict:
        return self.encrypted.spec()

    def require_patient(self, caller: Person) -> None:
        """Encrypted alerts are a patient's own: checked before a large body is read."""
        if caller.role != "patient":
            raise AccessDenied(
                "encrypted alerts are computed on a person's own CGM windows; use the "
                "patient's token on their device, not a clinician's"
            )

    def register_context(self, caller, data: bytes) -> dict:
        self.require_patient(caller)
        answer = self.encrypted.register(caller.id, data)
        self.store.record(
            self._who(caller),
            "register_he_context",
            caller.id,
            {"bytes": len(data), "context_sha256": answer["context_sha256"]}
            | ({"replaced": answer["replaced"]} if answer["replaced"] else {}),
        )
        return {"registered": True} | answer

    def encrypted_alert(
        self, caller, ciphertext: bytes, context_sha256: str | None, model_sha256: str | None
    ) -> bytes:
        """Encrypted logits for the caller's encrypted window; recorded without content."""
        self.require_patient(caller)
        answer = self.encrypted.evaluate(caller.id, ciphertext, context_sha256, model_sha256)
        self.store.record(
            self._who(caller),
            "encrypted_inference",
            caller.id,
            {
                "bytes_in": len(ciphertext),
                "bytes_out": len(answer),
                "model_sha256": self.encrypted.sha256,
            },
        )
        return answer

    # -- the person's own rights: export and erasure -----------------------------------------

    def export(self, caller) -> dict:
        everything = nightscout.MAX_COUNT * 1000
        cipher = self.keyring.cipher(caller.id)
        opened = {
            "entries": [
                json.loads(cipher.open(r.sealed, ENTRY))
                for r in self.store.entries(caller.id, limit=everything)
            ],
            "treatments": [
                json.loads(cipher.open(r.sealed, TREATMENT))
                for r in self.store.treatments(caller.id, limit=everything)
            ],
            "alerts": [
                json.loads(cipher.open(r.sealed, ALERT))
                for r in self.store.alerts(caller.id, limit=everything)
            ],
        }
        self.store.record(
            self._who(caller), "export", caller.id, {k: len(v) for k, v in opened.items()}
        )
        return {
            "person": {"id": caller.id, "name": caller.name, "role": caller.role},
            **opened,
            "models": {
                "active": self.registry.active_model(caller.id).kind,
                "history": [asdict(a) for a in self.registry.history(caller.id)],
            },
            "audit": [asdict(e) for e in self.registry.audit(caller.id)],
        }

    def audit(self, caller, patient) -> list[dict]:
        person = self.subject(caller, patient, "read_audit")
        return [asdict(e) for e in self.registry.audit(person.id)]

    def erase(self, person: Person, actor: str) -> dict:
        """Delete the person's readings, treatments, alerts and data key; retire every model
        trained on their data. Recorded (what and by whom), never the content."""
        self.encrypted.forget(person.id)  # first: frees space, so a full disk can still erase
        retired = self.registry.retire(person.id, "the person's data was erased", actor)
        counts = self.store.erase(person.id, actor, retired)
        self.keyring.forget(person.id)
        self.runtimes.forget(person.id)
        return counts | {"retired_models": retired}


def _future_warning(date_ms: int, now_ms: int, current_until: int) -> dict:
    """What the upload answer says of a reading dated ahead of the server's clock: it is
    stored, but it is not current, so it is not decided and cannot hide newer decisions."""
    if date_ms <= current_until:
        return {}
    ahead = (date_ms - now_ms) / MINUTE_MS
    return {
        "warning": f"dated {ahead:.0f} min after the server's clock: stored, not decided "
        "and not shown as current; check the uploading device's clock"
    }


def _candidate(c) -> dict:
    return {
        "id": c.id,
        "patient": c.individual,
        "name": c.name,
        "status": c.status,
        "threshold": c.threshold,
        "passed_gates": c.passed_gates,
        "created": c.created,
        "metrics": c.metrics,
        "gates": [
            {"gate": g.gate, "passed": g.passed, "outcome": g.outcome, "reason": g.reason}
            for g in c.gates
        ],
    }
