"""Web Push subscriptions and the service's own wrapped keys (the VAPID key pair).

A subscription (a browser's push endpoint and its two keys) says which device a person
reads alerts on, so it is kept like their readings: sealed with the person's data key, with
a keyed fingerprint of the endpoint in the clear (the same browser subscribing again is one
subscription) and an opaque id. Erasure deletes them with the rest of the person's data.

`service_keys` holds secrets of the service itself, wrapped by the server key as the
people's data keys are: generated once (the first process to insert wins, so several API
processes agree on one VAPID key) and never rewritten.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass

from tailorml.registry.database import audit, now

MAX_PER_PERSON = 10  # browsers and phones a person may subscribe at once

SCHEMA = """
CREATE TABLE IF NOT EXISTS push_subscriptions (
    id INTEGER PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people(id),
    public_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (person_id, fingerprint),
    UNIQUE (person_id, public_id)
);
CREATE TABLE IF NOT EXISTS service_keys (
    name TEXT PRIMARY KEY,
    wrapped BLOB NOT NULL,
    key_id TEXT NOT NULL,
    public TEXT NOT NULL,
    created TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Subscription:
    person_id: str
    public_id: str
    sealed: bytes
    created: str


def add(
    connection: sqlite3.Connection, person_id: str, fingerprint: str, sealed: bytes, actor: str
) -> tuple[str, bool]:
    """Inside a write transaction: (the subscription's id, whether it is new). The same
    endpoint again replaces its keys (a browser renews them) under the same id."""
    row = connection.execute(
        "SELECT public_id FROM push_subscriptions WHERE person_id = ? AND fingerprint = ?",
        (person_id, fingerprint),
    ).fetchone()
    if row is not None:
        connection.execute(
            "UPDATE push_subscriptions SET sealed = ? WHERE person_id = ? AND public_id = ?",
            (sealed, person_id, row["public_id"]),
        )
        return row["public_id"], False
    count = connection.execute(
        "SELECT COUNT(*) AS n FROM push_subscriptions WHERE person_id = ?", (person_id,)
    ).fetchone()["n"]
    if count >= MAX_PER_PERSON:
        from tailorml.errors import TailormlError

        raise TailormlError(
            f"subscription: at most {MAX_PER_PERSON} devices per person; delete one first "
            "(DELETE /api/v1/push/subscriptions/{id})"
        )
    public_id = secrets.token_hex(12)
    connection.execute(
        "INSERT INTO push_subscriptions (person_id, public_id, fingerprint, sealed, created)"
        " VALUES (?, ?, ?, ?, ?)",
        (person_id, public_id, fingerprint, sealed, now()),
    )
    audit(connection, actor, "push_subscribe", person_id, {"subscription": public_id})
    return public_id, True


def remove(connection: sqlite3.Connection, person_id: str, public_id: str, actor: str) -> bool:
    removed = connection.execute(
        "DELETE FROM push_subscriptions WHERE person_id = ? AND public_id = ?",
        (person_id, public_id),
    ).rowcount
    if removed:
        audit(connection, actor, "push_unsubscribe", person_id, {"subscription": public_id})
    return bool(removed)


def of(connection: sqlite3.Connection, person_ids: list[str]) -> list[Subscription]:
    if not person_ids:
        return []
    marks = ", ".join("?" for _ in person_ids)
    rows = connection.execute(
        f"SELECT person_id, public_id, sealed, created FROM push_subscriptions WHERE person_id"
        f" IN ({marks}) ORDER BY id",
        tuple(person_ids),
    ).fetchall()
    return [Subscription(r["person_id"], r["public_id"], r["sealed"], r["created"]) for r in rows]


def service_key(connection: sqlite3.Connection, name: str) -> tuple[bytes, str, str] | None:
    row = connection.execute(
        "SELECT wrapped, key_id, public FROM service_keys WHERE name = ?", (name,)
    ).fetchone()
    return None if row is None else (bytes(row["wrapped"]), row["key_id"], row["public"])


def add_service_key(
    connection: sqlite3.Connection, name: str, wrapped: bytes, key_id: str, public: str
) -> None:
    """Inside a write transaction: the first key of `name` stays (INSERT OR IGNORE)."""
    inserted = connection.execute(
        "INSERT OR IGNORE INTO service_keys (name, wrapped, key_id, public, created)"
        " VALUES (?, ?, ?, ?, ?)",
        (name, wrapped, key_id, public, now()),
    ).rowcount
    if inserted:
        audit(connection, "service", "service_key_created", None, {"name": name, "public": public})
