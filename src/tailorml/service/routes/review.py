"""The review page: server-rendered HTML where a clinician reads a proposed candidate's
gates and model card and approves or rejects it.

Sign-in exchanges the person's token for a browser session (`auth.new_session`): a random
id in an HttpOnly, SameSite=Strict cookie (Secure over HTTPS) that ends after
`auth.SESSION_SECONDS`, at sign-out, and when the token is rotated or revoked; the API never
accepts it. The sign-in form carries its own CSRF token (an HMAC under the server key of a
random pre-session value that the form's GET put in a short-lived cookie), so another site
cannot sign a browser into its account; every form of a session carries a token bound to
that session, so another site cannot make a signed-in browser approve a model or sign out.
Pages send a Content Security Policy that allows nothing from other origins, and scripts
only as files of this server (no inline script: `/static/push.js`, routes/push.py)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import string
import unicodedata
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tailorml.errors import TailormlError
from tailorml.registry.people import Person
from tailorml.service import pages
from tailorml.service.auth import (
    LEGACY_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    AccessDenied,
    AuthError,
    end_session,
    new_session,
    resolve,
    session_person,
    token_sha256,
)
from tailorml.service.core import Service
from tailorml.service.deps import ServiceDep

FIGURES = (  # key, label, digits
    ("hypo_sensitivity", "hypo events caught (held-out)", 2),
    ("hypo_sensitivity_early", "caught at least 15 min ahead", 2),
    ("false_alerts_per_day", "false alerts per day", 2),
    ("median_lead_minutes", "median lead, minutes", 0),
    ("balanced_accuracy", "balanced accuracy", 3),
    ("acc_general", "accuracy on other people's data", 3),
    ("agreement_in_range", "agreement with the predefined model (in range)", 3),
)
#: Scripts and service workers only from this server (the pages' one script is
#: /static/push.js, its worker /push-sw.js): never inline, never another origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; worker-src 'self'; "
    "img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'self'; "
    "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


LOGIN_COOKIE = "tailorml_login"
LOGIN_SECONDS = 3600
UNIT_COOKIE, ZONE_COOKIE = "tailorml_unit", "tailorml_tz"
PREFERENCE_SECONDS = 365 * 24 * 3600


def csrf_token(service: Service, session_id: str) -> str:
    """The forms' token of one review session (signing out makes it worthless)."""
    binding = b"csrf|" + token_sha256(session_id).encode()
    return hmac.new(service.server_key.key, binding, hashlib.sha256).hexdigest()


def login_csrf(service: Service, nonce: str) -> str:
    """The sign-in form's token: bound to the random value in the login cookie."""
    return hmac.new(service.server_key.key, b"login|" + nonce.encode(), hashlib.sha256).hexdigest()


def _nonce_ok(nonce: str) -> bool:
    return 16 <= len(nonce) <= 64 and set(nonce) <= set(string.ascii_letters + string.digits + "-_")


def _cookie_options(request: Request) -> dict:
    return {"httponly": True, "samesite": "strict", "secure": request.url.scheme == "https"}


FORM_LIMIT = 20_000


class FormTooLarge(TailormlError):
    """A form post over FORM_LIMIT: answered with the review pages' own error page (a
    browser shows it), not the API's JSON (`form_too_large`, installed by the app)."""


async def form_too_large(request: Request, problem: FormTooLarge) -> HTMLResponse:
    message = (
        f"The form was larger than {FORM_LIMIT:,} bytes and was not read: nothing was "
        "recorded. Go back, shorten the comment, and send it again."
    )
    return page(
        "service_page.html.j2",
        413,
        title="Form too large",
        caller=None,
        message=message,
        message_class="problem",
    )


