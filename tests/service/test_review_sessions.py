"""The review page's sign-in is a browser session, not the API token: a random id stored
hashed with an end, ended by sign-out and by rotating or revoking the token, accepted by the
review pages only; the sign-in form itself carries a CSRF token."""

from __future__ import annotations

import re
import shutil
import sqlite3

import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import make_service_data

from tailorml.registry.people import PeopleStore
from tailorml.service.app import create_app
from tailorml.service.auth import (
    LEGACY_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    add_person,
    rotate_token,
    token_sha256,
)
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained):
    return make_service_data(tmp_path_factory.mktemp("sessions"), trained)


@pytest.fixture(scope="module")
def service(made):
    return Service(made.data, ServerKey.load(made.key_file, made.data), database=made.database)


@pytest.fixture(scope="module")
def app(service):
    return create_app(service, run_jobs=False)


@pytest.fixture
def browser(app):
    """A fresh cookie jar each test, as a new browser profile."""
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, "the form carries no CSRF token"
    return found.group(1)


def sign_in(client, token: str):
    form = client.get("/login")
    assert form.status_code == 200
    return client.post(
        "/login", data={"token": token, "csrf": form_token(form.text)}, follow_redirects=False
    )


def new_person(made, name: str) -> tuple[str, str]:
    person, token = add_person(PeopleStore(made.database or made.data), name, "patient", "test")
    return person.id, token


def test_the_cookie_is_a_stored_session_not_the_token(browser, made):
    bob = made.people["bob"]
    answer = sign_in(browser, bob.token)
    assert answer.status_code == 303 and answer.headers["location"] == "/review"
    cookie = browser.cookies.get(SESSION_COOKIE)
    assert cookie and cookie != bob.token and bob.token not in answer.headers["set-cookie"]
    assert LEGACY_COOKIE not in browser.cookies
    set_cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie
    assert f"max-age={SESSION_SECONDS}" in set_cookie and "secure" not in set_cookie
    with sqlite3.connect(made.data / "registry.sqlite") as db:
        stored = db.execute(
            "SELECT id_sha256, person_id FROM review_sessions WHERE id_sha256 = ?",
            (token_sha256(cookie),),
        ).fetchall()
        raw = db.execute(
            "SELECT COUNT(*) FROM review_sessions WHERE id_sha256 = ?", (cookie,)
        ).fetchone()[0]
    assert stored == [(token_sha256(cookie), bob.id)] and raw == 0  # only its hash is kept
    page = browser.get("/review")
    assert page.status_code == 200 and "bob (clinician)" in page.text


def test_over_https_the_cookie_is_secure(app, made):
    with TestClient(app, base_url="https://testserver") as client:
        answer = sign_in(client, made.people["alice"].token)
    assert answer.status_code == 303
    assert "secure" in answer.headers["set-cookie"].lower()


def test_sign_out_ends_the_session_server_side(browser, made):
    answer = sign_in(browser, made.people["bob"].token)
    cookie = browser.cookies.get(SESSION_COOKIE)
    page = browser.get("/review")
    no_csrf = browser.post("/logout", data={}, follow_redirects=False)
    assert no_csrf.status_code == 403  # another site cannot sign anyone out
    assert browser.get("/review", follow_redirects=False).status_code == 200
    out = browser.post("/logout", data={"csrf": form_token(page.text)}, follow_redirects=False)
    assert answer.status_code == 303 and out.status_code == 303
    assert out.headers["location"] == "/login"
    # the old cookie, replayed (e.g. copied before sign-out), gets the sign-in page
    with TestClient(browser.app, cookies={SESSION_COOKIE: cookie}) as replay:
        again = replay.get("/review", follow_redirects=False)
        assert again.status_code == 303 and again.headers["location"] == "/login"
        assert replay.get("/review/cards/" + made.people["alice"].id).url.path == "/login"


