"""The alerts decided from a person's readings: the current one and their history."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tailorml.service import nightscout
from tailorml.service import openapi as api
from tailorml.service.deps import ServiceDep, call, query

router = APIRouter()


@router.get("/api/v1/alerts/current", **api.CURRENT_ALERT)
async def current_alert(request: Request, service: ServiceDep):
    return await call(service, request, service.current_alert, query(request, "patient"))


@router.get("/api/v1/alerts", **api.ALERTS)
@router.get("/api/v1/alerts.json", **api.ALERTS)
async def alerts(request: Request, service: ServiceDep):
    since, until, _ = nightscout.time_filter(request.query_params, ("date",))
    return await call(
        service,
        request,
        service.alerts,
        query(request, "patient"),
        nightscout.count_of(request.query_params.get("count")),
        since,
        until,
    )
