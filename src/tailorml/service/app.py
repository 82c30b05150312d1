"""The HTTP routes: Nightscout's API where uploaders expect it, tailorml's beside it.

Routes only parse and shape; `service.core.Service` decides and records. Every error is a
JSON body `{"status": code, "message": one line}`: 401 for missing or bad credentials, 403
for someone else's data, 400/422 for a bad request (naming the record and field), 413 for an
oversized body, 409 (with a `reason`) for an encrypted request made for a context or model
the server no longer has, 408 for a public context sent too slowly, 429 when the same
account is already uploading one, 503 when too many contexts are being uploaded, 507 when
storage is full — and nothing of a rejected request is stored.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import sqlite3
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from tailorml import __version__
from tailorml.errors import NotFoundError, TailormlError
from tailorml.privacy.wire import CONTEXT_HEADER, MODEL_HEADER
from tailorml.registry.people import Person
from tailorml.service import nightscout
from tailorml.service import openapi as api
from tailorml.service.auth import AccessDenied, AuthError, resolve
from tailorml.service.core import Service
from tailorml.service.encrypted import MAX_CIPHERTEXT_BYTES, ConflictError
from tailorml.service.nightscout import PayloadError
from tailorml.service.paths import without_paths

log = logging.getLogger("tailorml.service")

CONTEXT_ADVICE = "send EncryptedAlertClient.public_context() (the model's spec fixes its size)"
# Public contexts being uploaded are held in memory: together they may reserve this much,
# each the served model's context limit (55 MB for the 3-level chain: 12 at once; 272 MB
# for the 5-level one: 2).
CONTEXT_UPLOAD_BYTES = 640 * 1024 * 1024
# An upload holds its reservation until it ends: after a grace period it must keep arriving
# at 64 KiB/s on average (a 50 MB context: 13 minutes) and never pause for 30 s, or a client
# sending a byte now and then, or gone without closing, would hold it as long as it liked.
CONTEXT_GRACE_SECONDS = 30.0
CONTEXT_MIN_BYTES_PER_SECOND = 64 * 1024
CONTEXT_IDLE_SECONDS = 30.0
CIPHERTEXT_ADVICE = "encrypt at most the spec's max_batch windows per ciphertext"


class TooLarge(PayloadError):
    """413."""


class Busy(TailormlError):
    """503 (the server is at capacity for this kind of request) or 429 (this account
    already has such a request under way); retry later."""

    def __init__(self, message: str, status: int = 503, retry_after: int = 60) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class TooSlow(TailormlError):
    """408: the body arrived slower than the service's floor, or stopped arriving."""


class Disconnected(Exception):
    """The client went away mid-upload: nobody is left to answer."""


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII characters escaped: valid JSON for any stored text, so a record
    stored before lone surrogates were refused still reads back instead of answering 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": status, "message": message}, status_code=status)


async def read_body(
    request: Request,
    limit: int = nightscout.MAX_BODY_BYTES,
    advice: str = "send fewer records per request",
    min_rate: float | None = None,
    grace: float = CONTEXT_GRACE_SECONDS,
    idle: float = CONTEXT_IDLE_SECONDS,
    what: str = "the body",
) -> bytes:
    """The body, refused past `limit` bytes without reading the rest; with `min_rate`
    (bytes/s), also refused once it falls behind `grace` seconds plus that rate, or no byte
    came for `idle` seconds."""
    declared = request.headers.get("content-length")
    if declared and nightscout.WHOLE_NUMBER.fullmatch(declared) and int(declared) > limit:
        raise TooLarge(f"body of {int(declared):,} bytes exceeds {limit:,}; {advice}")
    chunks, size = [], 0
    clock = asyncio.get_running_loop().time
    start = last = clock()
    stream = request.stream().__aiter__()
    try:
        while True:
            wait = None
            if min_rate is not None:
                behind, stalled = start + grace + size / min_rate, last + idle
                wait = min(behind, stalled) - clock()
            try:
                chunk = await asyncio.wait_for(anext(stream), wait)
            except StopAsyncIteration:
                break
            except TimeoutError:
                received = f"{size:,} bytes in {clock() - start:,.0f} s"
                if stalled <= behind:
                    raise TooSlow(
                        f"no byte of {what} came for {idle:.0f} s ({received}); check the "
                        "connection and send it again"
                    ) from None
                raise TooSlow(
                    f"{what} arrived slower than {min_rate / 1024:,.0f} KiB/s after the first "
                    f"{grace:.0f} s ({received}); send it over a faster connection"
                ) from None
            last = clock()
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"body exceeds {limit:,} bytes; {advice}")
            chunks.append(chunk)
    except ClientDisconnect:
        raise Disconnected() from None
    return b"".join(chunks)


