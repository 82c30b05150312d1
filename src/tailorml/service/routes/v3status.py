"""Nightscout API v3's own routes (`lib/api3/specific/`): `version`, `status` (with the
caller's permissions per collection) and `lastModified` (the newest change of each
collection), which AndroidAPS' NSClient v3 polls before it reads a collection
(workers/LoadStatusWorker.kt, LoadLastModificationWorker.kt)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tailorml import __version__
from tailorml.registry.people import V3_TABLES
from tailorml.service import nightscout
from tailorml.service import openapi as api
from tailorml.service.deps import AsciiJSONResponse, ServiceDep, call, query

router = APIRouter()

API_VERSION = "3.0.5"  # Nightscout's API3_VERSION whose shapes these answers follow


def version_info(service) -> dict:
    return {
        "version": __version__,
        "apiVersion": API_VERSION,
        "srvDate": service.live.now_ms(),
        "storage": service.store.database.storage(),  # sqlite, or postgresql, and its version
    }


@router.get("/api/v3/version", **api.V3_VERSION)
async def version(request: Request, service: ServiceDep):
    await call(service, request, lambda person: None)
    return {"status": 200, "result": version_info(service)}


@router.get("/api/v3/status", **api.V3_STATUS)
async def status(request: Request, service: ServiceDep):
    def permissions(caller) -> str:
        # a patient's own data, or an assigned patient's (?patient=): everything; a
        # clinician's own account keeps no data
        person = service.subject(caller, query(request, "patient"), "read_status")
        return "crud" if person.role == "patient" else "r"

    granted = await call(service, request, permissions)
    return {
        "status": 200,
        "result": version_info(service) | {"apiPermissions": dict.fromkeys(V3_TABLES, granted)},
    }


@router.get("/api/v3/lastModified", **api.V3_LAST_MODIFIED)
async def last_modified(request: Request, service: ServiceDep):
    found = await call(service, request, service.v3_last_modified, query(request, "patient"))
    now = service.live.now_ms()
    return AsciiJSONResponse(
        {
            "status": 200,
            "result": {
                "srvDate": now,
                "srvDateString": nightscout.iso(now),
                "collections": found,
            },
        }
    )