def _cross_site(request: Request) -> bool:
    """Whether the browser says a form post comes from another site (Fetch metadata, or an
    Origin that is not this server's): refused even with a valid form token, which a
    cookie planted from a sibling domain could otherwise supply."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return True
    origin = request.headers.get("origin")
    if origin in (None, "null"):  # pages sent with no-referrer post as Origin: null
        return False
    # the host only: behind a TLS-terminating proxy the scheme this server sees is http
    return urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()


async def form_of(request: Request) -> dict[str, str]:
    """The posted form, read only up to FORM_LIMIT bytes: an anonymous POST /login of
    hundreds of MB is refused before it is held in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > FORM_LIMIT:
        raise FormTooLarge("form too large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > FORM_LIMIT:
            raise FormTooLarge("form too large")
        chunks.append(chunk)
    body = b"".join(chunks)
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}


@functools.cache
def _environment():
    from tailorml.evaluate.report import template_environment

    environment = template_environment()
    environment.filters["share"] = pages.share
    return environment


def page(template: str, status: int = 200, **context) -> HTMLResponse:
    html = _environment().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def signed_in(service: Service, request: Request) -> tuple[Person, str] | None:
    """The person of the request's review session and the session id (None: sign in)."""
    session_id = request.cookies.get(SESSION_COOKIE, "")
    person = session_person(service.store, session_id)
    return None if person is None else (person, session_id)


def to_login() -> RedirectResponse:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie(LEGACY_COOKIE)
    return response


def login_form(service: Service, request: Request, status: int = 200, message: str | None = None):
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not _nonce_ok(nonce):
        nonce = secrets.token_urlsafe(24)
    response = page(
        "service_login.html.j2",
        status=status,
        title="Sign in",
        caller=None,
        login_csrf=login_csrf(service, nonce),
        message=message,
        message_class="problem" if message else None,
    )
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_SECONDS, **_cookie_options(request))
    return response


async def posted(
    service: Service, request: Request
) -> tuple[Person, str, dict[str, str]] | Response:
    """A form post of a signed-in browser: (caller, session, form) when its form token
    belongs to the session; otherwise the answer to give (the login page, or 403)."""
    found = await run_in_threadpool(signed_in, service, request)
    if found is None:
        return to_login()
    caller, session_id = found
    form = await form_of(request)
    if not hmac.compare_digest(form.get("csrf", ""), csrf_token(service, session_id)):
        return Response("invalid form token; reload the page", status_code=403)
    return caller, session_id, form


router = APIRouter(include_in_schema=False)


@router.get("/")
async def home():
    return RedirectResponse("/review", status_code=303)


@router.get("/login")
async def login_page(request: Request, service: ServiceDep):
    return login_form(service, request)


@router.post("/login")
async def login(request: Request, service: ServiceDep):
    form = await form_of(request)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if (
        _cross_site(request)
        or not _nonce_ok(nonce)
        or not hmac.compare_digest(form.get("csrf", ""), login_csrf(service, nonce))
    ):
        return login_form(
            service,
            request,
            403,
            "Not signed in: the sign-in form expired or came from another site; sign in"
            " from this page",
        )
    token = form.get("token", "").strip()
    try:
        person = await run_in_threadpool(resolve, service.store, None, token)
    except AuthError as error:
        return login_form(service, request, 401, f"Not signed in: {error}")
    actor = f"{person.name} ({person.role})"
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:
        await run_in_threadpool(end_session, service.store, previous, actor)
    session_id = await run_in_threadpool(new_session, service.store, person, actor)
    response = RedirectResponse("/review", status_code=303)
    response.set_cookie(
        SESSION_COOKIE, session_id, max_age=SESSION_SECONDS, **_cookie_options(request)
    )
    response.delete_cookie(LOGIN_COOKIE)
    response.delete_cookie(LEGACY_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request, service: ServiceDep):
    checked = await posted(service, request)
    if isinstance(checked, Response):
        return checked
    caller, session_id, _ = checked
    await run_in_threadpool(
        end_session, service.store, session_id, f"{caller.name} ({caller.role})"
    )
    return to_login()


