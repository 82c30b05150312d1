"""Nightscout treatments (insulin, carbs, notes): uploaded, replaced, deleted, read back."""

from __future__ import annotations

from fastapi import APIRouter, Request

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


@router.post("/api/v1/treatments", **api.UPLOAD_TREATMENTS)
@router.post("/api/v1/treatments.json", **api.UPLOAD_TREATMENTS)
@router.post("/api/v1/treatments/", **api.UPLOAD_TREATMENTS)
async def post_treatments(request: Request, service: ServiceDep):
    person, payload = await authenticated_json(service, request, "treatments")
    stored, bad = await call_as(
        person, service.upload_treatments_batch, payload, query(request, "patient")
    )
    return rejected(AsciiJSONResponse(stored), bad)


@router.put("/api/v1/treatments", **api.PUT_TREATMENT)
@router.put("/api/v1/treatments.json", **api.PUT_TREATMENT)
@router.put("/api/v1/treatments/", **api.PUT_TREATMENT)
async def put_treatment(request: Request, service: ServiceDep):
    person, payload = await authenticated_json(service, request, "treatments")
    return await call_as(person, service.replace_treatment, payload, query(request, "patient"))


@router.delete("/api/v1/treatments/{treatment_id}", **api.DELETE_TREATMENT)
async def delete_treatment(request: Request, service: ServiceDep, treatment_id: str):
    return await call(
        service, request, service.delete_treatment, treatment_id, query(request, "patient")
    )


@router.get("/api/v1/treatments", **api.TREATMENTS)
@router.get("/api/v1/treatments.json", **api.TREATMENTS)
async def treatments(request: Request, service: ServiceDep):
    since, until, equal = nightscout.time_filter(
        request.query_params, ("created_at", "date", "timestamp"), ("eventType",)
    )
    return await call(
        service,
        request,
        service.treatments,
        query(request, "patient"),
        nightscout.count_of(request.query_params.get("count")),
        since,
        until,
        equal.get("eventType"),
    )
