"""The caller's own account and data: who they are, an export of everything stored about
them, the audit log of who read it, and erasure."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from tailorml.service import nightscout
from tailorml.service import openapi as api
from tailorml.service.deps import ServiceDep, call, caller, query
from tailorml.service.nightscout import PayloadError

router = APIRouter()


@router.get("/api/v1/people/me", **api.ME)
async def me(request: Request, service: ServiceDep):
    person = await caller(service, request)
    patients = await run_in_threadpool(service.store.patients_of, person.id)
    return {"id": person.id, "name": person.name, "role": person.role, "patients": patients}


@router.get("/api/v1/people/me/export", **api.EXPORT)
async def export(request: Request, service: ServiceDep):
    if "patient" in request.query_params:  # a clinician got their own, empty export
        raise PayloadError(
            "patient: the export is the caller's own data only; a patient exports theirs "
            "(a clinician reads a patient's data through the other routes with ?patient=)"
        )
    return await call(service, request, service.export)


@router.get("/api/v1/audit", **api.AUDIT)
async def audit(request: Request, service: ServiceDep):
    # the newest `count` lines, oldest first as the log reads (checked before any read)
    count = nightscout.count_of(request.query_params.get("count"), nightscout.AUDIT_DEFAULT_COUNT)
    return (await call(service, request, service.audit, query(request, "patient")))[-count:]


@router.delete("/api/v1/people/me", **api.ERASE)
async def erase(request: Request, service: ServiceDep):
    person = await caller(service, request)
    if request.query_params.get("confirm") != person.id:
        raise PayloadError(
            f"erasure deletes all your data and cannot be undone; repeat with ?confirm={person.id}"
        )
    return await run_in_threadpool(service.erase, person, f"{person.name} ({person.role})")
