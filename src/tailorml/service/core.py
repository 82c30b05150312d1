"""What the service does, without HTTP: each method takes the authenticated caller, checks
access, does the work through the registry, and records the access in the audit log.

The routes (`service.routes`) only parse requests and shape responses; tests and the load
benchmark can call this directly, and every rule (who may see whom, what is sealed, what
is recorded) lives in one place.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tailorml.errors import NotFoundError, TailormlError
from tailorml.policy import MINUTE_MS
from tailorml.registry.consent import NotConsented
from tailorml.registry.models import Registry
from tailorml.registry.people import RECORD_TABLES, PeopleStore, Person, Write
from tailorml.service import nightscout
from tailorml.service.auth import AccessDenied, may_access, subject
from tailorml.service.crypto import ServerKey
from tailorml.service.encrypted import EncryptedAlerts
from tailorml.service.jobs import JobRunner
from tailorml.service.keyring import Keyring
from tailorml.service.live import ALERT, ENTRY, TREATMENT, LiveAlerts
from tailorml.service.nightscout import PayloadError
from tailorml.service.push import PUSHED, Pusher
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
        database: str | None = None,
        retention_days: int | None = None,
    ) -> None:
        """`database`: a `postgresql://` URL holding the tables (people, readings, the
        model registry); `data_dir` then keeps the files (model and ONNX files, job logs,
        session artifacts). Without it everything is in `data_dir`'s SQLite file.
        `retention_days`: readings and decisions older than that are removed by the
        housekeeping that runs with the jobs (`service.housekeeping`)."""
        self.data_dir = Path(data_dir)
        self.database_url = database
        self.store = PeopleStore(database or self.data_dir, durability)
        self.registry = Registry(self.data_dir, database)
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
        self.jobs = JobRunner(
            self.data_dir, server_key, config_path, database=database, retention_days=retention_days
        )
        self.encrypted = EncryptedAlerts(self.data_dir, Path(he_model) if he_model else None)
        self.push = Pusher(self.store, self.keyring)
        self._jwt_key: bytes | None = None

    def jwt_key(self) -> bytes:
        """The HS256 key of the JWTs API v3 clients exchange their token for: one per data
        directory (every API process signs and checks with it), generated on first use and
        kept wrapped by the server key, like the Web Push key."""
        if self._jwt_key is None:
            self._jwt_key, _ = self.keyring.service_secret(
                "nightscout-jwt", lambda: (secrets.token_bytes(32), "")
            )
        return self._jwt_key

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
        """Store entries, decide each new or corrected CGM reading; returns the stored
        entries in Nightscout's shape and the new decisions (`upload_entries_batch` also
        says which records were refused)."""
        stored, decisions, _ = self.upload_entries_batch(caller, payload, patient)
        return stored, decisions

    def upload_entries_batch(self, caller: Person, payload: Any, patient: str | None = None):
        shaped, decisions, bad, _ = self._upload_entries(caller, payload, patient)
        return shaped, decisions, bad

    def _upload_entries(self, caller, payload, patient=None, clean=nightscout.clean_entry):
        """(stored entries, decisions, refused records by index, what became of each stored
        one). `clean` reads one record (API v3 keeps an entry's identifier too).

        As Nightscout, an entry of the same type and time as a stored one replaces it when
        its content differs (a corrected value: the previous one stays in the record's
        history, and the reading and the stored decisions whose window holds it are decided
        again, as a backfill); the same content again is a retry, stored once; of several
        values for one reading in one batch only the last is stored, the others refused. The
        valid records of a batch are stored even when others are refused; a batch with none
        valid is a 422."""
        person = self.uploader(caller, patient, "upload_entries")
        good, bad = nightscout.partial(payload, "entries", clean)
        if not good:
            raise PayloadError(_refused(bad))
        good, superseded = nightscout.last_of_each(
            good, lambda _, e: (e["type"], e["date"]), "entries"
        )
        bad = sorted(bad + superseded, key=lambda b: b["index"])
        entries = [e for _, e in good]
        cipher = self.keyring.cipher(person.id)
        rows = [
            Write(
                e["date"],
                cipher.fingerprint("entry", e["type"], str(e["date"])),
                cipher.seal(nightscout.canonical(e), ENTRY),
                cipher.fingerprint("entry-content", nightscout.canonical(e).decode()),
                None,
                _identifier_key(cipher, "entries", e.get("identifier")),
            )
            for e in entries
        ]
        stored = self.store.add_entries(person.id, rows, self._who(caller))
        current_until = self.live.current_limit_ms(person.id)
        changed = [
            e["date"]
            for e, s in zip(entries, stored, strict=True)
            if s.outcome != "same" and e["type"] == "sgv" and e["date"] <= current_until
        ]
        corrected = [
            e["date"]
            for e, s in zip(entries, stored, strict=True)
            if s.outcome == "replaced" and e["type"] == "sgv" and e["date"] <= current_until
        ]
        to_decide = sorted(set(changed) | self._windows_holding(person.id, corrected))
        try:
            decisions = self.live.decide(person.id, to_decide)
        except Exception as error:  # the readings are stored; say so instead of a silent gap
            log.exception("the active model of %s could not decide", person.id)
            decisions = self.live.undecided(person.id, to_decide, error)
        self._push(person, decisions)
        if bad:
            self.store.record(
                self._who(caller),
                "refused_entries",
                person.id,
                {"refused": len(bad), "indexes": [b["index"] for b in bad][:100]},
            )
        now = self.live.now_ms()
        shaped = [
            e | {"_id": s.public_id} | _future_warning(e["date"], now, current_until)
            for e, s in zip(entries, stored, strict=True)
        ]
        return shaped, decisions, bad, stored

    def _push(self, person: Person, decisions) -> None:
        """The newest fresh alert or urgent low of an upload, as stored (the decisions are
        committed), queued for Web Push: a push never delays the answer, and a backfill of
        old readings does not ring anyone's phone."""
        if not decisions:
            return
        policy = self.live.policy_of(person.id)
        fresh_from = self.live.now_ms() - policy.stale_minutes * MINUTE_MS
        sounding = [d for d in decisions if d.decision in PUSHED and d.reading_ms >= fresh_from]
        if sounding:
            self.push.notify(person, max(sounding, key=lambda d: d.reading_ms).to_dict())

    def _windows_holding(self, person_id: str, corrected: list[int]) -> set[int]:
        """The stored CGM readings decided with a corrected reading in their window (the
        window's length after it), to be decided again with the corrected value."""
        if not corrected:
            return set()
        policy = self.live.policy_of(person_id)
        span = policy.window_minutes * MINUTE_MS
        until = self.live.current_limit_ms(person_id)
        cipher = self.keyring.cipher(person_id)
        found: set[int] = set()
        for at in corrected:
            for row in self.store.entries(person_id, at + 1, min(at + span, until), 10_000):
                if cipher.open_record(row.sealed, ENTRY).get("type") == "sgv":
                    found.add(row.date_ms)
        return found

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

    def entries_json(
        self,
        caller: Person,
        patient: str | None,
        count: int,
        since: int | None,
        until: int | None,
        kind: str | None,
    ) -> bytes:
        """`entries` as the JSON the API answers (what `json.dumps(self.entries(...),
        ensure_ascii=True)` writes): without a filter on a sealed field, each record's JSON
        is kept per ciphertext and id (`DataCipher.entry_json`) and the answer is their
        join, so a follower polling the same day reads the rows and opens only the new."""
        if kind is not None:
            out = self.entries(caller, patient, count, since, until, kind)
            return json.dumps(out, ensure_ascii=True, allow_nan=False).encode("ascii")
        person = self.subject(caller, patient, "read_entries")
        cipher = self.keyring.cipher(person.id)
        parts = [
            cipher.entry_json(sealed, public_id)
            for public_id, sealed in self.store.entry_blobs(person.id, since, until, count)
        ]
        self.store.record(self._who(caller), "read_entries", person.id, {"returned": len(parts)})
        return b"[" + b", ".join(parts) + b"]"

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
                record = cipher.open_record(row.sealed, purpose)
                if value is None or record.get(field) == value:
                    out.append(record | {"_id": row.public_id})
                    if len(out) == count:
                        break
            if len(rows) < page:
                break
            offset += page
        return out

    def upload_treatments(self, caller: Person, payload: Any, patient: str | None = None):
        stored, _ = self.upload_treatments_batch(caller, payload, patient)
        return stored

    def upload_treatments_batch(self, caller: Person, payload: Any, patient: str | None = None):
        """(stored treatments, refused records by index). Each treatment is kept whole. As
        Nightscout, one with the `identifier`, or the `_id`, of a stored treatment, or
        else its created_at and eventType, replaces that one (the previous content stays in
        its history)."""
        person = self.uploader(caller, patient, "upload_treatments")
        good, bad = nightscout.partial(payload, "treatments", nightscout.clean_treatment)
        if not good:
            raise PayloadError(_refused(bad))
        records = payload if isinstance(payload, list) else [payload]
        stored = []
        cipher = self.keyring.cipher(person.id)
        own_of = {i: nightscout.object_id_from(records[i].get("_id")) for i, _ in good}
        existing = self.store.existing_ids(
            "treatments", person.id, [i for i in own_of.values() if i]
        )

        def stored_as(index: int, treatment: dict) -> tuple:
            own = own_of[index]
            return ("id", own) if own in existing else nightscout.treatment_key(treatment)

        good, superseded = nightscout.last_of_each(good, stored_as, "treatments")
        bad = sorted(bad + superseded, key=lambda b: b["index"])
        own_ids = [own_of[i] for i, _ in good]
        by_id, by_key = [], []
        for (_, treatment), own in zip(good, own_ids, strict=True):
            write = self._treatment_write(cipher, treatment, own if own in existing else None)
            (by_id if write.public_id else by_key).append((treatment, write))
        results = {}
        for group, flag in ((by_key, False), (by_id, True)):
            if group:
                done = self.store.add_treatments(
                    person.id, [w for _, w in group], self._who(caller), by_id=flag
                )
                results.update({id(t): u for (t, _), u in zip(group, done, strict=True)})
        stored = [t | {"_id": results[id(t)].public_id} for _, t in good]
        if bad:
            self.store.record(
                self._who(caller),
                "refused_treatments",
                person.id,
                {"refused": len(bad), "indexes": [b["index"] for b in bad][:100]},
            )
        return stored, bad

    def _treatment_write(self, cipher, treatment: dict, public_id: str | None) -> Write:
        text = nightscout.canonical(treatment)
        return Write(
            treatment["date"],
            cipher.fingerprint(*nightscout.treatment_key(treatment)),
            cipher.seal(text, TREATMENT),
            cipher.fingerprint("treatment-content", text.decode()),
            public_id,
            _identifier_key(cipher, "treatments", treatment.get("identifier")),
        )

    def replace_treatment(self, caller: Person, payload: Any, patient: str | None = None) -> dict:
        """PUT /api/v1/treatments: the body replaces the stored treatment of its `_id`
        (Loop edits and AndroidAPS' updates); the previous content stays in its history. An
        `_id` the person has no treatment of stores a new one under that id, as
        Nightscout's PUT (an upsert) does."""
        person = self.uploader(caller, patient, "update_treatments")
        if not isinstance(payload, dict):
            raise PayloadError("treatments: PUT takes one treatment (a JSON object) with its _id")
        public_id = nightscout.object_id_from(payload.get("_id"))
        if public_id is None:
            raise PayloadError(
                "treatments._id: required, 24 hex digits (the id the upload answered)"
            )
        treatment = nightscout.clean_treatment(payload, "treatments")
        write = self._treatment_write(self.keyring.cipher(person.id), treatment, public_id)
        (done,) = self.store.add_treatments(person.id, [write], self._who(caller), by_id=True)
        return treatment | {"_id": done.public_id}

    def delete_treatment(self, caller: Person, public_id: str, patient: str | None = None):
        """DELETE /api/v1/treatments/{id}: Nightscout's answer ({"n": deleted, "ok": 1});
        an id the person has no treatment of deletes nothing (n 0), whoever else has it."""
        person = self.uploader(caller, patient, "delete_treatments")
        wanted = nightscout.object_id_from(public_id)
        deleted = (
            self.store.delete("treatments", person.id, wanted, self._who(caller))
            if wanted
            else None
        )
        return {"n": int(deleted is not None), "ok": 1}

    def treatments(self, caller, patient, count, since, until, kind) -> list[dict]:
        person = self.subject(caller, patient, "read_treatments")
        out = self._opened(
            self.store.treatments, person.id, TREATMENT, count, since, until, "eventType", kind
        )
        self.store.record(self._who(caller), "read_treatments", person.id, {"returned": len(out)})
        return out

    # -- devicestatus and profile: Nightscout documents, stored whole -----------------------

    def upload_documents(self, caller: Person, collection: str, payload, patient=None):
        """(stored documents with their _id, refused by index) of devicestatus or profile."""
        person = self.uploader(caller, patient, f"upload_{collection}")
        now = self.live.now_ms()
        good, bad = nightscout.partial(
            payload, collection, lambda r, where: nightscout.clean_document(r, where, now)
        )
        if not good:
            raise PayloadError(_refused(bad))
        cipher = self.keyring.cipher(person.id)
        docs = [d for _, d in good]
        ids = self.store.add_documents(
            person.id,
            collection,
            [self._document_write(cipher, collection, d) for d in docs],
            self._who(caller),
        )
        return [d | {"_id": i} for d, i in zip(docs, ids, strict=True)], bad

    def _document_write(self, cipher, collection: str, doc: dict) -> tuple:
        """(time, sealed, natural key, identifier key) of a document: the key is what makes
        two uploads the same document for API v3 (Nightscout's deduplication fields)."""
        return (
            doc["mills"],
            cipher.seal(nightscout.canonical(doc), collection),
            _natural_key(cipher, collection, doc),
            _identifier_key(cipher, collection, doc.get("identifier")),
        )

    def documents(self, caller, collection: str, patient, count, since, until) -> list[dict]:
        person = self.subject(caller, patient, f"read_{collection}")
        out = self._documents(person.id, collection, count, since, until)
        self.store.record(
            self._who(caller), f"read_{collection}", person.id, {"returned": len(out)}
        )
        return out

    def _documents(self, person_id, collection, count, since=None, until=None) -> list[dict]:
        cipher = self.keyring.cipher(person_id)
        return [
            json.loads(cipher.open(row.sealed, collection)) | {"_id": row.public_id}
            for row in self.store.documents(person_id, collection, since, until, count)
        ]

    # -- Nightscout API v3 (AndroidAPS' NSClient): the same records, by identifier ---------

    def v3_last_modified(self, caller: Person, patient: str | None) -> dict[str, int]:
        """The newest server modification time of each collection (deletions included)."""
        person = self.subject(caller, patient, "read_last_modified")
        return self.store.last_modified(person.id)

    def v3_search(
        self,
        caller: Person,
        patient: str | None,
        collection: str,
        bounds: dict[str, tuple[int | None, int | None]],
        order: tuple[str, bool],
        matches: Callable[[dict], bool],
        skip: int,
        limit: int,
    ) -> list[dict]:
        """Stored records of `collection` within `bounds` (column -> inclusive range), in
        `order` (column, descending), those that `matches` (filters on other fields: opened
        page by page, the fields are sealed), after `skip` of them, at most `limit`."""
        person = self.subject(caller, patient, f"read_{collection}")
        wanted, offset, out = skip + limit, 0, []
        page = max(wanted, 500)
        while len(out) < wanted:
            rows = self.store.v3_rows(collection, person.id, bounds, *order, page, offset)
            out += [d for d in (self._v3_opened(person.id, r) for r in rows) if matches(d)]
            if len(rows) < page:
                break
            offset += page
        out = out[skip:wanted]
        self.store.record(
            self._who(caller), f"read_{collection}", person.id, {"returned": len(out)}
        )
        return out

    def v3_history(self, caller, patient, collection: str, after_ms: int, inclusive: bool, limit):
        """Records changed or deleted after `after_ms`, oldest change first; a deleted one
        with `isValid: false`."""
        person = self.subject(caller, patient, f"read_{collection}")
        rows = self.store.v3_history(collection, person.id, after_ms, inclusive, limit)
        out = [self._v3_opened(person.id, row) for row in rows]
        self.store.record(
            self._who(caller), f"read_{collection}", person.id, {"returned": len(out)}
        )
        return out

    def v3_read(self, caller, patient, collection: str, identifier: str) -> dict | None:
        """The record of that identifier; None when there is none (`V3Gone` when it was
        deleted)."""
        person = self.subject(caller, patient, f"read_{collection}")
        row = self._v3_row(person.id, collection, identifier)
        if row is None:
            self._v3_gone(person.id, collection, identifier)
            return None
        self._read(caller, collection, person.id, 1)
        return self._v3_opened(person.id, row)

    def _read(self, caller: Person, collection: str, person_id: str, returned: int) -> None:
        self.store.record(
            self._who(caller), f"read_{collection}", person_id, {"returned": returned}
        )

    def v3_create(self, caller, patient, collection: str, record: Any) -> dict:
        """Nightscout's CREATE: a record with the identifier of a stored one, or else its
        deduplication fields (`_natural_key`), replaces it (200, `isDeduplication`);
        otherwise it is new (201). Entries go through the v1 upload (decided live alike)."""
        person = self.uploader(caller, patient, f"upload_{collection}")
        clean = self._v3_clean(collection, record)
        cipher = self.keyring.cipher(person.id)
        found = self._v3_row(person.id, collection, clean.get("identifier"))
        if found is None:
            key = _natural_key(cipher, collection, clean)
            found = self.store.v3_find(collection, person.id, "fingerprint", [key] if key else [])
        before = self._v3_opened(person.id, found) if found is not None else None
        if before is not None:
            _v3_immutable(collection, clean, before, except_identifier=True)
            clean.setdefault("identifier", before.get("identifier"))
            if clean["identifier"] == found.public_id:
                del clean["identifier"]  # the record's own id: nothing to keep
        public_id, modified = self._v3_write(caller, person, collection, clean, found)
        identifier = clean.get("identifier") or public_id
        answer = {"identifier": identifier, "lastModified": modified}
        if before is None:
            return {"status": 201} | answer
        answer |= {"isDeduplication": True}
        if before["identifier"] != identifier:
            answer["deduplicatedIdentifier"] = before["identifier"]
        return {"status": 200} | answer

    def v3_update(self, caller, patient, collection, identifier: str, record: Any, patch: bool):
        """Replace (PUT: the record replaced whole, or created under that identifier: 201) or
        PATCH (the fields given replace the stored ones; none stored: None). The fields
        Nightscout keeps immutable (date, utcOffset, eventType, device, app) cannot change."""
        person = self.uploader(caller, patient, f"update_{collection}")
        found = self._v3_row(person.id, collection, identifier)
        if found is None and patch:
            self._v3_gone(person.id, collection, identifier)
            return None
        if not isinstance(record, dict) or not record:
            raise PayloadError("Bad or missing request body")
        if found is not None:
            before = self._v3_opened(person.id, found)
            given = {k: v for k, v in record.items() if k not in V3_SERVER_FIELDS}
            _v3_immutable(collection, given, before, except_identifier=False)
            stored = {k: v for k, v in before.items() if k not in V3_SERVER_FIELDS}
            record = (stored | given) if patch else given
        own = found is not None and identifier == found.public_id  # the record's id, not a client's
        record = dict(record) | ({} if own else {"identifier": identifier})
        clean = self._v3_clean(collection, record)
        public_id, modified = self._v3_write(caller, person, collection, clean, found)
        return {"status": 200 if found is not None else 201, "lastModified": modified} | (
            {} if found is not None else {"identifier": clean.get("identifier") or public_id}
        )

    def v3_delete(self, caller, patient, collection: str, identifier: str) -> bool:
        """DELETE: the record goes, its tombstone stays for the history (`isValid: false`);
        entries and treatments keep their content in `replaced` as a v1 delete does."""
        person = self.uploader(caller, patient, f"delete_{collection}")
        found = self._v3_row(person.id, collection, identifier)
        if found is None:
            return False
        if collection in RECORD_TABLES:
            self.store.delete(collection, person.id, found.public_id, self._who(caller))
        else:
            self.store.delete_document(person.id, collection, found.public_id, self._who(caller))
        return True

    def _v3_row(self, person_id: str, collection: str, identifier: Any):
        """The live record whose identifier (or id) this is."""
        if not isinstance(identifier, str) or not identifier:
            return None
        key = _identifier_key(self.keyring.cipher(person_id), collection, identifier)
        # a treatment stored over v1 before API v3 has its identifier as its key only
        by = ("identifier", "fingerprint") if collection == "treatments" else ("identifier",)
        for column in by:
            found = self.store.v3_find(collection, person_id, column, [key])
            if found is not None:
                return found
        if nightscout.OBJECT_ID.match(identifier):
            return self.store.v3_find(collection, person_id, "public_id", [identifier])
        return None

    def _v3_gone(self, person_id: str, collection: str, identifier: str) -> None:
        key = _identifier_key(self.keyring.cipher(person_id), collection, identifier)
        if self.store.v3_buried(collection, person_id, [identifier, key or ""]):
            raise V3Gone(f"{collection} {identifier[:64]} was deleted")

    def _v3_opened(self, person_id: str, row) -> dict:
        """A stored record as API v3 answers it: its identifier (the client's, or its id),
        its server times, and `isValid: false` when it is a deleted one's tombstone."""
        purpose = {"entries": ENTRY, "treatments": TREATMENT}.get(row.collection, row.collection)
        record = json.loads(self.keyring.cipher(person_id).open(row.sealed, purpose))
        record |= {
            "identifier": record.get("identifier") or row.public_id,
            "srvModified": row.srv_modified,
            "srvCreated": row.srv_created,
        }
        return record | ({"isValid": False} if row.deleted else {})

    def _v3_clean(self, collection: str, record: Any) -> dict:
        """One record checked as its v1 upload is (`nightscout`), without the fields the
        server sets; an entry also keeps the v3 fields AndroidAPS sends (identifier, app,
        units)."""
        if not isinstance(record, dict) or not record:
            raise PayloadError("Bad or missing request body")
        record = {k: v for k, v in record.items() if k not in V3_SERVER_FIELDS}
        identifier = record.get("identifier")
        if identifier is not None and (
            not isinstance(identifier, str)
            or not 0 < len(identifier) <= 128
            or any(ord(c) < 32 for c in identifier)
        ):
            raise PayloadError(f"{collection}.identifier: 1 to 128 printable characters")
        if collection == "entries":
            clean = nightscout.clean_entry(record, collection)
            kept = {k: record[k] for k in ("identifier", "app", "units") if record.get(k)}
            for key, value in kept.items():
                if not isinstance(value, str) or len(value) > 128:
                    raise PayloadError(f"entries.{key}: must be a string of 128 characters at most")
            return clean | nightscout.document(kept, collection)
        if collection == "treatments":
            return nightscout.clean_treatment(record, collection)
        return nightscout.clean_document(record, collection, self.live.now_ms())

    def _v3_write(self, caller, person, collection, clean: dict, found) -> tuple[str, int]:
        """Store one cleaned record (replacing `found`), through the v1 path of its kind:
        (its id, its server modification time)."""
        if collection == "entries":
            _, _, _, (stored,) = self._upload_entries(
                caller, [clean], person.id, clean=lambda record, where: record
            )
            return stored.public_id, stored.srv_modified
        if collection == "treatments":
            sent = clean | ({"_id": found.public_id} if found is not None else {})
            ((done, *_), _) = self.upload_treatments_batch(caller, [sent], person.id)
            row = self.store.v3_find(collection, person.id, "public_id", [done["_id"]])
            return row.public_id, row.srv_modified
        cipher = self.keyring.cipher(person.id)
        write = self._document_write(cipher, collection, clean)
        if found is not None:
            modified = self.store.replace_document(
                person.id, collection, found.public_id, write, self._who(caller)
            )
            return found.public_id, modified
        (public_id,) = self.store.add_documents(person.id, collection, [write], self._who(caller))
        row = self.store.v3_find(collection, person.id, "public_id", [public_id])
        return public_id, row.srv_modified

    # -- what follower apps read: properties and pebble ------------------------------------

    def properties(self, caller, patient, wanted: list[str] | None = None) -> dict:
        """Nightscout's /api/v2/properties: bgnow, delta, direction, iob, cob, upbat (from
        the newest readings and devicestatus) and tailorml's own alert as `tailorml`."""
        person = self.subject(caller, patient, "read_properties")
        until = self.live.current_limit_ms(person.id)
        readings = self._opened(self.store.entries, person.id, ENTRY, 2, None, until, "type", "sgv")
        statuses = self._documents(person.id, "devicestatus", 10)
        found = nightscout.properties(readings, statuses, self._alert_of(person.id))
        self.store.record(self._who(caller), "read_properties", person.id, {})
        return {k: v for k, v in found.items() if not wanted or k in wanted}

    def _alert_of(self, person_id: str) -> dict | None:
        policy = self.live.policy_of(person_id)
        now = self.live.now_ms()
        found = self.live.history(person_id, None, now + policy.future_minutes * MINUTE_MS, 1)
        if not found:
            return None
        return found[0] | policy.staleness(found[0]["reading_ms"], now)

    def pebble(self, caller, patient, count: int) -> dict:
        """Nightscout's /pebble (Nightguard, watch faces): the newest readings with their
        trend numbers and deltas, uploader battery, IOB and COB."""
        person = self.subject(caller, patient, "read_entries")
        until = self.live.current_limit_ms(person.id)
        readings = self._opened(
            self.store.entries, person.id, ENTRY, count + 1, None, until, "type", "sgv"
        )
        statuses = self._documents(person.id, "devicestatus", 10)
        self.store.record(self._who(caller), "read_entries", person.id, {"returned": count})
        return nightscout.pebble(readings, statuses, count, self.live.now_ms())

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
        try:
            job = self.store.add_job(person.id, self._who(caller))
        except NotConsented as error:
            self.store.record(self._who(caller), "denied:personalization", person.id, {})
            raise AccessDenied(str(error)) from None
        self.jobs.notify()
        return job.public()

    def jobs_of(self, caller, patient) -> list[dict]:
        person = self.subject(caller, patient, "read_jobs")
        return [job.public() for job in self.store.jobs(person.id)]

    def job(self, caller, job_id: int) -> dict:
        """A job of a person the caller may see; a missing and a forbidden id get the same
        answer, so ids cannot be probed."""
        try:
            job = self.store.job(job_id)
        except NotFoundError:
            job = None
        if job is None or not may_access(self.store, caller, job.person_id):
            raise AccessDenied(f"you have no access to job {job_id}")
        return job.public()

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
        # without consent to personalization the registry refuses an approval (the CLI too)
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
                cipher.open_record(r.sealed, ENTRY)
                for r in self.store.entries(caller.id, limit=everything)
            ],
            "treatments": [
                json.loads(cipher.open(r.sealed, TREATMENT))
                for r in self.store.treatments(caller.id, limit=everything)
            ],
            "alerts": [
                cipher.open_record(r.sealed, ALERT)
                for r in self.store.alerts(caller.id, limit=everything)
            ],
            **{
                collection: self._documents(caller.id, collection, everything)
                for collection in ("devicestatus", "profile", "food", "settings")
            },
            # corrected and deleted records: what they held before, who changed them, when
            "replaced": [
                {k: v for k, v in r.items() if k != "sealed"}
                | {
                    "record": json.loads(
                        cipher.open(
                            r["sealed"], ENTRY if r["record_table"] == "entries" else TREATMENT
                        )
                    )
                }
                for r in self.store.replaced(caller.id)
            ],
        }
        self.store.record(
            self._who(caller), "export", caller.id, {k: len(v) for k, v in opened.items()}
        )
        self.store.flush_reads()  # the batched read lines (`PeopleStore.record`) too
        return {
            "person": {"id": caller.id, "name": caller.name, "role": caller.role},
            **opened,
            "models": {
                "active": self.registry.active_model(caller.id).kind,
                "history": [asdict(a) for a in self.registry.history(caller.id)],
            },
            "audit": [asdict(e) for e in self.registry.audit(caller.id)],
            "consents": [c.public() for c in self.store.consent_history(caller.id)],
            "push_subscriptions": self.push.subscriptions(caller),
        }

    # -- consent (registry.consent) ----------------------------------------------------------

    def consent(self, caller: Person) -> dict:
        """The patient's consents now (to personalization, to each assigned clinician's
        access: who recorded each and when) and their history."""
        if caller.role != "patient":
            raise AccessDenied(
                "consent is given by a patient; a clinician sees the patients who consent to "
                "their access in GET /api/v1/people/me"
            )
        history = self.store.consent_history(caller.id)

        def now_of(scope: str, clinician: str | None) -> dict:
            found = [c for c in history if c.scope == scope and c.clinician_id == clinician]
            last = found[-1] if found else None
            return {
                "granted": bool(last and last.granted),
                "since": last.created if last else None,
                "source": last.source if last else None,
                "by": last.actor if last else None,
            }

        clinicians = [
            {"id": c, "name": self.store.person(c).name} | now_of("clinician_access", c)
            for c in self.store.clinicians_of(caller.id, consenting=False)
        ]
        self.store.record(self._who(caller), "read_consent", caller.id, {})
        return {
            "patient": caller.id,
            "personalization": now_of("personalization", None),
            "clinicians": clinicians,
            "history": [c.public() for c in history],
        }

    def set_consent(self, caller: Person, changes: dict) -> dict:
        """Grant or withdraw, as the patient: `{"personalization": bool, "clinicians":
        {id: bool}}` (either part). Withdrawing personalization stops the patient's jobs
        and rolls a personalized model back to the predefined one (recorded); withdrawing a
        clinician's access ends it at that clinician's next request."""
        if caller.role != "patient":
            raise AccessDenied("consent is given by a patient, for their own data")
        actor = self._who(caller)
        for clinician, grant in (changes.get("clinicians") or {}).items():
            if clinician not in self.store.clinicians_of(caller.id, consenting=False):
                raise PayloadError(
                    f"clinicians.{clinician[:40]}: not a clinician assigned to you; "
                    "GET /api/v1/people/me/consent lists them"
                )
            self.store.set_consent(caller.id, grant, actor, "patient", clinician)
        if changes.get("personalization") is not None:
            self.store.set_consent(caller.id, changes["personalization"], actor, "patient")
        if changes.get("personalization") is False:
            self.stop_personalized(caller.id, actor)
        return self.consent(caller)

    def stop_personalized(self, person_id: str, actor: str) -> None:
        """Without consent to personalization the person is decided by the predefined
        model: a personalized active model is rolled back (recorded)."""
        if self.registry.active_model(person_id).kind == "personalized":
            self.registry.rollback(person_id, "consent to personalization withdrawn", actor)
        self.runtimes.forget(person_id)

    # -- Web Push (service.push) ----------------------------------------------------------

    def push_subscriptions(self, caller: Person) -> dict:
        return {
            "vapid_public_key": self.push.public_key(),
            "subscriptions": self.push.subscriptions(caller),
        }

    def subscribe(self, caller: Person, payload: Any) -> dict:
        """A browser of the caller's receives their alerts (a clinician's: those of the
        patients who consent to their access)."""
        self.push.public_key()  # generated before the first subscription needs it
        return self.push.subscribe(caller, payload, self._who(caller))

    def unsubscribe(self, caller: Person, public_id: str) -> dict:
        removed = self.store.remove_subscription(caller.id, public_id, self._who(caller))
        return {"n": int(removed), "ok": 1}

    def audit(self, caller, patient) -> list[dict]:
        person = self.subject(caller, patient, "read_audit")
        self.store.flush_reads()  # the batched read lines (`PeopleStore.record`) first
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

    # -- the review page: a candidate's own session ------------------------------------------

    def candidate_card_html(self, caller, candidate_id: int) -> str:
        """The model card of the session that proposed `candidate_id` (not the person's
        newest session), drawn in memory from its sealed tables."""
        from tailorml.service.artifacts import sealed_reader
        from tailorml.soft.card import card_html

        found = self._visible_candidate(caller, candidate_id)
        self.store.record(
            self._who(caller), "read_card", found.individual, {"candidate": candidate_id}
        )
        cipher = self.keyring.cipher(found.individual)
        return card_html(self.registry, found.session_id, sealed_reader(cipher))

    def held_out_days(self, caller, candidate_id: int) -> float | None:
        """How many days of held-out windows the candidate's session judged (as its alert
        metrics count them: windows × grid step); None without its sealed tables."""
        from tailorml.policy import AlertPolicy
        from tailorml.service.artifacts import sealed_reader

        found = self._visible_candidate(caller, candidate_id)
        summary = self.registry.session(found.session_id).summary
        key = str(summary.get("artifacts") or "")
        if not key.isalnum() or "policy" not in summary:
            return None
        read = sealed_reader(self.keyring.cipher(found.individual))
        predictions = read(self.registry.root / "artifacts" / key / "predictions.parquet")
        if predictions is None or not len(predictions):
            return None
        step = AlertPolicy.from_dict(summary["policy"], "session summary").sample_minutes
        return len(predictions) * step / 1440


