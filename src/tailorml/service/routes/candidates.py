"""The candidates personalization proposed, and a clinician's review of one (over the API;
the review pages are `routes.review`)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tailorml.service import openapi as api
from tailorml.service.deps import (
    ServiceDep,
    authenticated_json,
    call,
    call_as,
    object_of,
    query,
    string_of,
)
from tailorml.service.nightscout import PayloadError

router = APIRouter()


@router.get("/api/v1/candidates", **api.CANDIDATES)
async def candidates(request: Request, service: ServiceDep):
    pending = request.query_params.get("all") not in ("1", "true")
    return await call(service, request, service.candidates, query(request, "patient"), pending)


@router.get("/api/v1/candidates/{candidate_id}", **api.CANDIDATE)
async def candidate(request: Request, service: ServiceDep, candidate_id: int):
    return await call(service, request, service.candidate, candidate_id)


@router.post("/api/v1/candidates/{candidate_id}/review", **api.REVIEW)
async def review(request: Request, service: ServiceDep, candidate_id: int):
    person, payload = await authenticated_json(service, request, "review")
    body = object_of(payload, "review")
    decision = string_of(body, "decision", "review", required=True)
    if decision not in ("approve", "reject"):
        raise PayloadError(f"review.decision must be approve or reject, not {decision[:20]!r}")
    comment = string_of(body, "comment", "review") or ""
    return await call_as(person, service.review, candidate_id, decision, comment)