def overview(service: Service, caller: Person) -> list[dict]:
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


@router.get("/review")
async def review_list(request: Request, service: ServiceDep):
    found = await run_in_threadpool(signed_in, service, request)
    if found is None:
        return to_login()
    caller, session_id = found
    if caller.role == "patient":  # a patient's own page: their data, consent, export
        return RedirectResponse("/me", status_code=303)
    rows = await run_in_threadpool(overview, service, caller)
    return page(
        "service_review.html.j2",
        title="Review",
        caller=caller,
        csrf=csrf_token(service, session_id),
        rows=rows,
        push_key=await run_in_threadpool(service.push.public_key),
        message=pages.done_message(request.query_params.get("done")),
    )


def written(text: str) -> str:
    """A comment or reason as typed, or "" when it holds nothing to read: white space and
    invisible format characters (a zero-width space) only."""
    text = text.strip()
    visible = any(not c.isspace() and unicodedata.category(c) != "Cf" for c in text)
    return text if visible else ""


def preferences(request: Request) -> tuple[str, str | None]:
    """The glucose unit and time zone of the pages: from the query string when it names
    them (then remembered in cookies), else from the cookies, else mg/dL and no zone: the
    page then shows the patient's phone's offset (`pages.patient_context`). `tz=phone`
    asks for that again (and forgets the zone cookie)."""
    unit = (
        pages.unit_of(request.query_params.get("unit"))
        or pages.unit_of(request.cookies.get(UNIT_COOKIE))
        or "mg/dL"
    )
    if request.query_params.get("tz") == pages.PHONE:
        return unit, None
    zone = pages.zone_of(request.query_params.get("tz")) or pages.zone_of(
        request.cookies.get(ZONE_COOKIE)
    )
    return unit, zone


def remember(request: Request, response: Response, unit: str, zone: str | None) -> Response:
    if pages.unit_of(request.query_params.get("unit")):
        response.set_cookie(
            UNIT_COOKIE,
            pages.unit_key(unit),
            max_age=PREFERENCE_SECONDS,
            **_cookie_options(request),
        )
    if zone is not None and pages.zone_of(request.query_params.get("tz")):
        response.set_cookie(
            ZONE_COOKIE, zone, max_age=PREFERENCE_SECONDS, **_cookie_options(request)
        )
    elif request.query_params.get("tz") == pages.PHONE and ZONE_COOKIE in request.cookies:
        response.delete_cookie(ZONE_COOKIE, **_cookie_options(request))
    return response


def no_access(service: Service, caller: Person, session_id: str, error: Exception):
    return page(
        "service_page.html.j2",
        403,
        title="No access",
        caller=caller,
        csrf=csrf_token(service, session_id),
        message=str(error),
        message_class="problem",
    )


def _assigned(service: Service, caller: Person, person_id: str) -> bool:
    return caller.role == "clinician" and person_id in service.store.patients_of(caller.id)


def candidate_page(
    service: Service,
    caller: Person,
    session_id: str,
    candidate_id: int,
    unit: str = "mg/dL",
    zone: str | None = None,
    message=None,
    message_class=None,
    confirm: dict | None = None,
    comment: str = "",
):
    shown = service.candidate(caller, candidate_id)
    found = service.registry.candidate(candidate_id)
    person = service.store.person(shown["patient"])
    can_decide = _assigned(service, caller, person.id) and shown["status"] == "pending_review"
    session = service.registry.session(found.session_id)
    policy = session.summary.get("policy") or {}
    baseline = pages.baseline_of(session)
    changes = []
    if baseline is not None and baseline.id != candidate_id and shown["metrics"]:
        changes = pages.compare(
            shown["metrics"],
            baseline.metrics,
            service.held_out_days(caller, candidate_id),
            int(policy.get("useful_lead_minutes") or 15),
        )
    return dict(
        title=f"Candidate {candidate_id} for {person.name}",
        caller=caller,
        csrf=csrf_token(service, session_id),
        candidate=shown,
        superseded_by=found.superseded_by,
        person=person,
        figures=FIGURES,
        can_decide=can_decide,
        synthetic=bool(session.summary.get("synthetic")),
        changes=changes,
        headline=pages.headline(changes),
        baseline=baseline,
        active=service.registry.active_model(person.id),
        context=pages.patient_context(service, caller, person, unit, zone),
        zones=pages.zones(),
        here=f"/review/candidates/{candidate_id}",
        confirm=confirm,
        comment=comment,
        message=message,
        message_class=message_class,
    )


