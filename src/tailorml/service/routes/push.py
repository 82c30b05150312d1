"""Web Push subscriptions: a browser receives its person's alerts (`service.push`)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tailorml.service import openapi as api
from tailorml.service.deps import ServiceDep, authenticated_json, call, call_as

router = APIRouter()


@router.get("/api/v1/push/subscriptions", **api.PUSH_SUBSCRIPTIONS)
async def subscriptions(request: Request, service: ServiceDep):
    return await call(service, request, service.push_subscriptions)


@router.post("/api/v1/push/subscriptions", status_code=201, **api.SUBSCRIBE)
async def subscribe(request: Request, service: ServiceDep):
    person, payload = await authenticated_json(service, request, "subscription")
    return await call_as(person, service.subscribe, payload)


@router.delete("/api/v1/push/subscriptions/{subscription_id}", **api.UNSUBSCRIBE)
async def unsubscribe(request: Request, service: ServiceDep, subscription_id: str):
    return await call(service, request, service.unsubscribe, subscription_id[:64])
