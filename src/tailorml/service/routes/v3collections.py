"""Nightscout API v3's collections (`lib/api3/generic/`): SEARCH, CREATE, HISTORY, READ,
UPDATE, PATCH and DELETE of entries, treatments, devicestatus, profile, food and settings, in
the shapes AndroidAPS' NSClient v3 sends and reads (core/nssdk
networking/NightscoutRemoteService.kt, NSAndroidClientImpl.kt).

The records are the v1 API's (`service.core`: sealed, decided live, per account); these
routes only read the v3 request and answer in v3's envelope (`{"status", "result"}`, a
create's `identifier` and `lastModified` at the top). A bad record is a 400, as Nightscout
answers it: AndroidAPS skips a record refused with 400 and stops its upload queue on other
codes."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tailorml.errors import NotFoundError, TailormlError
from tailorml.registry.people import V3_TABLES
from tailorml.service import nightscout
from tailorml.service import openapi as api
from tailorml.service.core import V3Gone
from tailorml.service.deps import (
    AsciiJSONResponse,
    ServiceDep,
    authenticated_json,
    call,
    call_as,
    query,
)
from tailorml.service.nightscout import PayloadError
from tailorml.service.routes.v3query import BadQuery, fields_of, limit_of, project, search_of

router = APIRouter()


class Refused(TailormlError):
    """400: a record or query Nightscout's API v3 would refuse (one line says why)."""


def _path(request: Request, *names: str) -> list[str]:
    """Path parameters, read here so that /openapi.json shows them as `openapi.py` says
    (the collections as an enum), not as FastAPI would infer them."""
    return [request.path_params[name] for name in names]


def collection_of(name: str) -> str:
    if name not in V3_TABLES:
        raise NotFoundError(f"Bad operation or collection: {name[:40]!r}")
    return name


async def answered(work) -> Any:
    """The v3 status codes of the service's errors: a bad record or query is a 400 (not
    the v1 API's 422), a deleted record a 410."""
    try:
        return await work
    except V3Gone as gone:
        return JSONResponse({"status": 410, "message": str(gone)}, status_code=410)
    except PayloadError as error:
        if type(error) is not PayloadError:  # 413, 415: as everywhere
            raise
        raise Refused(str(error)) from None


def modified_headers(records: list[dict]) -> dict[str, str]:
    """Nightscout's history headers: the newest srvModified, as ETag (AndroidAPS reads its
    next `from` there: `W/"<ms>"`) and as Last-Modified."""
    if not records:
        return {}
    newest = max(r["srvModified"] for r in records)
    when = datetime.fromtimestamp(newest / 1000, UTC)
    return {"ETag": f'W/"{newest}"', "Last-Modified": format_datetime(when, usegmt=True)}


def _after(text: str) -> int:
    """A history's `{lastModified}`: epoch ms or ISO 8601."""
    if nightscout.WHOLE_NUMBER.fullmatch(text) and len(text) <= 15:
        return int(text)
    try:
        return nightscout.parse_time_ms(text, "lastModified")
    except PayloadError:
        raise BadQuery("Bad or missing Last-Modified header/parameter") from None


async def history(request: Request, service, collection: str, after: int, inclusive: bool):
    records = await call(
        service,
        request,
        service.v3_history,
        query(request, "patient"),
        collection_of(collection),
        after,
        inclusive,
        limit_of(request.query_params),
    )
    shown = project(records, fields_of(request.query_params))
    return AsciiJSONResponse({"status": 200, "result": shown}, headers=modified_headers(records))


@router.get("/api/v3/{collection}/history/{last_modified}", **api.V3_HISTORY)
async def history_since(request: Request, service: ServiceDep):
    collection, last_modified = _path(request, "collection", "last_modified")
    return await answered(history(request, service, collection, _after(last_modified), False))


@router.get("/api/v3/{collection}/history", **api.V3_HISTORY_HEADER)
async def history_since_header(request: Request, service: ServiceDep):
    (collection,) = _path(request, "collection")
    header = request.headers.get("last-modified")
    try:
        after = int(parsedate_to_datetime(header or "").timestamp()) * 1000
    except (TypeError, ValueError, IndexError):
        raise BadQuery("Bad or missing Last-Modified header/parameter") from None
    return await answered(history(request, service, collection, after, True))


@router.get("/api/v3/{collection}", **api.V3_SEARCH)
async def search(request: Request, service: ServiceDep):
    (collection,) = _path(request, "collection")

    async def work():
        wanted = search_of(request.query_params, list(request.query_params.keys()))
        found = await call(
            service,
            request,
            service.v3_search,
            query(request, "patient"),
            collection_of(collection),
            wanted.bounds,
            wanted.order,
            wanted.matches,
            wanted.skip,
            wanted.limit,
        )
        return AsciiJSONResponse({"status": 200, "result": project(found, wanted.fields)})

    return await answered(work())


@router.post("/api/v3/{collection}", **api.V3_CREATE)
async def create(request: Request, service: ServiceDep):
    (collection,) = _path(request, "collection")

    async def work():
        name = collection_of(collection)
        person, record = await authenticated_json(service, request, name)
        answer = await call_as(person, service.v3_create, query(request, "patient"), name, record)
        return JSONResponse(answer, status_code=answer["status"])

    return await answered(work())


@router.get("/api/v3/{collection}/{identifier}", **api.V3_READ)
async def read(request: Request, service: ServiceDep):
    collection, identifier = _path(request, "collection", "identifier")

    async def work():
        found = await call(
            service,
            request,
            service.v3_read,
            query(request, "patient"),
            collection_of(collection),
            identifier,
        )
        if found is None:
            raise NotFoundError(f"no {collection} record {identifier[:64]}")
        (shown,) = project([found], fields_of(request.query_params))
        return AsciiJSONResponse({"status": 200, "result": shown})

    return await answered(work())


async def update(request: Request, service, collection: str, identifier: str, patch: bool):
    async def work():
        name = collection_of(collection)
        person, record = await authenticated_json(service, request, name)
        answer = await call_as(
            person, service.v3_update, query(request, "patient"), name, identifier, record, patch
        )
        if answer is None:
            raise NotFoundError(f"no {name} record {identifier[:64]}")
        return JSONResponse(answer, status_code=answer["status"])

    return await answered(work())


@router.put("/api/v3/{collection}/{identifier}", **api.V3_REPLACE)
async def put(request: Request, service: ServiceDep):
    collection, identifier = _path(request, "collection", "identifier")
    return await update(request, service, collection, identifier, patch=False)


@router.patch("/api/v3/{collection}/{identifier}", **api.V3_PATCH)
async def patch(request: Request, service: ServiceDep):
    collection, identifier = _path(request, "collection", "identifier")
    return await update(request, service, collection, identifier, patch=True)


@router.delete("/api/v3/{collection}/{identifier}", **api.V3_DELETE)
async def delete(request: Request, service: ServiceDep):
    collection, identifier = _path(request, "collection", "identifier")

    async def work():
        name = collection_of(collection)
        deleted = await call(
            service, request, service.v3_delete, query(request, "patient"), name, identifier
        )
        if not deleted:
            raise NotFoundError(f"no {name} record {identifier[:64]}")
        return {"status": 200}

    return await answered(work())
