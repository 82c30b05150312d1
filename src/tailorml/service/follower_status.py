"""tailorml's decisions as Nightscout devicestatus records, for follower apps.

Follower apps (Nightguard, Nightscout's own client, watch faces, scripts) read a site's state
from `GET /api/v1/devicestatus.json?count=N`. There tailorml's decision of each reading is
answered as one more devicestatus record, **composed when it is read** from the stored
decision (one decision per reading is already stored: nothing more is written), merged by
time with the devicestatus documents the uploaders stored:

    {"_id": "...", "device": "tailorml://predefined", "created_at": "...Z", "mills": ...,
     "tailorml": {"decision", "kind", "p_hypo", "p_hyper", "probability", "threshold",
                  "level", "display", "cgm", "reason", "model": {"id", "sha256", "kind"}}}

Its only key beside `device`, `created_at` and `mills` is `tailorml`. Nightscout's plugins
pick the status they show by key (`'loop' in status`, `'openaps' in status`, `'pump' in
status`, `'uploader' in status`: lib/plugins/loop.js, openaps.js, pump.js, upbat.js), as
Nightguard does (`pump`, NightscoutService.swift readDeviceStatus): a record without those
keys is passed over, never taken for the loop's, pump's or phone's newest status. A
Loop- or OpenAPS-shaped field would be shown, but it would also be taken for the loop's
own: the loop pill would show tailorml's time as the last loop (hiding a loop that stopped)
and the uploader battery would vanish. So none is added.

Only the v1 API shows them. API v3's devicestatus is AndroidAPS' own sync (records by
`identifier` and `srvModified`, in `history` and `lastModified`, changed with PUT, PATCH and
DELETE): a composed record has nothing a client could change, and no sync should copy it.
"""

from __future__ import annotations

from typing import Any

from tailorml.registry.people import Person
from tailorml.service import nightscout

DEVICE = "tailorml://"
#: The last 12 hex digits of a composed record's `_id` ("tailor" in ASCII): its first 12
#: are the reading's time (seconds, then milliseconds), as a Mongo ObjectId begins with
#: its time, so the id is the same at every read and shaped as the stored ones.
ID_TAG = b"tailor".hex()


def record_id(reading_ms: int) -> str:
    seconds, millis = divmod(int(reading_ms), 1000)
    return f"{seconds & 0xFFFFFFFF:08x}{millis:04x}{ID_TAG}"


def status_of(decision: dict[str, Any]) -> dict[str, Any]:
    """The devicestatus record of one stored decision (as `alerts` answers it)."""
    reading_ms = int(decision["reading_ms"])
    shown = nightscout.properties([], [], decision)["tailorml"]
    probabilities = decision.get("probabilities") or {}
    kind = decision.get("model_kind") or "unknown"
    return {
        "_id": record_id(reading_ms),
        "device": f"{DEVICE}{kind}",
        "created_at": nightscout.iso(reading_ms),
        "mills": reading_ms,
        "tailorml": {
            "decision": decision["decision"],
            "kind": decision.get("kind"),
            "p_hypo": probabilities.get("hypo"),
            "p_hyper": probabilities.get("hyper"),
            "probability": shown["probability"],
            "threshold": decision.get("threshold"),
            "level": shown["level"],
            "display": shown["display"],
            "cgm": decision.get("cgm"),
            "reason": decision.get("reason"),
            "model": {
                "id": decision.get("model_id"),
                "sha256": decision.get("model_sha256"),
                "kind": decision.get("model_kind"),
            },
        },
    }


def latest_decisions(service, caller: Person, patient, count, since, until) -> list[dict]:
    """The newest `count` readings' decisions in [since, until], newest first, each
    reading's latest decision only (a corrected or backfilled reading is decided again;
    the earlier decision stays in the alert history, not here)."""
    asked = count
    while True:
        found = service.alerts(caller, patient, asked, since, until)
        latest: dict[int, dict] = {}
        for decision in found:  # newest reading first, its latest decision first
            latest.setdefault(int(decision["reading_ms"]), decision)
        if len(latest) >= count or len(found) < asked or asked >= nightscout.MAX_COUNT:
            return list(latest.values())[:count]
        asked = min(asked * 2, nightscout.MAX_COUNT)


def devicestatus(service, caller: Person, patient, count, since, until) -> list[dict]:
    """`GET /api/v1/devicestatus`: the stored documents and tailorml's decisions in
    [since, until] (as records, above), newest first, `count` of them in all; at equal
    times a stored document comes first. Access and consent are the two reads' own
    (`Service.documents`, `Service.alerts`), each audited as such."""
    stored = service.documents(caller, "devicestatus", patient, count, since, until)
    composed = [
        status_of(d) for d in latest_decisions(service, caller, patient, count, since, until)
    ]
    merged = sorted(stored + composed, key=lambda d: d.get("mills", 0), reverse=True)
    return merged[:count]