# what the server sets on a v3 record (a client's value is not stored), and what Nightscout's
# update keeps as it was (lib/api3/generic/update/validate.js); an entry's type is its key too
V3_SERVER_FIELDS = frozenset(
    ("srvModified", "srvCreated", "subject", "modifiedBy", "isValid", "_id")
)
V3_IMMUTABLE = ("identifier", "date", "utcOffset", "eventType", "device", "app")


class V3Gone(TailormlError):
    """410: the record of that identifier was deleted (API v3 READ and PATCH)."""


def _v3_immutable(collection: str, given: dict, stored: dict, except_identifier: bool) -> None:
    """Nightscout's 400 "Field X cannot be modified by the client" (AndroidAPS reads it)."""
    fields = V3_IMMUTABLE + (("type",) if collection == "entries" else ())
    for field in fields:
        if field == "identifier" and except_identifier:
            continue
        if field in given and field in stored and given[field] != stored[field]:
            raise PayloadError(f"Field {field} cannot be modified by the client")


def _identifier_key(cipher, collection: str, identifier: Any) -> str | None:
    """The keyed fingerprint an API v3 identifier is found by. A treatment's is its v1 key
    (`nightscout.treatment_key`): an identifier is which treatment an upload is, either way."""
    if not isinstance(identifier, str) or not identifier:
        return None
    if collection == "treatments":
        return cipher.fingerprint("treatment-identifier", identifier)
    return cipher.fingerprint(f"{collection}-identifier", identifier)


def _natural_key(cipher, collection: str, record: dict) -> str | None:
    """What else makes two uploads one record, as Nightscout's API v3 deduplicates (its
    `dedupFallbackFields`): an entry's type and date, a treatment's created_at and eventType
    (both the v1 keys), a devicestatus' created_at and device, a profile's or food's
    created_at; settings have none."""
    if collection == "entries":
        return cipher.fingerprint("entry", record["type"], str(record["date"]))
    if collection == "treatments":
        return cipher.fingerprint("treatment", str(record["date"]), record["eventType"])
    if collection == "devicestatus":
        return cipher.fingerprint("devicestatus", str(record["mills"]), str(record.get("device")))
    if collection in ("profile", "food"):
        return cipher.fingerprint(collection, str(record["mills"]))
    return None


def _refused(bad: list[dict]) -> str:
    """The 422 message of a batch with no valid record: the first refusal, and how many."""
    more = f" (and {len(bad) - 1:,} more records refused)" if len(bad) > 1 else ""
    return bad[0]["message"] + more


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
