"""A patient's consents: to personalization and to each assigned clinician's access."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from tailorml.service import openapi as api
from tailorml.service.auth import PERSON_ID_PATTERN
from tailorml.service.deps import ServiceDep, authenticated_json, call, call_as, object_of
from tailorml.service.nightscout import PayloadError

router = APIRouter()


def changes_of(payload: Any) -> dict:
    """`{"personalization": true|false, "clinicians": {"p-…": true|false}}`, checked: a
    one-line error naming the field."""
    body = object_of(payload, "consent")
    unknown = sorted(set(body) - {"personalization", "clinicians"})
    if unknown:
        raise PayloadError(
            f"consent.{unknown[0][:40]}: unknown field; send personalization and/or clinicians"
        )
    personalization = body.get("personalization")
    if personalization is not None and not isinstance(personalization, bool):
        raise PayloadError("consent.personalization: must be true (grant) or false (withdraw)")
    clinicians = body.get("clinicians")
    if clinicians is None:
        clinicians = {}
    if not isinstance(clinicians, dict) or len(clinicians) > 100:
        raise PayloadError(
            'consent.clinicians: must be an object of clinician ids, e.g. {"p-0123456789ab": false}'
        )
    for clinician, grant in clinicians.items():
        if not PERSON_ID_PATTERN.fullmatch(clinician):
            raise PayloadError(
                f"consent.clinicians: {clinician[:40]!r} is not a person id (p- and 12 hex digits)"
            )
        if not isinstance(grant, bool):
            raise PayloadError(f"consent.clinicians.{clinician}: must be true or false")
    if personalization is None and not clinicians:
        raise PayloadError("consent: nothing to change; send personalization and/or clinicians")
    return {"personalization": personalization, "clinicians": clinicians}


@router.get("/api/v1/people/me/consent", **api.CONSENT)
async def consent(request: Request, service: ServiceDep):
    return await call(service, request, service.consent)


@router.put("/api/v1/people/me/consent", **api.SET_CONSENT)
async def set_consent(request: Request, service: ServiceDep):
    person, payload = await authenticated_json(service, request, "consent")
    return await call_as(person, service.set_consent, changes_of(payload))
