"""Nightscout's status and its credential checks: what an uploader asks before it uploads."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tailorml import __version__
from tailorml.service import nightscout
from tailorml.service import openapi as api
from tailorml.service.deps import ServiceDep, caller

router = APIRouter()


@router.api_route("/api/v1/status.json", methods=["GET", "HEAD"], **api.STATUS)
@router.api_route("/api/v1/status", methods=["GET", "HEAD"], **api.STATUS)
async def status(service: ServiceDep):
    return nightscout.status(__version__, service.live.now_ms() if service else None)


@router.get("/api/v1/verifyauth", **api.VERIFYAUTH)
async def verifyauth(request: Request, service: ServiceDep):
    person = await caller(service, request)
    return {
        # Nightscout's fields (what its apps read), then whose credentials they are
        "canRead": True,
        "canWrite": True,
        "isAdmin": False,
        "message": "OK",
        "rolefound": "FOUND",
        "permissions": "ROLE",
        "id": person.id,
        "name": person.name,
        "role": person.role,
    }


@router.get("/api/v1/experiments/test", **api.EXPERIMENTS_TEST)
async def experiments_test(request: Request, service: ServiceDep):
    # Loop, Trio and xDrip4iOS check their API secret here: 200 or 401
    await caller(service, request)
    return {"status": "ok"}
