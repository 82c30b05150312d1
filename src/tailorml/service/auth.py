"""Who is calling, and what they may see.

Uploaders authenticate the way Nightscout's do: the `api-secret` header carrying the SHA-1
hex of the secret, or `?token=`; API clients may send `Authorization: Bearer TOKEN`. The
review page exchanges the token, once, for a browser session: a random id in an HttpOnly
cookie, stored as its SHA-256 with the person and an end (`SESSION_SECONDS`), deleted at
sign-out and whenever the person's token is rotated or revoked or the account erased. The
session cookie opens the review pages only, never the API. Each person has one random token
(256 bits) that serves as their secret; the store keeps only its SHA-256 and SHA-1 hashes
(with that much entropy a hash cannot be reversed by guessing). A revoked or erased
person's token stops working at their next request: every request reads the store.

Access: a person sees and changes only their own data; a clinician also the data of the
patients assigned to them. Nothing else — no admin role over the API; administration is
the `tailorml users` command on the server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable

from tailorml.errors import TailormlError
from tailorml.registry.people import PeopleStore, Person

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")  # fullmatch: "$" lets "eve\n" in
PERSON_ID_PATTERN = re.compile(r"p-[0-9a-f]{12}")
SESSION_COOKIE = "tailorml_session"
COOKIE = SESSION_COOKIE  # the review page's cookie (a session id, not a token)
LEGACY_COOKIE = "tailorml_token"  # what older versions kept: the token itself; cleared
SESSION_SECONDS = 12 * 3600
SESSION_PATTERN = re.compile(r"ts_[A-Za-z0-9_-]{43}")
# Nightscout's JWT (API v3, lib/authorization/index.js): HS256, an hour; ours names the person
# and the token it was exchanged for (a prefix of its SHA-256), never the token itself
JWT_SECONDS = 3600
JWT_PATTERN = re.compile(r"eyJ[A-Za-z0-9_-]{1,500}\.[A-Za-z0-9_-]{1,1000}\.[A-Za-z0-9_-]{43}")
JWT_HEADER = {"alg": "HS256", "typ": "JWT"}


class AuthError(TailormlError):
    """401: no or bad credentials."""


class AccessDenied(TailormlError):
    """403: valid credentials, someone else's data."""


def new_token() -> str:
    return "tm_" + secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def secret_sha1(token: str) -> str:
    """What a Nightscout uploader sends in `api-secret` for this token."""
    return hashlib.sha1(token.encode()).hexdigest()  # Nightscout's protocol, not a password hash


def add_person(
    store: PeopleStore, name: str, role: str, actor: str, personalization: bool = True
) -> tuple[Person, str]:
    """A new account and its token (shown once; only hashes are stored). A patient's consent
    to personalization is recorded as given at enrollment unless `personalization` is
    False (then they give it on their page or over the API)."""
    if not NAME_PATTERN.fullmatch(name):
        raise TailormlError(
            f"name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', starting with a "
            "letter or digit"
        )
    token = new_token()
    person_id = "p-" + uuid.uuid4().hex[:12]
    person = store.add_person(
        person_id, name, role, token_sha256(token), secret_sha1(token), actor, personalization
    )
    return person, token


def rotate_token(store: PeopleStore, person: Person, actor: str) -> str:
    """A new token for `person` (shown once); the old one stops working at once."""
    token = new_token()
    store.rotate(person.id, token_sha256(token), secret_sha1(token), actor)
    return token


def new_session(store: PeopleStore, person: Person, actor: str) -> str:
    """A review-page session for `person` (only its SHA-256 is stored): the cookie's value."""
    session_id = "ts_" + secrets.token_urlsafe(32)
    store.add_review_session(token_sha256(session_id), person.id, SESSION_SECONDS, actor)
    return session_id


def session_person(store: PeopleStore, session_id: str | None) -> Person | None:
    """The active person of a review-page session; None for anything else (no cookie, an
    unknown, ended or expired session, a revoked or erased account)."""
    if not session_id or not SESSION_PATTERN.fullmatch(session_id):
        return None
    person = store.review_session(token_sha256(session_id))
    return person if person is not None and person.active else None


