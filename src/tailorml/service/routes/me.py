"""The patient's own page (`/me`): their last 14 days and alerts (what their clinician sees),
their active model and its history, their consent switches, an export of everything stored
about them and an erasure request with a confirmation step.

The pages of a signed-in browser (review.py's session and CSRF rules): every form posts its
session's token and is refused from another site; the export is a POST for the same reason
(the API's export takes a token, never this cookie), and answers the same JSON as
`GET /api/v1/people/me/export`, as a download."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tailorml.errors import TailormlError
from tailorml.registry.people import Person
from tailorml.service import pages
from tailorml.service.core import Service
from tailorml.service.deps import ServiceDep
from tailorml.service.routes.review import (
    SECURITY_HEADERS,
    csrf_token,
    page,
    posted,
    preferences,
    remember,
    signed_in,
    to_login,
)

router = APIRouter(include_in_schema=False)

DONE = {
    "consent": "Saved: your consent is recorded in your audit log.",
    "withdrawn": "Saved: nothing is personalized for you any more; your alerts come from the "
    "predefined model from your next reading on.",
}


def me_page(
    service: Service,
    caller: Person,
    session_id: str,
    unit: str,
    zone: str | None,
    message: str | None = None,
    message_class: str | None = None,
    confirm_erase: bool = False,
) -> dict:
    active = service.active_model(caller, None)
    history = service.registry.history(caller.id)
    return dict(
        title="Your data",
        caller=caller,
        csrf=csrf_token(service, session_id),
        person=caller,
        active=active,
        history=list(reversed(history)),
        consent=service.consent(caller),
        jobs=service.store.jobs(caller.id)[:3],
        candidates=list(reversed(service.registry.candidates(caller.id, pending_only=False))),
        context=pages.patient_context(service, caller, caller, unit, zone),
        zones=pages.zones(),
        push_key=service.push.public_key(),
        here="/me",
        confirm_erase=confirm_erase,
        message=message,
        message_class=message_class,
    )


@router.get("/me")
async def me(request: Request, service: ServiceDep):
    found = await run_in_threadpool(signed_in, service, request)
    if found is None:
        return to_login()
    caller, session_id = found
    if caller.role != "patient":
        return RedirectResponse("/review", status_code=303)
    unit, zone = preferences(request)
    done = DONE.get(request.query_params.get("done") or "")
    context = await run_in_threadpool(me_page, service, caller, session_id, unit, zone, done)
    return remember(request, page("service_me.html.j2", **context), unit, zone)


@router.post("/me/consent")
async def set_consent(request: Request, service: ServiceDep):
    """The switches: a checked box grants, an unchecked one withdraws (a browser sends only
    checked boxes, so the form names every switch it shows in `shown`)."""
    checked = await posted(service, request)
    if isinstance(checked, Response):
        return checked
    caller, _, form = checked
    if caller.role != "patient":
        return RedirectResponse("/review", status_code=303)
    shown = set(form.get("shown", "").split(","))
    clinicians = await run_in_threadpool(
        lambda: service.store.clinicians_of(caller.id, consenting=False)
    )
    changes: dict = {
        "clinicians": {c: form.get(f"clinician-{c}") == "on" for c in clinicians if c in shown}
    }
    if "personalization" in shown:
        changes["personalization"] = form.get("personalization") == "on"
    was = await run_in_threadpool(service.store.consented, caller.id)
    await run_in_threadpool(service.set_consent, caller, changes)
    done = "withdrawn" if was and changes.get("personalization") is False else "consent"
    return RedirectResponse(f"/me?done={done}", status_code=303)


@router.post("/me/export")
async def export(request: Request, service: ServiceDep):
    checked = await posted(service, request)
    if isinstance(checked, Response):
        return checked
    caller, _, _ = checked
    everything = await run_in_threadpool(service.export, caller)
    body = json.dumps(everything, ensure_ascii=True, indent=1, default=str)
    return Response(
        body,
        media_type="application/json",
        headers=SECURITY_HEADERS
        | {"Content-Disposition": f'attachment; filename="tailorml-{caller.id}.json"'},
    )


@router.post("/me/erase")
async def erase(request: Request, service: ServiceDep):
    """Two steps: the request shows what erasure deletes and asks for the person's id; only
    the confirmation with that id erases (as `DELETE /api/v1/people/me?confirm=ID`)."""
    checked = await posted(service, request)
    if isinstance(checked, Response):
        return checked
    caller, session_id, form = checked
    if caller.role != "patient":
        return RedirectResponse("/review", status_code=303)
    unit, zone = preferences(request)
    typed = form.get("confirm", "").strip()
    if typed != caller.id:
        problem = None if not typed else "Not erased: the id you typed is not yours."
        context = await run_in_threadpool(
            me_page, service, caller, session_id, unit, zone, problem, "problem", True
        )
        return page("service_me.html.j2", 400 if typed else 200, **context)
    try:
        counts = await run_in_threadpool(service.erase, caller, f"{caller.name} ({caller.role})")
    except TailormlError as error:
        context = await run_in_threadpool(
            me_page, service, caller, session_id, unit, zone, f"Not erased: {error}", "problem"
        )
        return page("service_me.html.j2", 400, **context)
    response = page(
        "service_page.html.j2",
        title="Erased",
        caller=None,
        message=f"Your data was erased: {counts['entries']} readings, {counts['treatments']} "
        f"treatments and {counts['alerts']} alert decisions deleted, "
        f"{len(counts['retired_models'])} personalized model(s) retired, your account closed.",
        message_class="notice",
    )
    response.delete_cookie("tailorml_session")
    return response
