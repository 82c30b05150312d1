"""Personalization jobs: requested over the API, run by the service's worker."""

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
)

router = APIRouter()


@router.post("/api/v1/personalization", status_code=202, **api.PERSONALIZE)
async def personalize(request: Request, service: ServiceDep):
    person, payload = await authenticated_json(service, request, "personalization", empty_ok=True)
    fields = object_of(payload, "personalization")
    patient = patient_of(fields) or query(request, "patient")  # the body's, or ?patient=
    return await call_as(person, service.request_personalization, patient)


@router.get("/api/v1/personalization", **api.JOBS)
async def jobs(request: Request, service: ServiceDep):
    return await call(service, request, service.jobs_of, query(request, "patient"))


@router.get("/api/v1/personalization/{job_id}", **api.JOB)
async def job(request: Request, service: ServiceDep, job_id: int):
    return await call(service, request, service.job, job_id)
