"""The HTTP app: Nightscout's API where uploaders expect it, tailorml's beside it.

`create_app` only assembles: the lifespan (the predefined model exported, the job worker
started), the middleware, the error handlers (`service.errors`: every error one JSON shape)
and one router per resource (`service.routes`), which share `service.deps`. Routes only
parse and shape; `service.core.Service` decides and records, and nothing of a rejected
request is stored.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from tailorml import __version__
from tailorml.service import openapi as api
from tailorml.service.core import Service
from tailorml.service.deps import AsciiJSONResponse
from tailorml.service.errors import add_exception_handlers
from tailorml.service.routes import (
    alerts,
    candidates,
    consent,
    devicestatus,
    encrypted,
    entries,
    me,
    model,
    people,
    personalization,
    profile,
    properties,
    push,
    review,
    status,
    treatments,
    v3auth,
    v3collections,
    v3status,
)
from tailorml.service.socketio_server import SocketHub, SocketIOMount

ROUTERS = (  # in this order in /openapi.json
    status,
    entries,
    treatments,
    devicestatus,
    profile,
    properties,
    alerts,
    model,
    personalization,
    candidates,
    encrypted,
    people,
    consent,
    push,
    review,
    me,
    v3auth,  # Nightscout API v3 (AndroidAPS' NSClient v3): its own routes before the
    v3status,  # collections, whose /api/v3/{collection} would match them
    v3collections,
)

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


def context_limits() -> encrypted.ContextUploads:
    """This process's limits of public-context uploads, read when an upload starts."""
    return encrypted.ContextUploads(
        budget=CONTEXT_UPLOAD_BYTES,
        grace=CONTEXT_GRACE_SECONDS,
        min_rate=CONTEXT_MIN_BYTES_PER_SECOND,
        idle=CONTEXT_IDLE_SECONDS,
    )


class TrailingSlash:
    """A path with a trailing slash that no route has is answered as the path without it
    when a route answers that path and method (as Nightscout's Express routing does), never
    redirected: a 307 loses the body on some uploaders, and `DELETE
    /api/v1/treatments/%2F` (a slash as the id) answered one. Anything else is routing's
    own 404 or 405."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    def _routed(self, scope: Scope, full: bool) -> bool:
        wanted = (Match.FULL,) if full else (Match.FULL, Match.PARTIAL)
        return any(route.matches(scope)[0] in wanted for route in self.router.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        slashed = scope["type"] == "http" and len(path) > 1 and path.endswith("/")
        if slashed and not self._routed(scope, full=False):
            stripped = dict(scope, path=path.rstrip("/") or "/")
            if self._routed(stripped, full=True):
                scope = stripped
        await self.app(scope, receive, send)


class HeadAsGet:
    """HEAD is answered wherever GET is, as Nightscout's Express does: the GET's status and
    headers (Content-Length included), no body. Only `status.json` declared HEAD, so
    monitors and uploaders probing any other GET route got a 405 whose Allow lacked GET."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: dict) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the GET's body is not sent
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app(dict(scope, method="GET"), receive, headers_only)


def create_app(service: Service, run_jobs: bool = True, threads: int | None = None) -> FastAPI:
    """`threads`: the process's request threads (anyio's default thread limiter, 40 unless
    set), which on PostgreSQL is also what bounds its connections: a thread holds one."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if threads is not None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        # the predefined model is exported before the first upload, not during it
        await run_in_threadpool(service.runtimes.session, service.registry.predefined())
        if service.encrypted.model is not None:  # the upload limit needs a keygen: not in a request
            threading.Thread(target=service.encrypted.context_limit, daemon=True).start()
        if run_jobs:
            service.jobs.start()
        yield
        await hub.close()  # socket.io: the poller of this process's subscriptions
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
        redirect_slashes=False,  # TrailingSlash answers instead
    )
    api.install(app)  # bodies, parameters, errors and credentials in /openapi.json
    app.state.service = service
    app.state.context_limits = context_limits
    app.state.context_uploads = {}  # account -> bytes reserved by its context upload
    add_exception_handlers(app)
    # the review pages' forms are a browser's: their one error before a page exists is HTML
    app.add_exception_handler(review.FormTooLarge, review.form_too_large)

    @app.middleware("http")
    async def _no_store(request: Request, call_next):
        # answers carry health data: never cached by a browser or proxy, never sniffed
        answer = await call_next(request)
        answer.headers.setdefault("Cache-Control", "no-store")
        answer.headers.setdefault("X-Content-Type-Options", "nosniff")
        return answer

    app.add_middleware(TrailingSlash, router=app.router)
    app.add_middleware(HeadAsGet)  # routing and the slash rule see a GET
    # outermost: Nightscout's socket.io (/storage, /alarm) at /socket.io/
    hub = SocketHub(service)
    app.state.socketio = hub
    app.add_middleware(SocketIOMount, hub=hub)
    for resource in ROUTERS:
        app.include_router(resource.router)
    return app


def build(data_dir: Path, key_file: Path | None, config: Path | None) -> FastAPI:
    from tailorml.service.crypto import ServerKey

    return create_app(Service(data_dir, ServerKey.load(key_file, data_dir), config))
