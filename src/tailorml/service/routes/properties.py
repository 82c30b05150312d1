"""What follower apps and watches read: Nightscout's v2 properties and the pebble view."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tailorml.service import nightscout
from tailorml.service import openapi as api
from tailorml.service.deps import ServiceDep, call, query

router = APIRouter()


@router.get("/api/v2/properties", **api.PROPERTIES)
async def properties(request: Request, service: ServiceDep):
    return await call(service, request, service.properties, query(request, "patient"), None)


@router.get("/api/v2/properties/{names}", **api.SOME_PROPERTIES)
async def some_properties(request: Request, service: ServiceDep, names: str):
    wanted = [n for n in names.split(",") if n] or None
    return await call(service, request, service.properties, query(request, "patient"), wanted)


@router.get("/pebble", **api.PEBBLE)
@router.get("/pebble.json", **api.PEBBLE)
async def pebble(request: Request, service: ServiceDep):
    count = nightscout.count_of(request.query_params.get("count") or "1")
    return await call(service, request, service.pebble, query(request, "patient"), min(count, 288))
