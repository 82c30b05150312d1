"""Nightscout entries: CGM (sgv) and meter (mbg) readings, uploaded and read back."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tailorml.service import nightscout
from tailorml.service import openapi as api
from tailorml.service.deps import (
    AsciiJSONResponse,
    ServiceDep,
    authenticated_json,
    call,
    call_as,
    query,
    rejected,
)

router = APIRouter()


async def post_entries_(request: Request, service: ServiceDep):
    person, payload = await authenticated_json(service, request, "entries")
    shaped, _, bad = await call_as(
        person, service.upload_entries_batch, payload, query(request, "patient")
    )
    return rejected(AsciiJSONResponse(shaped), bad)


# "/api/v1/entries/" is how xDrip+ builds its URL (base URL .../api/v1/ + "entries" with a
# slash, depending on the version): answered, not redirected (a 307 loses the body on some
# clients)
for path in ("/api/v1/entries", "/api/v1/entries.json", "/api/v1/entries/"):
    router.post(path, **api.UPLOAD_ENTRIES)(post_entries_)


async def get_entries(request: Request, service, kind: str | None = None, count: str | None = None):
    """The records' JSON as the response itself (`Service.entries_json`): FastAPI would
    otherwise walk the list through `jsonable_encoder` before rendering it (4.7 of 8.9 ms of
    a follower's day of 288 entries, BENCHMARKS.md "Bytes per reading and follower
    reads")."""
    since, until, equal = nightscout.time_filter(
        request.query_params, ("date", "dateString"), ("type",)
    )
    body = await call(
        service,
        request,
        service.entries_json,
        query(request, "patient"),
        nightscout.count_of(count or request.query_params.get("count")),
        since,
        until,
        kind or equal.get("type"),
    )
    return Response(body, media_type="application/json")


@router.get("/api/v1/entries", **api.ENTRIES)
@router.get("/api/v1/entries.json", **api.ENTRIES)
@router.get("/api/v1/entries/", **api.ENTRIES)
async def entries(request: Request, service: ServiceDep):
    return await get_entries(request, service)


@router.get("/api/v1/entries/sgv.json", **api.SGV)
@router.get("/api/v1/entries/sgv", **api.SGV)
async def sgv(request: Request, service: ServiceDep):
    return await get_entries(request, service, kind="sgv")


@router.get("/api/v1/entries/current.json", **api.CURRENT_ENTRY)
@router.get("/api/v1/entries/current", **api.CURRENT_ENTRY)
async def current_entry(request: Request, service: ServiceDep):
    return await call(service, request, service.current_entry, query(request, "patient"))
