"""A person's active model, and the rollback to the previous one."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tailorml.service import openapi as api
from tailorml.service.deps import (
    ServiceDep,
    authenticated_json,
    call,
    call_as,
    object_of,
    patient_of,
    query,
    string_of,
)

router = APIRouter()


@router.get("/api/v1/model", **api.MODEL)
async def model(request: Request, service: ServiceDep):
    return await call(service, request, service.active_model, query(request, "patient"))


@router.post("/api/v1/model/rollback", **api.ROLLBACK)
async def rollback(request: Request, service: ServiceDep):
    person, payload = await authenticated_json(service, request, "rollback")
    body = object_of(payload, "rollback")
    reason = string_of(body, "reason", "rollback", required=True)
    patient = patient_of(body) or query(request, "patient")  # the body's, or ?patient=
    return await call_as(person, service.rollback, patient, reason)