def test_rotating_revoking_or_erasing_ends_the_persons_sessions(app, made, service):
    store = PeopleStore(made.database or made.data)
    for change in ("rotate", "revoke", "erase"):
        person_id, token = new_person(made, f"dora-{change}")
        with TestClient(app) as one, TestClient(app) as two:
            assert sign_in(one, token).status_code == 303
            assert sign_in(two, token).status_code == 303
            assert store.review_sessions(person_id) == 2
            if change == "rotate":
                new_token = rotate_token(store, store.person(person_id), "test")
            elif change == "revoke":
                store.revoke(person_id, "test")
            else:
                service.erase(store.person(person_id), "test")
            assert store.review_sessions(person_id) == 0, change
            for client in (one, two):
                assert client.get("/review", follow_redirects=False).status_code == 303, change
        if change == "rotate":  # the new token signs in again
            with TestClient(app) as fresh:
                assert sign_in(fresh, new_token).status_code == 303
                assert fresh.get("/review").status_code == 200


def test_sign_in_without_its_csrf_token_is_refused(browser, made):
    bob = made.people["bob"]
    bare = browser.post("/login", data={"token": bob.token}, follow_redirects=False)
    assert bare.status_code == 403 and SESSION_COOKIE not in browser.cookies
    form = browser.get("/login")
    wrong = browser.post(
        "/login", data={"token": bob.token, "csrf": "0" * 64}, follow_redirects=False
    )
    assert wrong.status_code == 403 and SESSION_COOKIE not in browser.cookies
    # a cross-site POST carries the attacker's form token but not this browser's login cookie
    with TestClient(browser.app) as victim:
        forged = victim.post(
            "/login",
            data={"token": bob.token, "csrf": form_token(form.text)},
            follow_redirects=False,
        )
    assert forged.status_code == 403 and SESSION_COOKIE not in victim.cookies
    assert "came from another site" in forged.text
    # a wrong token with a good form token: 401, and the form can be used again
    bad = browser.post(
        "/login", data={"token": "tm_nope", "csrf": form_token(form.text)}, follow_redirects=False
    )
    assert bad.status_code == 401 and "Not signed in" in bad.text
    # even with this browser's own cookie and form token, a post the browser marks as
    # cross-site (a cookie planted from a sibling domain) is refused
    token = form_token(browser.get("/login").text)
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        planted = browser.post(
            "/login",
            data={"token": bob.token, "csrf": token},
            headers=headers,
            follow_redirects=False,
        )
        assert planted.status_code == 403 and "came from another site" in planted.text
    same_site = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    token = form_token(browser.get("/login").text)
    own = browser.post(
        "/login",
        data={"token": bob.token, "csrf": token},
        headers=same_site,
        follow_redirects=False,
    )
    assert own.status_code == 303


def test_the_session_cookie_is_no_api_credential(browser, made):
    alice = made.people["alice"]
    assert sign_in(browser, alice.token).status_code == 303
    for path in ("/api/v1/entries.json", "/api/v1/model", "/api/v1/people/me"):
        answer = browser.get(path)
        assert answer.status_code == 401, path
    upload = browser.post(
        "/api/v1/entries", json=[{"type": "sgv", "sgv": 100, "date": 1_700_000_000_000}]
    )
    assert upload.status_code == 401
    cookie = browser.cookies.get(SESSION_COOKIE)
    as_bearer = browser.get("/api/v1/model", headers={"Authorization": f"Bearer {cookie}"})
    assert as_bearer.status_code == 401
    # the old cookie (the token itself) opens nothing either, and the API keeps the token
    with TestClient(browser.app, cookies={LEGACY_COOKIE: alice.token}) as old:
        assert old.get("/api/v1/model").status_code == 401
        assert old.get("/review", follow_redirects=False).status_code == 303
    assert browser.get("/api/v1/model", headers=alice.bearer).status_code == 200
    assert browser.get("/api/v1/model", headers=alice.secret).status_code == 200


def test_a_data_directory_without_the_sessions_table_still_opens(tmp_path, made):
    copy = tmp_path / "data"
    shutil.copytree(made.data, copy)
    with sqlite3.connect(copy / "registry.sqlite") as db:
        db.execute("DROP TABLE review_sessions")
    store = PeopleStore(copy)
    assert store.review_sessions(made.people["bob"].id) == 0
    store.add_review_session("x" * 64, made.people["bob"].id, 60, "test")
    assert store.review_session("x" * 64).id == made.people["bob"].id
