"""What the fourth hostile pass found in the service, each refused at the boundary: a week
date that the importers cannot read, a clinician's `?patient=` on the caller-only export,
two `?token=` parameters, a comment of invisible characters, and `serve --workers` without
a bound."""

from __future__ import annotations

import time

from tailorml.service.routes.review import written


def test_an_iso_week_date_is_refused_a_calendar_date_stored(app, made):
    client, _ = app
    alice = made.people["alice"]
    now = time.gmtime(time.time() - 3600)
    calendar = time.strftime("%Y-%m-%dT%H:%M:%SZ", now)
    week = time.strftime("%G-W%V-%uT%H:%M:%SZ", now)  # the same instant, as a week date
    refused = client.post(
        "/api/v1/entries",
        json=[{"type": "sgv", "sgv": 120, "dateString": week}],
        headers=alice.secret,
    )
    assert refused.status_code == 422
    assert "is not an ISO 8601 date and time" in refused.json()["message"]
    stored = client.post(
        "/api/v1/entries",
        json=[{"type": "sgv", "sgv": 120, "dateString": calendar}],
        headers=alice.secret,
    )
    assert stored.status_code == 200 and stored.json()[0]["dateString"].startswith(calendar[:16])


def test_the_export_is_the_callers_own_and_refuses_a_patient(app, made):
    client, _ = app
    bob, alice = made.people["bob"], made.people["alice"]
    answer = client.get(f"/api/v1/people/me/export?patient={alice.id}", headers=bob.bearer)
    assert answer.status_code == 422 and "caller's own data only" in answer.json()["message"]
    assert client.get("/api/v1/people/me/export", headers=alice.bearer).status_code == 200


def test_two_tokens_in_the_query_are_refused(app, made):
    client, _ = app
    alice, carol = made.people["alice"], made.people["carol"]
    answer = client.get(f"/api/v1/entries.json?token={alice.token}&token={carol.token}")
    assert answer.status_code == 401 and "several ?token=" in answer.json()["message"]
    assert client.get(f"/api/v1/entries.json?token={alice.token}").status_code == 200


def test_two_credential_headers_are_refused(app, made):
    """Two api-secret (or Authorization) headers of two accounts: the first one won, so
    a proxy that adds its own header could act as another account without a word."""
    client, _ = app
    alice, carol = made.people["alice"], made.people["carol"]
    two_secrets = [
        ("api-secret", alice.secret["api-secret"]),
        ("api-secret", carol.secret["api-secret"]),
    ]
    answer = client.get("/api/v1/entries.json", headers=two_secrets)
    assert answer.status_code == 401
    assert (
        answer.json()["message"]
        == "give one credential; this request has several api-secret headers"
    )
    two_bearers = [
        ("authorization", alice.bearer["Authorization"]),
        ("authorization", carol.bearer["Authorization"]),
    ]
    answer = client.get("/api/v1/entries.json", headers=two_bearers)
    assert answer.status_code == 401 and "several authorization headers" in answer.json()["message"]
    assert client.get("/api/v1/entries.json", headers=alice.secret).status_code == 200


def test_a_comment_of_invisible_characters_is_no_comment():
    assert written("  \u200b\u200b \n") == ""  # zero-width spaces only
    assert written("\ufeff\u2060") == ""
    assert written(" ok \u200b") == "ok \u200b"
    assert written("reviewed with alice") == "reviewed with alice"


def test_serve_refuses_more_workers_than_a_host_can_hold(tmp_path, tailorml_in_process):
    result = tailorml_in_process("serve", "--data", str(tmp_path / "d"), "--workers", "100000")
    assert result.returncode == 2
    assert "--workers" in result.stderr and "64" in result.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was created
