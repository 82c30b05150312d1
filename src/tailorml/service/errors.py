"""Every error the service answers, in one shape: `{"status": code, "message": one line}`.

401 for missing or bad credentials, 403 for someone else's data, 400/422 for a bad request
(naming the record and field), 413 for an oversized body (decoded, when gzipped), 415 for
a Content-Encoding other than gzip, 409 (with a `reason`) for an
encrypted request made for a context or model the server no longer has, 408 for a public
context sent too slowly, 429 when the same account is already uploading one, 503 when too
many contexts are being uploaded, 507 when storage is full, 503 while the PostgreSQL
database is unreachable, 500 for anything else (the log keeps the traceback, the answer no
server path).
"""

from __future__ import annotations

import errno
import logging
import sqlite3

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from tailorml.errors import NotFoundError, TailormlError
from tailorml.registry.database import DATABASE_ERRORS
from tailorml.service.auth import AccessDenied, AuthError
from tailorml.service.encrypted import ConflictError
from tailorml.service.nightscout import PayloadError
from tailorml.service.paths import without_paths

log = logging.getLogger("tailorml.service")


class TooLarge(PayloadError):
    """413."""


class UnsupportedEncoding(PayloadError):
    """415: a Content-Encoding the service does not decode."""


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


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": status, "message": message}, status_code=status)


def _who(request: Request) -> str:
    return getattr(request.state, "person", None) or "an unauthenticated caller"


async def _auth(request: Request, problem: AuthError):
    return error(401, str(problem))


async def _denied(request: Request, problem: AccessDenied):
    return error(403, str(problem))


async def _large(request: Request, problem: TooLarge):
    return error(413, str(problem))


async def _encoding(request: Request, problem: UnsupportedEncoding):
    return error(415, str(problem))


async def _payload(request: Request, problem: PayloadError):
    return error(422, str(problem))


async def _conflict(request: Request, problem: ConflictError):
    answer = {"status": 409, "message": str(problem), "reason": problem.reason}
    return JSONResponse(answer, status_code=409)


async def _invalid(request: Request, problem: RequestValidationError):
    # FastAPI's own checks (a path id that is not a whole number) in the API's shape
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
        for e in problem.errors()
    )
    return error(422, problems or "invalid request")


async def _http(request: Request, problem: StarletteHTTPException):
    # routing's own answers (404 no such path, 405 wrong method) in the same shape
    answer = error(problem.status_code, str(problem.detail))
    answer.headers.update(problem.headers or {})
    if problem.status_code == 405:
        answer.headers["Allow"] = ", ".join(_allowed(request))
    return answer


METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def _allowed(request: Request) -> list[str]:
    """Every method some route serves at the request's path (routing names only the first
    route's: `OPTIONS /api/v1/entries` said `Allow: POST`, though GET works there), with
    HEAD wherever GET is (`app.HeadAsGet`). Each method is asked of the routing itself, so
    routes included from routers count."""
    routes = request.app.router.routes
    methods = [
        method
        for method in METHODS
        if any(r.matches(dict(request.scope, method=method))[0] == Match.FULL for r in routes)
    ]
    return sorted(methods + (["HEAD"] if "GET" in methods else []))


async def _busy(request: Request, problem: Busy):
    log.info(
        "%s %s by %s: %d, %s",
        request.method,
        request.url.path,
        _who(request),
        problem.status,
        problem,
    )
    answer = error(problem.status, str(problem))
    answer.headers["Retry-After"] = str(problem.retry_after)
    return answer


async def _slow(request: Request, problem: TooSlow):
    log.info("%s %s by %s: 408, %s", request.method, request.url.path, _who(request), problem)
    answer = error(408, str(problem))
    answer.headers["Connection"] = "close"  # the rest of the body is not read
    return answer


async def _gone(request: Request, problem: Disconnected):
    log.info(
        "%s disconnected during the upload of %s %s",
        _who(request),
        request.method,
        request.url.path,
    )
    return error(400, "the client disconnected before the body was complete")


async def _missing(request: Request, problem: NotFoundError):
    return error(404, str(problem))


async def _tailorml(request: Request, problem: TailormlError):
    return error(400, without_paths(str(problem)))


try:
    from psycopg import OperationalError as _PG_OPERATIONAL
except ImportError:  # the PostgreSQL driver is installed only where it is used
    _PG_OPERATIONAL = ()

# PostgreSQL's SQLSTATEs: disk_full, out_of_memory, too_many_connections (class 53, the
# server's resources), and class 08, the connection itself (refused, lost)
PG_FULL = ("53100",)
PG_UNAVAILABLE_CLASSES = ("08", "57P")  # 57P01..03: the server shut down / is starting


async def _storage(request: Request, problem: Exception):
    """An error of the disk or of the database (either backend): 507 when storage is full,
    503 while a PostgreSQL server cannot be reached or refuses connections (a restart, a
    failover, max_connections reached), else 500."""
    state = getattr(problem, "sqlstate", None) or ""
    full = (
        getattr(problem, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        or getattr(problem, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or state in PG_FULL
    )
    if full:  # the operator's problem, said once in the log without a traceback
        log.error("storage full on %s %s: %s", request.method, request.url.path, problem)
        return error(507, "the server's storage is full; retry later")
    unavailable = (
        state.startswith(PG_UNAVAILABLE_CLASSES)
        or state == "53300"
        or (
            isinstance(problem, _PG_OPERATIONAL) and not state  # no connection: refused, lost
        )
    )
    if unavailable:
        log.error("database unavailable on %s %s: %s", request.method, request.url.path, problem)
        answer = error(503, "the database is unavailable; retry later")
        answer.headers["Retry-After"] = "5"
        return answer
    return await _internal(request, problem)


async def _internal(request: Request, problem: Exception):
    log.exception("internal error on %s %s", request.method, request.url.path)
    return error(500, "internal error; the service log has the details")


HANDLERS = {  # the most specific class of an error picks its handler
    AuthError: _auth,
    AccessDenied: _denied,
    TooLarge: _large,
    UnsupportedEncoding: _encoding,
    PayloadError: _payload,
    ConflictError: _conflict,
    RequestValidationError: _invalid,
    StarletteHTTPException: _http,
    Busy: _busy,
    TooSlow: _slow,
    Disconnected: _gone,
    NotFoundError: _missing,
    TailormlError: _tailorml,
    OSError: _storage,
    **dict.fromkeys(DATABASE_ERRORS, _storage),  # sqlite3's, and psycopg's where installed
    Exception: _internal,
}


def add_exception_handlers(app: FastAPI) -> None:
    for kind, handler in HANDLERS.items():
        app.add_exception_handler(kind, handler)