async def shown(request: Request, service: Service, build, subject, template: str):
    """A signed-in GET of a page about `subject` (a candidate, a patient): `build` gathers
    its context in a worker thread, with the caller's unit and time zone and the message a
    redirect named (`?done=`, one of a fixed set)."""
    found = await run_in_threadpool(signed_in, service, request)
    if found is None:
        return to_login()
    caller, session_id = found
    unit, zone = preferences(request)
    done = pages.done_message(request.query_params.get("done"))
    try:
        context = await run_in_threadpool(
            build, service, caller, session_id, subject, unit, zone, done
        )
    except AccessDenied as error:
        return no_access(service, caller, session_id, error)
    return remember(request, page(template, **context), unit, zone)


@router.get("/review/candidates/{candidate_id}")
async def review_candidate(request: Request, service: ServiceDep, candidate_id: int):
    return await shown(request, service, candidate_page, candidate_id, "service_candidate.html.j2")


NO_COMMENT = (
    "Not recorded: write a comment saying why. It is kept with your decision in the review "
    "record and the audit log."
)


@router.post("/review/candidates/{candidate_id}")
async def decide(request: Request, service: ServiceDep, candidate_id: int):
    """Two steps: the form (decision and a comment, which may not be empty) answers with a
    confirmation naming what will happen; only the confirmation's post records it."""
    checked = await posted(service, request)
    if isinstance(checked, Response):
        return checked
    caller, session_id, form = checked
    unit, zone = preferences(request)
    decision = form.get("decision", "")
    comment = written(form.get("comment", ""))

    def again(message: str, status: int = 400, confirm: dict | None = None):
        return run_in_threadpool(
            candidate_page,
            service,
            caller,
            session_id,
            candidate_id,
            unit,
            zone,
            message,
            "problem" if status >= 400 else "notice",
            confirm,
            comment,
        )

    try:
        if decision not in ("approve", "reject"):
            raise TailormlError("choose Approve or Reject")
        if not comment:
            return page("service_candidate.html.j2", 400, **await again(NO_COMMENT))
        if form.get("confirm") != "yes":
            context = await again(None, 200, {"decision": decision, "comment": comment})
            if not context["can_decide"]:
                raise TailormlError(
                    f"candidate {candidate_id} is '{context['candidate']['status']}', or you are"
                    " not the patient's assigned clinician: nothing to confirm"
                )
            return page("service_candidate.html.j2", **context)
        await run_in_threadpool(service.review, caller, candidate_id, decision, comment)
    except AccessDenied as error:
        return no_access(service, caller, session_id, error)
    except TailormlError as error:
        return page("service_candidate.html.j2", 400, **await again(f"Not recorded: {error}"))
    done = "approved" if decision == "approve" else "rejected"
    return RedirectResponse(f"/review/candidates/{candidate_id}?done={done}", status_code=303)


@router.get("/review/candidates/{candidate_id}/card")
async def candidate_card(request: Request, service: ServiceDep, candidate_id: int):
    """The model card of the candidate's own session (a newer session has its own card)."""
    found = await run_in_threadpool(signed_in, service, request)
    if found is None:
        return to_login()
    caller, _ = found

    def draw() -> str:
        html = service.candidate_card_html(caller, candidate_id)
        person = service.store.person(service.registry.candidate(candidate_id).individual)
        return pages.card_for_page(html, person)

    try:
        html = await run_in_threadpool(draw)
    except TailormlError as error:
        return Response(str(error), status_code=403, media_type="text/plain")
    return HTMLResponse(html, headers=SECURITY_HEADERS)


