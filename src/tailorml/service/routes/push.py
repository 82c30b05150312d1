"""Web Push subscriptions: a browser receives its person's alerts (`service.push`).

The API (`/api/v1/push/subscriptions`) takes a token, as every API route does. A signed-in
page subscribes its own browser instead through `/push/subscribe` and `/push/unsubscribe`:
form posts with the page's session cookie and form token (review.py's rules), sent by the
page's script `/static/push.js`, whose service worker `/push-sw.js` shows the notifications.
Both files are served from the package (`service/static/`) by this server, the only origin
the pages' Content-Security-Policy lets a script come from."""

from __future__ import annotations

import functools
import hmac
import json
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from tailorml.service import openapi as api
from tailorml.service.deps import ServiceDep, authenticated_json, call, call_as
from tailorml.service.nightscout import PayloadError
from tailorml.service.routes.review import _cross_site, csrf_token, form_of, signed_in, to_login

router = APIRouter()

SCRIPT = "text/javascript; charset=utf-8"
#: the headers of the two script files: revalidated (a new version reaches the browser at
#: once), never sniffed; the worker may control every page of this server (scope "/")
SCRIPT_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
WORKER_HEADERS = SCRIPT_HEADERS | {
    "Service-Worker-Allowed": "/",
    "Content-Security-Policy": "default-src 'self'",
}


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


# -- the pages' own browser ----------------------------------------------------------------


@functools.cache
def _static(name: str) -> bytes:
    return resources.files("tailorml.service").joinpath("static", name).read_bytes()


@router.get("/static/push.js", include_in_schema=False)
async def push_script():
    return Response(_static("push.js"), media_type=SCRIPT, headers=SCRIPT_HEADERS)


@router.get("/push-sw.js", include_in_schema=False)
async def push_worker():
    return Response(_static("push-sw.js"), media_type=SCRIPT, headers=WORKER_HEADERS)


async def _page_post(service, request: Request):
    """(caller, form) of a signed-in page's post with its form token; else the answer."""
    found = await run_in_threadpool(signed_in, service, request)
    if found is None:
        return to_login()
    caller, session_id = found
    form = await form_of(request)
    if _cross_site(request) or not hmac.compare_digest(
        form.get("csrf", ""), csrf_token(service, session_id)
    ):
        return JSONResponse(
            {"status": 403, "message": "invalid form token; reload the page"}, status_code=403
        )
    return caller, form


@router.post("/push/subscribe", status_code=201, include_in_schema=False)
async def page_subscribe(request: Request, service: ServiceDep):
    """The page's browser subscribes (`subscription`: its PushSubscription.toJSON() as JSON),
    checked and stored exactly as by POST /api/v1/push/subscriptions."""
    checked = await _page_post(service, request)
    if isinstance(checked, Response):
        return checked
    caller, form = checked
    try:
        payload = json.loads(form.get("subscription", ""))
    except ValueError:
        raise PayloadError(
            "subscription: the browser's PushSubscription.toJSON() as JSON"
        ) from None
    return await call_as(caller, service.subscribe, payload)


@router.post("/push/unsubscribe", include_in_schema=False)
async def page_unsubscribe(request: Request, service: ServiceDep):
    """The page's browser stopped (`endpoint`: its subscription's endpoint)."""
    checked = await _page_post(service, request)
    if isinstance(checked, Response):
        return checked
    caller, form = checked
    actor = f"{caller.name} ({caller.role})"
    endpoint = form.get("endpoint", "")[:2000]
    removed = await run_in_threadpool(service.push.unsubscribe_endpoint, caller, endpoint, actor)
    return {"n": removed, "ok": 1}
