"""The review page: server-rendered HTML where a clinician reads a proposed candidate's
gates and model card and approves or rejects it.

Sign-in stores the person's token in an HttpOnly, SameSite=Strict cookie (Secure over
HTTPS). Every form carries a CSRF token (an HMAC of the person's id under the server key),
so another site cannot make a signed-in browser approve a model. Pages send a Content
Security Policy that allows nothing from other origins.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tailorml.errors import TailormlError
from tailorml.evaluate.report import template_environment
from tailorml.registry.people import Person
from tailorml.service.auth import COOKIE, AccessDenied, AuthError, resolve
from tailorml.service.core import Service

FIGURES = (  # key, label, digits
    ("hypo_sensitivity", "hypo events caught (held-out)", 2),
    ("hypo_sensitivity_early", "caught at least 15 min ahead", 2),
    ("false_alerts_per_day", "false alerts per day", 2),
    ("median_lead_minutes", "median lead, minutes", 0),
    ("balanced_accuracy", "balanced accuracy", 3),
    ("acc_general", "accuracy on other people's data", 3),
    ("agreement_in_range", "agreement with the predefined model (in range)", 3),
)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src "
    "'self' 'unsafe-inline'; frame-ancestors 'self'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def csrf_token(service: Service, person: Person) -> str:
    return hmac.new(
        service.server_key.key, b"csrf|" + person.id.encode(), hashlib.sha256
    ).hexdigest()


FORM_LIMIT = 20_000


async def form_of(request: Request) -> dict[str, str]:
    """The posted form, read only up to FORM_LIMIT bytes: an anonymous POST /login of
    hundreds of MB is refused before it is held in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > FORM_LIMIT:
        raise TailormlError("form too large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > FORM_LIMIT:
            raise TailormlError("form too large")
        chunks.append(chunk)
    body = b"".join(chunks)
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}


def add_review_routes(app: FastAPI, service: Service) -> None:
    environment = template_environment()

    def page(template: str, status: int = 200, **context) -> HTMLResponse:
        html = environment.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def signed_in(request: Request) -> Person | None:
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        try:
            return resolve(service.store, cookie=token)
        except AuthError:
            return None

    @app.get("/", include_in_schema=False)
    async def home():
        return RedirectResponse("/review", status_code=303)

    @app.get("/login", include_in_schema=False)
    async def login_page(request: Request):
        return page("service_login.html.j2", title="Sign in", caller=None)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request):
        token = (await form_of(request)).get("token", "").strip()
        try:
            await run_in_threadpool(resolve, service.store, None, token)
        except AuthError as error:
            return page(
                "service_login.html.j2",
                status=401,
                title="Sign in",
                caller=None,
                message=f"Not signed in: {error}",
                message_class="problem",
            )
        response = RedirectResponse("/review", status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            max_age=12 * 3600,
        )
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request):
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    def overview(caller: Person) -> list[dict]:
        people = [caller.id] if caller.role == "patient" else service.store.patients_of(caller.id)
        rows = []
        for person_id in people:
            person = service.store.person(person_id)
            rows.append(
                {
                    "person": person,
                    "active": service.registry.active_model(person_id),
                    "pending": service.registry.candidates(person_id, pending_only=True),
                    "jobs": service.store.jobs(person_id),
                    "session": service.registry.latest_session(person_id),
                }
            )
            service.store.record(f"{caller.name} ({caller.role})", "read_overview", person_id, {})
        return rows

    @app.get("/review", include_in_schema=False)
    async def review_list(request: Request):
        caller = await run_in_threadpool(signed_in, request)
        if caller is None:
            return RedirectResponse("/login", status_code=303)
        rows = await run_in_threadpool(overview, caller)
        return page(
            "service_review.html.j2",
            title="Review",
            caller=caller,
            csrf=csrf_token(service, caller),
            rows=rows,
            message=request.query_params.get("done"),
        )

    def candidate_page(caller: Person, candidate_id: int, message=None, message_class=None):
        shown = service.candidate(caller, candidate_id)
        person = service.store.person(shown["patient"])
        can_decide = (
            caller.role == "clinician"
            and shown["status"] == "pending_review"
            and person.id in service.store.patients_of(caller.id)
        )
        session = service.registry.session(service.registry.candidate(candidate_id).session_id)
        return dict(
            title=f"Candidate {candidate_id}",
            caller=caller,
            csrf=csrf_token(service, caller),
            candidate=shown,
            person=person,
            figures=FIGURES,
            can_decide=can_decide,
            synthetic=bool(session.summary.get("synthetic")),
            message=message,
            message_class=message_class,
        )

    @app.get("/review/candidates/{candidate_id}", include_in_schema=False)
    async def review_candidate(request: Request, candidate_id: int):
        caller = await run_in_threadpool(signed_in, request)
        if caller is None:
            return RedirectResponse("/login", status_code=303)
        try:
            context = await run_in_threadpool(candidate_page, caller, candidate_id)
        except AccessDenied as error:
            return page(
                "service_page.html.j2",
                403,
                title="No access",
                caller=caller,
                csrf=csrf_token(service, caller),
                message=str(error),
                message_class="problem",
            )
        return page("service_candidate.html.j2", **context)

    @app.post("/review/candidates/{candidate_id}", include_in_schema=False)
    async def decide(request: Request, candidate_id: int):
        caller = await run_in_threadpool(signed_in, request)
        if caller is None:
            return RedirectResponse("/login", status_code=303)
        form = await form_of(request)
        if not hmac.compare_digest(form.get("csrf", ""), csrf_token(service, caller)):
            return Response("invalid form token; reload the page", status_code=403)
        decision = form.get("decision", "")
        try:
            if decision not in ("approve", "reject"):
                raise TailormlError("choose Approve or Reject")
            decided = await run_in_threadpool(
                service.review, caller, candidate_id, decision, form.get("comment", "")
            )
        except TailormlError as error:  # includes AccessDenied
            context = await run_in_threadpool(
                candidate_page, caller, candidate_id, f"Not recorded: {error}", "problem"
            )
            return page("service_candidate.html.j2", 400, **context)
        verb = "approved: it is now the active model" if decision == "approve" else "rejected"
        context = await run_in_threadpool(
            candidate_page, caller, candidate_id, f"Candidate {decided['id']} {verb}."
        )
        return page("service_candidate.html.j2", **context)

    @app.get("/review/cards/{patient}", include_in_schema=False)
    async def card(request: Request, patient: str):
        caller = await run_in_threadpool(signed_in, request)
        if caller is None:
            return RedirectResponse("/login", status_code=303)
        try:
            html = await run_in_threadpool(service.card_html, caller, patient)
        except TailormlError as error:
            return Response(str(error), status_code=403, media_type="text/plain")
        if html is None:
            return Response("no model card yet", status_code=404, media_type="text/plain")
        return HTMLResponse(html, headers=SECURITY_HEADERS)