def patient_page(
    service: Service,
    caller: Person,
    session_id: str,
    patient: str,
    unit: str,
    zone: str | None,
    message=None,
    message_class=None,
    confirm: dict | None = None,
    comment: str = "",
):
    person = service.subject(caller, patient, "read_patient_page")
    active = service.registry.active_model(person.id)
    assigned = _assigned(service, caller, person.id)
    return dict(
        title=f"{person.name}",
        caller=caller,
        csrf=csrf_token(service, session_id),
        person=person,
        active=active,
        can_roll_back=assigned and active.kind == "personalized",
        own=caller.id == person.id,
        candidates=list(reversed(service.registry.candidates(person.id, pending_only=False))),
        jobs=service.store.jobs(person.id)[:3],
        session=service.registry.latest_session(person.id),
        context=pages.patient_context(service, caller, person, unit, zone),
        follow_up=pages.follow_up(service, caller, person, active, service.live.now_ms()),
        zones=pages.zones(),
        here=f"/review/patients/{person.id}",
        confirm=confirm,
        comment=comment,
        message=message,
        message_class=message_class,
    )


@router.get("/review/patients/{patient}")
async def review_patient(request: Request, service: ServiceDep, patient: str):
    return await shown(request, service, patient_page, patient, "service_patient.html.j2")


@router.post("/review/patients/{patient}/rollback")
async def roll_back(request: Request, service: ServiceDep, patient: str):
    """Back to the predefined model (`Service.rollback`, as POST /api/v1/model/rollback),
    for the assigned clinician: a reason is required, and a confirmation step."""
    checked = await posted(service, request)
    if isinstance(checked, Response):
        return checked
    caller, session_id, form = checked
    unit, zone = preferences(request)
    reason = written(form.get("reason", ""))

    def again(message, status=400, confirm=None):
        return run_in_threadpool(
            patient_page,
            service,
            caller,
            session_id,
            patient,
            unit,
            zone,
            message,
            "problem" if status >= 400 else "notice",
            confirm,
            reason,
        )

    try:
        context = await again(None, 200)
        if not context["can_roll_back"]:
            raise TailormlError(
                "only the assigned clinician rolls back, and only a personalized model"
            )
        if not reason:
            return page(
                "service_patient.html.j2",
                400,
                **await again(
                    "Not rolled back: write the reason. It is kept in the model history and "
                    "the audit log."
                ),
            )
        if form.get("confirm") != "yes":
            return page("service_patient.html.j2", **await again(None, 200, {"reason": reason}))
        person = context["person"]
        await run_in_threadpool(service.rollback, caller, person.id, reason)
    except AccessDenied as error:
        return no_access(service, caller, session_id, error)
    except TailormlError as error:
        return page("service_patient.html.j2", 400, **await again(f"Not rolled back: {error}"))
    return RedirectResponse(f"/review/patients/{person.id}?done=rolled_back", status_code=303)


@router.get("/review/cards/{patient}")
async def card(request: Request, service: ServiceDep, patient: str):
    found = await run_in_threadpool(signed_in, service, request)
    if found is None:
        return to_login()
    caller, _ = found
    try:
        html = await run_in_threadpool(service.card_html, caller, patient)
    except TailormlError as error:
        return Response(str(error), status_code=403, media_type="text/plain")
    if html is None:
        return Response("no model card yet", status_code=404, media_type="text/plain")
    person = await run_in_threadpool(service.subject, caller, patient, "read_card")
    return HTMLResponse(pages.card_for_page(html, person), headers=SECURITY_HEADERS)
