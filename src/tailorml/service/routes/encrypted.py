"""Encrypted alerts (docs/privacy.md): the spec of the served HE model, the upload of a
person's public context, and an alert computed on ciphertext the server cannot read."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tailorml.privacy.wire import CONTEXT_HEADER, MODEL_HEADER
from tailorml.service import openapi as api
from tailorml.service.deps import ServiceDep, call, caller, read_body
from tailorml.service.encrypted import MAX_CIPHERTEXT_BYTES
from tailorml.service.errors import Busy

CONTEXT_ADVICE = "send EncryptedAlertClient.public_context() (the model's spec fixes its size)"
CIPHERTEXT_ADVICE = "encrypt at most the spec's max_batch windows per ciphertext"


@dataclass(frozen=True)
class ContextUploads:
    """How public-context uploads share the server (`service.app` sets them, per process):
    together they may reserve `budget` bytes; each must keep arriving at `min_rate` bytes/s
    after `grace` seconds and never pause for `idle` seconds."""

    budget: int
    grace: float
    min_rate: float
    idle: float


router = APIRouter()


@router.get("/api/v1/encrypted/spec", **api.ENCRYPTED_SPEC)
async def encrypted_spec(request: Request, service: ServiceDep):
    return await call(service, request, service.encrypted_spec)


@router.put("/api/v1/encrypted/context", **api.ENCRYPTED_CONTEXT)
async def encrypted_context(request: Request, service: ServiceDep):
    # who it is before reading up to 272 MB, and only a few such bodies in memory at once
    person = await caller(service, request)
    service.require_patient(person)
    limit = await run_in_threadpool(service.encrypted.context_limit)  # once: keygen
    limits: ContextUploads = request.app.state.context_limits()
    uploading: dict[str, int] = request.app.state.context_uploads  # account -> bytes reserved
    if person.id in uploading:
        raise Busy(
            "a public context of this account is already being uploaded (another device, "
            f"or a broken attempt: it ends within {limits.idle:.0f} s of its last "
            "byte); retry then",
            status=429,
            retry_after=int(limits.idle),
        )
    if sum(uploading.values()) + limit > limits.budget:
        raise Busy("too many public contexts are being uploaded right now; retry in a minute")
    uploading[person.id] = limit  # no await since the checks: no other upload slipped in
    try:
        body = await read_body(
            request,
            limit,
            CONTEXT_ADVICE,
            min_rate=limits.min_rate,
            grace=limits.grace,
            idle=limits.idle,
            what="the public context",
        )
        return await run_in_threadpool(service.register_context, person, body)
    finally:
        del uploading[person.id]


# the answer is bytes (a Response), never JSON: no JSON media type in the schema
@router.post("/api/v1/encrypted/alert", response_class=Response, **api.ENCRYPTED_ALERT)
async def encrypted_alert(request: Request, service: ServiceDep):
    person = await caller(service, request)
    service.require_patient(person)
    body = await read_body(request, MAX_CIPHERTEXT_BYTES, CIPHERTEXT_ADVICE)
    context, model = request.headers.get(CONTEXT_HEADER), request.headers.get(MODEL_HEADER)
    answer = await run_in_threadpool(service.encrypted_alert, person, body, context, model)
    return Response(
        answer,
        media_type="application/octet-stream",
        headers={MODEL_HEADER: service.encrypted.sha256 or ""},
    )
