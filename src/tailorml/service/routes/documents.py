"""The routes of a Nightscout collection stored whole (devicestatus, profile): its records
are kept as uploaded, read back newest first."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request

from tailorml.service import nightscout
from tailorml.service.deps import (
    AsciiJSONResponse,
    ServiceDep,
    authenticated_json,
    call,
    call_as,
    query,
    rejected,
)


def document_router(
    collection: str, upload_doc: dict, read_doc: dict, read: Callable | None = None
) -> APIRouter:
    """POST and GET of /api/v1/<collection> and /api/v1/<collection>.json; a GET answers
    `Service.documents`, or `read(service, caller, patient, count, since, until)`."""
    router = APIRouter()

    async def post_documents(request: Request, service: ServiceDep):
        person, payload = await authenticated_json(service, request, collection)
        stored, bad = await call_as(
            person, service.upload_documents, collection, payload, query(request, "patient")
        )
        return rejected(AsciiJSONResponse(stored), bad)

    async def get_documents(request: Request, service: ServiceDep):
        since, until, _ = nightscout.time_filter(
            request.query_params, ("created_at", "date", "mills")
        )
        if read is None:
            method, args = service.documents, (collection,)
        else:
            method, args = (lambda caller, *rest: read(service, caller, *rest)), ()
        return await call(
            service,
            request,
            method,
            *args,
            query(request, "patient"),
            nightscout.count_of(request.query_params.get("count")),
            since,
            until,
        )

    for path in (f"/api/v1/{collection}", f"/api/v1/{collection}.json"):
        router.post(path, **upload_doc)(post_documents)
        router.get(path, **read_doc)(get_documents)
    return router
