"""Gzip bodies (uploaders may compress) are decoded on every JSON upload, within the
same 1 MB limit once decoded; another Content-Encoding is a 415 (bad input round 3)."""

from __future__ import annotations

import gzip
import json
import time

import pytest

BOMB = gzip.compress(b" " * 20_000_000, mtime=0)  # 20 MB of spaces, about 20 KB sent


def hours_ago(hours: float) -> int:
    return int(time.time() * 1000) - int(hours * 3_600_000)


JSON_UPLOADS = [
    ("POST", "/api/v1/entries"),
    ("POST", "/api/v1/treatments"),
    ("PUT", "/api/v1/treatments"),
    ("POST", "/api/v1/devicestatus"),
    ("POST", "/api/v1/profile"),
    ("POST", "/api/v1/model/rollback"),
    ("POST", "/api/v1/personalization"),
    ("POST", "/api/v1/candidates/1/review"),
]


def test_a_gzip_body_is_decoded(app, made):
    client, _ = app
    carol = made.people["carol"]
    at = hours_ago(26)
    body = gzip.compress(json.dumps([{"type": "sgv", "sgv": 111, "date": at}]).encode())
    answer = client.post(
        "/api/v1/entries",
        content=body,
        headers=carol.secret | {"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    assert [(e["sgv"], e["date"]) for e in answer.json()] == [(111, at)]


@pytest.mark.parametrize(("method", "path"), JSON_UPLOADS)
def test_a_gzip_bomb_is_a_413_on_every_json_upload(app, made, method, path):
    client, _ = app
    assert len(BOMB) < 1_000_000  # under the limit as sent
    answer = client.request(
        method,
        path,
        content=BOMB,
        headers=made.people["carol"].secret | {"Content-Encoding": "gzip"},
    )
    assert answer.status_code == 413
    assert answer.json() == {
        "status": 413,
        "message": "body exceeds 1,000,000 bytes once decoded (gzip); send fewer records per "
        "request",
    }


@pytest.mark.parametrize(("method", "path"), JSON_UPLOADS)
def test_another_content_encoding_is_a_415_on_every_json_upload(app, made, method, path):
    client, _ = app
    answer = client.request(
        method,
        path,
        content=b"{}",
        headers=made.people["carol"].secret | {"Content-Encoding": "br"},
    )
    assert answer.status_code == 415
    assert answer.json() == {
        "status": 415,
        "message": "Content-Encoding 'br' is not supported; send gzip or no encoding",
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[{}]", "body: Content-Encoding is gzip but the body is no gzip data"),
        (
            gzip.compress(b"[1, 2, 3]", mtime=0)[:-12],
            "body: the gzip data ends early; send the whole body",
        ),
    ],
    ids=["not-gzip", "cut-short"],
)
def test_a_broken_gzip_body_is_a_422(app, made, body, message):
    client, _ = app
    answer = client.post(
        "/api/v1/entries",
        content=body,
        headers=made.people["carol"].secret | {"Content-Encoding": "gzip"},
    )
    assert answer.status_code == 422
    assert answer.json() == {"status": 422, "message": message}