def end_session(store: PeopleStore, session_id: str | None, actor: str) -> bool:
    if not session_id or not SESSION_PATTERN.fullmatch(session_id):
        return False
    return store.end_review_session(token_sha256(session_id), actor)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_jwt(key: bytes, person_id: str, token_hash: str, now: float | None = None) -> dict:
    """Nightscout's answer to `/api/v2/authorization/request/<token>`: a JWT (HS256 under
    `key`, valid `JWT_SECONDS`) and its issue and expiry times, in seconds."""
    issued = int(time.time() if now is None else now)
    claims = {"sub": person_id, "tok": token_hash[:16], "iat": issued, "exp": issued + JWT_SECONDS}
    signing = _b64(json.dumps(JWT_HEADER).encode()) + "." + _b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return {"token": f"{signing}.{_b64(signature)}", "iat": issued, "exp": claims["exp"]}


def jwt_person(store: PeopleStore, key: bytes, jwt: str, now: float | None = None) -> Person:
    """The person a JWT of `issue_jwt` names; AuthError if it is forged, expired, or the
    token it was exchanged for is no longer the person's (rotated)."""
    signing, _, signature = jwt.rpartition(".")
    expected = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    try:
        valid = hmac.compare_digest(_unb64(signature), expected)
        header, claims = (json.loads(_unb64(part)) for part in signing.split("."))
    except (binascii.Error, ValueError, TypeError):
        valid, header, claims = False, None, None
    if not valid or header != JWT_HEADER or not isinstance(claims, dict):
        raise AuthError("the JWT is not one this service signed; request a new one")
    expires = claims.get("exp")
    if not isinstance(expires, int) or expires <= (time.time() if now is None else now):
        raise AuthError(
            "the JWT has expired; request a new one at /api/v2/authorization/request/<token>"
        )
    person = store.find(str(claims.get("sub")))
    current = store.token_hash(person.id) if person is not None else None
    if current is None or not hmac.compare_digest(current[:16], str(claims.get("tok"))):
        raise AuthError("the JWT was issued for a token that is no longer valid")
    return person


def resolve(
    store: PeopleStore,
    api_secret: str | None = None,
    token: str | None = None,
    authorization: str | None = None,
    jwt_key: Callable[[], bytes] | None = None,
) -> Person:
    """The caller, from the credentials present; AuthError if none is valid, or if two of
    them name different accounts (a request is one person's: which one would be a guess).
    A review-page session is no credential here (`session_person`). A Bearer value shaped
    as a JWT is checked as one, with `jwt_key` (API v3 clients exchange their token for it)."""
    found: list[tuple[str, Person | None]] = []
    if api_secret:
        digest = api_secret.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{40}", digest):
            raise AuthError("api-secret must be the SHA-1 hex (40 characters) of your token")
        found.append(("the api-secret header", store.by_secret(digest)))
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError("Authorization must be 'Bearer TOKEN'")
        value = value.strip()
        if jwt_key is not None and JWT_PATTERN.fullmatch(value):
            found.append(("Authorization", jwt_person(store, jwt_key(), value)))
        else:
            found.append(("Authorization", store.by_token(token_sha256(value))))
    if token:
        found.append(("?token=", store.by_token(token_sha256(token))))
    if not found:
        raise AuthError(
            "no credentials: send the api-secret header (SHA-1 of your token), ?token=TOKEN or "
            "Authorization: Bearer TOKEN"
        )
    if len({None if person is None else person.id for _, person in found}) > 1:
        raise AuthError(
            f"{' and '.join(name for name, _ in found)} name different accounts; send one "
            "credential"
        )
    person = found[0][1]
    if person is None:
        raise AuthError("unknown credentials: check the token")
    if person.erased is not None:
        raise AuthError("this account was erased")
    if person.revoked is not None:
        raise AuthError("this token was revoked; ask the service's administrator for a new one")
    return person


def may_access(store: PeopleStore, caller: Person, person_id: str) -> bool:
    """Oneself, or a patient assigned to the calling clinician who consents to their access
    (`PeopleStore.patients_of`)."""
    if caller.id == person_id:
        return True
    return caller.role == "clinician" and person_id in store.patients_of(caller.id)


def subject(store: PeopleStore, caller: Person, patient: str | None) -> Person:
    """Whose data a request is about: the caller's own, or `patient` (an id) if the caller
    may access it. The same answer for a missing and a forbidden id, so ids cannot be
    probed."""
    if patient is None or patient == caller.id:
        return caller
    if not PERSON_ID_PATTERN.fullmatch(patient):
        raise TailormlError(f"patient {patient[:40]!r} is not a person id (p- and 12 hex digits)")
    target = store.find(patient)
    if target is None or target.erased is not None or not may_access(store, caller, patient):
        raise AccessDenied(f"you have no access to patient {patient}")
    return target
