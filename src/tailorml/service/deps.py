"""What the routes share: the `Service` of the app, the caller, bodies read within limits,
and the one hop to the thread pool that runs a `Service` method.

Routes only parse and shape; `service.core.Service` decides and records. Credentials are
checked inside each route, not as a FastAPI dependency, so that a route's own checks of its
path (`/candidates/abc`: 422) answer first, as they always did, and the caller and the work
share one hop to the thread pool (each hop costs a thread switch per request).
"""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from tailorml.io import InflatesTooLarge, bounded_gunzip
from tailorml.registry.people import Person
from tailorml.service import nightscout
from tailorml.service import openapi as api
from tailorml.service.auth import AuthError, resolve
from tailorml.service.core import Service
from tailorml.service.errors import Disconnected, TooLarge, TooSlow, UnsupportedEncoding
from tailorml.service.nightscout import PayloadError


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII characters escaped: valid JSON for any stored text, so a record
    stored before lone surrogates were refused still reads back instead of answering 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


async def service_of(request: Request) -> Service:
    """The app's `Service` (`create_app` puts it on `app.state`)."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(service_of)]


def caller_of(service: Service, request: Request) -> Person:
    if len(request.query_params.getlist("token")) > 1:  # the last one silently won
        raise AuthError("give one token; this request has several ?token= parameters")
    for header in ("api-secret", "authorization"):  # the first one silently won
        if len(request.headers.getlist(header)) > 1:
            raise AuthError(f"give one credential; this request has several {header} headers")
    person = resolve(
        service.store,
        api_secret=request.headers.get("api-secret"),
        token=request.query_params.get("token"),
        authorization=request.headers.get("authorization"),
        jwt_key=service.jwt_key,  # API v3 clients send the JWT of their token
    )  # never the review page's session cookie: it opens the review pages only
    request.state.person = person.id  # log lines about the request name the account
    return person


async def caller(service: Service, request: Request) -> Person:
    """The caller, resolved off the event loop (a token check reads the database)."""
    return await run_in_threadpool(caller_of, service, request)


async def call(service: Service, request: Request, method, *args) -> Any:
    """Authenticate and run `method(caller, *args)` off the event loop, in one hop to the
    thread pool."""
    return await run_in_threadpool(lambda: method(caller_of(service, request), *args))


async def call_as(person: Person, method, *args) -> Any:
    return await run_in_threadpool(lambda: method(person, *args))


async def read_body(
    request: Request,
    limit: int = nightscout.MAX_BODY_BYTES,
    advice: str = "send fewer records per request",
    min_rate: float | None = None,
    grace: float = 30.0,
    idle: float = 30.0,
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


def decoded(body: bytes, encoding: str | None, limit: int = nightscout.MAX_BODY_BYTES) -> bytes:
    """The body as sent before its Content-Encoding: gzip (uploaders may compress) is
    decoded up to `limit` bytes of output, so a small gzip bomb is refused (413) without
    being inflated; any other encoding is a 415."""
    codings = [c.strip().lower() for c in (encoding or "").split(",")]
    codings = [c for c in codings if c not in ("", "identity")]
    if not codings:
        return body
    if codings not in (["gzip"], ["x-gzip"]):
        shown = ", ".join(c[:20] for c in codings)[:60]
        raise UnsupportedEncoding(
            f"Content-Encoding {shown!r} is not supported; send gzip or no encoding"
        )
    try:
        return bounded_gunzip(body, limit)
    except InflatesTooLarge:
        raise TooLarge(
            f"body exceeds {limit:,} bytes once decoded (gzip); send fewer records per request"
        ) from None
    except EOFError:
        raise PayloadError("body: the gzip data ends early; send the whole body") from None
    except zlib.error:
        raise PayloadError("body: Content-Encoding is gzip but the body is no gzip data") from None


async def authenticated_json(
    service: Service, request: Request, what: str, empty_ok: bool = False
) -> tuple[Person, Any]:
    """The caller, then their body decoded (gzip) and parsed: credentials are checked
    before a body is read, and JSON is parsed off the event loop (a large nested body would
    stall every other request while it parses)."""
    person = await caller(service, request)
    body = await read_body(request)
    if empty_ok and not body:
        return person, {}
    encoding = request.headers.get("content-encoding")

    def parsed() -> Any:
        return nightscout.read_json(decoded(body, encoding), what)

    return person, await run_in_threadpool(parsed)


def query(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value if value else None


def rejected(answer: Response, bad: list[dict]) -> Response:
    """The answer to a batch, with the records it refused in the X-Refused-Records header."""
    if bad:
        shown = [{"index": b["index"], "message": b["message"][:200]} for b in bad[:20]]
        answer.headers[api.REJECTED_HEADER] = json.dumps(
            {"refused": len(bad), "records": shown}, ensure_ascii=True
        )
    return answer


def object_of(payload: Any, what: str) -> dict:
    if not isinstance(payload, dict):
        raise PayloadError(f"{what}: body must be a JSON object")
    return payload


def string_of(body: dict, key: str, what: str, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise PayloadError(f"{what}.{key}: required")
        return None
    if not isinstance(value, str) or len(value) > 2_000:
        raise PayloadError(f"{what}.{key}: must be a string of at most 2000 characters")
    return value


def patient_of(body: dict) -> str | None:
    return string_of(body, "patient", "body")