def caller_of(service: Service, request: Request) -> Person:
    person = resolve(
        service.store,
        api_secret=request.headers.get("api-secret"),
        token=request.query_params.get("token"),
        authorization=request.headers.get("authorization"),
    )  # never the review page's session cookie: it opens the review pages only
    request.state.person = person.id  # log lines about the request name the account
    return person


def create_app(service: Service, run_jobs: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # the predefined model is exported before the first upload, not during it
        await run_in_threadpool(service.runtimes.session, service.registry.predefined())
        if service.encrypted.model is not None:  # the upload limit needs a keygen: not in a request
            threading.Thread(target=service.encrypted.context_limit, daemon=True).start()
        if run_jobs:
            service.jobs.start()
        yield
        if run_jobs:
            service.jobs.stop()

    app = FastAPI(
        title="tailorml service",
        version=__version__,
        description="Nightscout-compatible CGM uploads, live glucose alerts, personalization "
        "with clinician review. Synthetic models are demonstrations, not clinical devices.",
        lifespan=lifespan,
        # the interactive docs pages load scripts from a CDN; nothing is fetched at run time
        docs_url=None,
        redoc_url=None,
        default_response_class=AsciiJSONResponse,
    )
    api.install(app)  # bodies, parameters, errors and credentials in /openapi.json
    app.state.service = service
    uploading: dict[str, int] = {}  # account -> bytes reserved by its context upload

    @app.exception_handler(AuthError)
    async def _auth(request: Request, error: AuthError):
        return _error(401, str(error))

    @app.exception_handler(AccessDenied)
    async def _denied(request: Request, error: AccessDenied):
        return _error(403, str(error))

    @app.exception_handler(TooLarge)
    async def _large(request: Request, error: TooLarge):
        return _error(413, str(error))

    @app.exception_handler(PayloadError)
    async def _payload(request: Request, error: PayloadError):
        return _error(422, str(error))

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, error: ConflictError):
        answer = {"status": 409, "message": str(error), "reason": error.reason}
        return JSONResponse(answer, status_code=409)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError):
        # FastAPI's own checks (a path id that is not a whole number) in the API's shape
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
            for e in error.errors()
        )
        return _error(422, problems or "invalid request")

    @app.middleware("http")
    async def _no_store(request: Request, call_next):
        # answers carry health data: never cached by a browser or proxy, never sniffed
        answer = await call_next(request)
        answer.headers.setdefault("Cache-Control", "no-store")
        answer.headers.setdefault("X-Content-Type-Options", "nosniff")
        return answer

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException):
        # routing's own answers (404 no such path, 405 wrong method) in the same shape
        answer = _error(error.status_code, str(error.detail))
        answer.headers.update(error.headers or {})
        return answer

    def _who(request: Request) -> str:
        return getattr(request.state, "person", None) or "an unauthenticated caller"

    @app.exception_handler(Busy)
    async def _busy(request: Request, error: Busy):
        log.info(
            "%s %s by %s: %d, %s",
            request.method,
            request.url.path,
            _who(request),
            error.status,
            error,
        )
        answer = _error(error.status, str(error))
        answer.headers["Retry-After"] = str(error.retry_after)
        return answer

    @app.exception_handler(TooSlow)
    async def _slow(request: Request, error: TooSlow):
        log.info("%s %s by %s: 408, %s", request.method, request.url.path, _who(request), error)
        answer = _error(408, str(error))
        answer.headers["Connection"] = "close"  # the rest of the body is not read
        return answer

    @app.exception_handler(Disconnected)
    async def _gone(request: Request, error: Disconnected):
        log.info(
            "%s disconnected during the upload of %s %s",
            _who(request),
            request.method,
            request.url.path,
        )
        return _error(400, "the client disconnected before the body was complete")

    @app.exception_handler(NotFoundError)
    async def _missing(request: Request, error: NotFoundError):
        return _error(404, str(error))

    @app.exception_handler(TailormlError)
    async def _tailorml(request: Request, error: TailormlError):
        return _error(400, without_paths(str(error)))

    async def _storage(request: Request, error: Exception):
        full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (
            getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        )
        if full:  # the operator's problem, said once in the log without a traceback
            log.error("storage full on %s %s: %s", request.method, request.url.path, error)
            return _error(507, "the server's storage is full; retry later")
        return await _internal(request, error)

    app.add_exception_handler(OSError, _storage)
    app.add_exception_handler(sqlite3.Error, _storage)

    @app.exception_handler(Exception)
    async def _internal(request: Request, error: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; the service log has the details")

    async def call(request: Request, method, *args) -> Any:
        """Authenticate and run `method(caller, *args)` off the event loop, in one hop to the
        thread pool (each hop costs a thread switch per request)."""
        return await run_in_threadpool(lambda: method(caller_of(service, request), *args))

    async def authenticated_json(request: Request, what: str, empty_ok: bool = False):
        """The caller, then their body parsed: credentials are checked before a body is read,
        and JSON is parsed off the event loop (a large nested body would stall every other
        request while it parses)."""
        caller = await run_in_threadpool(caller_of, service, request)
        body = await read_body(request)
        if empty_ok and not body:
            return caller, {}
        return caller, await run_in_threadpool(nightscout.read_json, body, what)

    async def call_as(caller, method, *args) -> Any:
        return await run_in_threadpool(lambda: method(caller, *args))

    def query(request: Request, name: str) -> str | None:
        value = request.query_params.get(name)
        return value if value else None

    # -- Nightscout --------------------------------------------------------------------------

    @app.api_route("/api/v1/status.json", methods=["GET", "HEAD"], **api.STATUS)
    @app.api_route("/api/v1/status", methods=["GET", "HEAD"], **api.STATUS)
    async def status():
        return nightscout.status(__version__, service.live.now_ms() if service else None)

    @app.get("/api/v1/verifyauth", **api.VERIFYAUTH)
    async def verifyauth(request: Request):
        caller = await run_in_threadpool(caller_of, service, request)
        return {
            # Nightscout's fields (what its apps read), then whose credentials they are
            "canRead": True,
            "canWrite": True,
            "isAdmin": False,
            "message": "OK",
            "rolefound": "FOUND",
            "permissions": "ROLE",
            "id": caller.id,
            "name": caller.name,
            "role": caller.role,
        }

    @app.get("/api/v1/experiments/test", **api.EXPERIMENTS_TEST)
    async def experiments_test(request: Request):
        # Loop, Trio and xDrip4iOS check their API secret here: 200 or 401
        await run_in_threadpool(caller_of, service, request)
        return {"status": "ok"}

    def rejected(answer: Response, bad: list[dict]) -> Response:
        if bad:
            shown = [{"index": b["index"], "message": b["message"][:200]} for b in bad[:20]]
            answer.headers[api.REJECTED_HEADER] = json.dumps(
                {"refused": len(bad), "records": shown}, ensure_ascii=True
            )
        return answer

    async def post_entries_(request: Request):
        caller, payload = await authenticated_json(request, "entries")
        shaped, _, bad = await call_as(
            caller, service.upload_entries_batch, payload, query(request, "patient")
        )
        return rejected(AsciiJSONResponse(shaped), bad)

    # "/api/v1/entries/" is how xDrip+ builds its URL (base URL .../api/v1/ + "entries"
    # with a slash, depending on the version): answered, not redirected (a 307 loses
    # the body on some clients)
    for path in ("/api/v1/entries", "/api/v1/entries.json", "/api/v1/entries/"):
        app.post(path, **api.UPLOAD_ENTRIES)(post_entries_)

    async def get_entries(request: Request, kind: str | None = None, count: str | None = None):
        since, until, equal = nightscout.time_filter(
            request.query_params, ("date", "dateString"), ("type",)
        )
        return await call(
            request,
            service.entries,
            query(request, "patient"),
            nightscout.count_of(count or request.query_params.get("count")),
            since,
            until,
            kind or equal.get("type"),
        )

    @app.get("/api/v1/entries", **api.ENTRIES)
    @app.get("/api/v1/entries.json", **api.ENTRIES)
    @app.get("/api/v1/entries/", **api.ENTRIES)
    async def entries(request: Request):
        return await get_entries(request)

    @app.get("/api/v1/entries/sgv.json", **api.SGV)
    @app.get("/api/v1/entries/sgv", **api.SGV)
    async def sgv(request: Request):
        return await get_entries(request, kind="sgv")

    @app.get("/api/v1/entries/current.json", **api.CURRENT_ENTRY)
    @app.get("/api/v1/entries/current", **api.CURRENT_ENTRY)
    async def current_entry(request: Request):
        return await call(request, service.current_entry, query(request, "patient"))

    @app.post("/api/v1/treatments", **api.UPLOAD_TREATMENTS)
    @app.post("/api/v1/treatments.json", **api.UPLOAD_TREATMENTS)
    @app.post("/api/v1/treatments/", **api.UPLOAD_TREATMENTS)
    async def post_treatments(request: Request):
        caller, payload = await authenticated_json(request, "treatments")
        stored, bad = await call_as(
            caller, service.upload_treatments_batch, payload, query(request, "patient")
        )
        return rejected(AsciiJSONResponse(stored), bad)

    @app.put("/api/v1/treatments", **api.PUT_TREATMENT)
    @app.put("/api/v1/treatments.json", **api.PUT_TREATMENT)
    @app.put("/api/v1/treatments/", **api.PUT_TREATMENT)
    async def put_treatment(request: Request):
        caller, payload = await authenticated_json(request, "treatments")
        return await call_as(caller, service.replace_treatment, payload, query(request, "patient"))

    @app.delete("/api/v1/treatments/{treatment_id}", **api.DELETE_TREATMENT)
    async def delete_treatment(request: Request, treatment_id: str):
        return await call(
            request, service.delete_treatment, treatment_id, query(request, "patient")
        )

    @app.get("/api/v1/treatments", **api.TREATMENTS)
    @app.get("/api/v1/treatments.json", **api.TREATMENTS)
    async def treatments(request: Request):
        since, until, equal = nightscout.time_filter(
            request.query_params, ("created_at", "date", "timestamp"), ("eventType",)
        )
        return await call(
            request,
            service.treatments,
            query(request, "patient"),
            nightscout.count_of(request.query_params.get("count")),
            since,
            until,
            equal.get("eventType"),
        )

    # -- devicestatus and profile (stored whole) -------------------------------------------------

    def documents_routes(collection: str, upload_doc: dict, read_doc: dict) -> None:
        async def post_documents(request: Request):
            caller, payload = await authenticated_json(request, collection)
            stored, bad = await call_as(
                caller, service.upload_documents, collection, payload, query(request, "patient")
            )
            return rejected(AsciiJSONResponse(stored), bad)

        async def get_documents(request: Request):
            since, until, _ = nightscout.time_filter(
                request.query_params, ("created_at", "date", "mills")
            )
            return await call(
                request,
                service.documents,
                collection,
                query(request, "patient"),
                nightscout.count_of(request.query_params.get("count")),
                since,
                until,
            )

        for path in (f"/api/v1/{collection}", f"/api/v1/{collection}.json"):
            app.post(path, **upload_doc)(post_documents)
            app.get(path, **read_doc)(get_documents)

    documents_routes("devicestatus", api.UPLOAD_DEVICESTATUS, api.DEVICESTATUS)
    documents_routes("profile", api.UPLOAD_PROFILE, api.PROFILES)

    @app.get("/api/v1/profile/current", **api.CURRENT_PROFILE)
    async def current_profile(request: Request):
        found = await call(
            request, service.documents, "profile", query(request, "patient"), 1, None, None
        )
        if not found:
            raise NotFoundError("no profile has been uploaded")
        return found[0]

    # -- what follower apps read -------------------------------------------------------------------

    @app.get("/api/v2/properties", **api.PROPERTIES)
    async def properties(request: Request):
        return await call(request, service.properties, query(request, "patient"), None)

    @app.get("/api/v2/properties/{names}", **api.SOME_PROPERTIES)
    async def some_properties(request: Request, names: str):
        wanted = [n for n in names.split(",") if n] or None
        return await call(request, service.properties, query(request, "patient"), wanted)

    @app.get("/pebble", **api.PEBBLE)
    @app.get("/pebble.json", **api.PEBBLE)
    async def pebble(request: Request):
        count = nightscout.count_of(request.query_params.get("count") or "1")
        return await call(request, service.pebble, query(request, "patient"), min(count, 288))

    # -- alerts and models ---------------------------------------------------------------------

    @app.get("/api/v1/alerts/current", **api.CURRENT_ALERT)
    async def current_alert(request: Request):
        return await call(request, service.current_alert, query(request, "patient"))

    @app.get("/api/v1/alerts", **api.ALERTS)
    @app.get("/api/v1/alerts.json", **api.ALERTS)
    async def alerts(request: Request):
        since, until, _ = nightscout.time_filter(request.query_params, ("date",))
        return await call(
            request,
            service.alerts,
            query(request, "patient"),
            nightscout.count_of(request.query_params.get("count")),
            since,
            until,
        )

    @app.get("/api/v1/model", **api.MODEL)
    async def model(request: Request):
        return await call(request, service.active_model, query(request, "patient"))

    @app.post("/api/v1/model/rollback", **api.ROLLBACK)
    async def rollback(request: Request):
        caller, payload = await authenticated_json(request, "rollback")
        body = _object(payload, "rollback")
        reason = _string(body, "reason", "rollback", required=True)
        patient = _patient(body) or query(request, "patient")  # the body's, or ?patient=
        return await call_as(caller, service.rollback, patient, reason)

    # -- personalization and review ------------------------------------------------------------

    @app.post("/api/v1/personalization", status_code=202, **api.PERSONALIZE)
    async def personalize(request: Request):
        caller, payload = await authenticated_json(request, "personalization", empty_ok=True)
        fields = _object(payload, "personalization")
        patient = _patient(fields) or query(request, "patient")  # the body's, or ?patient=
        return await call_as(caller, service.request_personalization, patient)

    @app.get("/api/v1/personalization", **api.JOBS)
    async def jobs(request: Request):
        return await call(request, service.jobs_of, query(request, "patient"))

    @app.get("/api/v1/personalization/{job_id}", **api.JOB)
    async def job(request: Request, job_id: int):
        return await call(request, service.job, job_id)

    @app.get("/api/v1/candidates", **api.CANDIDATES)
    async def candidates(request: Request):
        pending = request.query_params.get("all") not in ("1", "true")
        return await call(request, service.candidates, query(request, "patient"), pending)

    @app.get("/api/v1/candidates/{candidate_id}", **api.CANDIDATE)
    async def candidate(request: Request, candidate_id: int):
        return await call(request, service.candidate, candidate_id)

    @app.post("/api/v1/candidates/{candidate_id}/review", **api.REVIEW)
    async def review(request: Request, candidate_id: int):
        caller, payload = await authenticated_json(request, "review")
        body = _object(payload, "review")
        decision = _string(body, "decision", "review", required=True)
        if decision not in ("approve", "reject"):
            raise PayloadError(f"review.decision must be approve or reject, not {decision[:20]!r}")
        comment = _string(body, "comment", "review") or ""
        return await call_as(caller, service.review, candidate_id, decision, comment)

    # -- encrypted alerts ------------------------------------------------------------------------

    @app.get("/api/v1/encrypted/spec", **api.ENCRYPTED_SPEC)
    async def encrypted_spec(request: Request):
        return await call(request, service.encrypted_spec)

    @app.put("/api/v1/encrypted/context", **api.ENCRYPTED_CONTEXT)
    async def encrypted_context(request: Request):
        # who it is before reading up to 272 MB, and only a few such bodies in memory at once
        caller = await run_in_threadpool(caller_of, service, request)
        service.require_patient(caller)
        limit = await run_in_threadpool(service.encrypted.context_limit)  # once: keygen
        if caller.id in uploading:
            raise Busy(
                "a public context of this account is already being uploaded (another device, "
                f"or a broken attempt: it ends within {CONTEXT_IDLE_SECONDS:.0f} s of its last "
                "byte); retry then",
                status=429,
                retry_after=int(CONTEXT_IDLE_SECONDS),
            )
        if sum(uploading.values()) + limit > CONTEXT_UPLOAD_BYTES:
            raise Busy("too many public contexts are being uploaded right now; retry in a minute")
        uploading[caller.id] = limit  # no await since the checks: no other upload slipped in
        try:
            body = await read_body(
                request,
                limit,
                CONTEXT_ADVICE,
                min_rate=CONTEXT_MIN_BYTES_PER_SECOND,
                grace=CONTEXT_GRACE_SECONDS,
                idle=CONTEXT_IDLE_SECONDS,
                what="the public context",
            )
            return await run_in_threadpool(service.register_context, caller, body)
        finally:
            del uploading[caller.id]

    # the answer is bytes (a Response), never JSON: no JSON media type in the schema
    @app.post("/api/v1/encrypted/alert", response_class=Response, **api.ENCRYPTED_ALERT)
    async def encrypted_alert(request: Request):
        caller = await run_in_threadpool(caller_of, service, request)
        service.require_patient(caller)
        body = await read_body(request, MAX_CIPHERTEXT_BYTES, CIPHERTEXT_ADVICE)
        context, model = request.headers.get(CONTEXT_HEADER), request.headers.get(MODEL_HEADER)
        answer = await run_in_threadpool(service.encrypted_alert, caller, body, context, model)
        return Response(
            answer,
            media_type="application/octet-stream",
            headers={MODEL_HEADER: service.encrypted.sha256 or ""},
        )

    # -- the person's own data -----------------------------------------------------------------

    @app.get("/api/v1/people/me", **api.ME)
    async def me(request: Request):
        caller = await run_in_threadpool(caller_of, service, request)
        patients = await run_in_threadpool(service.store.patients_of, caller.id)
        return {"id": caller.id, "name": caller.name, "role": caller.role, "patients": patients}

    @app.get("/api/v1/people/me/export", **api.EXPORT)
    async def export(request: Request):
        return await call(request, service.export)

    @app.get("/api/v1/audit", **api.AUDIT)
    async def audit(request: Request):
        return await call(request, service.audit, query(request, "patient"))

    @app.delete("/api/v1/people/me", **api.ERASE)
    async def erase(request: Request):
        caller = await run_in_threadpool(caller_of, service, request)
        if request.query_params.get("confirm") != caller.id:
            raise PayloadError(
                "erasure deletes all your data and cannot be undone; repeat with "
                f"?confirm={caller.id}"
            )
        return await run_in_threadpool(service.erase, caller, f"{caller.name} ({caller.role})")

    from tailorml.service.review import add_review_routes

    add_review_routes(app, service)
    return app


def _object(payload: Any, what: str) -> dict:
    if not isinstance(payload, dict):
        raise PayloadError(f"{what}: body must be a JSON object")
    return payload


def _string(body: dict, key: str, what: str, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise PayloadError(f"{what}.{key}: required")
        return None
    if not isinstance(value, str) or len(value) > 2_000:
        raise PayloadError(f"{what}.{key}: must be a string of at most 2000 characters")
    return value


def _patient(body: dict) -> str | None:
    return _string(body, "patient", "body")


def build(data_dir: Path, key_file: Path | None, config: Path | None) -> FastAPI:
    from tailorml.service.crypto import ServerKey

    return create_app(Service(data_dir, ServerKey.load(key_file, data_dir), config))
