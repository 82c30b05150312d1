"""Nightscout profiles (basal rates, ratios, targets) and the current one."""

from __future__ import annotations

from fastapi import Request

from tailorml.errors import NotFoundError
from tailorml.service import openapi as api
from tailorml.service.deps import ServiceDep, call, query
from tailorml.service.routes.documents import document_router

router = document_router("profile", api.UPLOAD_PROFILE, api.PROFILES)


@router.get("/api/v1/profile/current", **api.CURRENT_PROFILE)
async def current_profile(request: Request, service: ServiceDep):
    found = await call(
        service, request, service.documents, "profile", query(request, "patient"), 1, None, None
    )
    if not found:
        raise NotFoundError("no profile has been uploaded")
    return found[0]
