"""What `/openapi.json` says of each route: bodies, parameters, answers, errors, credentials.

The routes parse their bodies themselves (`service.nightscout`: one-line messages naming the
record and field, nothing of a bad batch stored), so FastAPI sees only `request: Request` and
would describe nothing. Each route passes `**doc(...)` from here to its decorator instead: the
request body and the query, path and header parameters it reads (`openapi_extra`), its answer
and every error it can give (`responses`), and the credentials it accepts (`security`). Nothing
here runs on a request; `install` adds the shared schemas, security schemes and headers once,
when the schema is first asked for. `tests/service/test_openapi_contract.py` runs schemathesis
against the schema: no 5xx, and every answer's status, content type, headers and body as
described here.
"""

from __future__ import annotations

import warnings
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from tailorml.privacy.wire import CONTEXT_HEADER, MODEL_HEADER
from tailorml.service import nightscout

JSON = "application/json"
REJECTED_HEADER = "X-Refused-Records"
BINARY = "application/octet-stream"
PERSON_ID = "^p-[0-9a-f]{12}$"
HEX64 = "^[0-9a-fA-F]{64}$"
ISO_8601 = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]+)?)?"
    "(Z|[+-][0-9]{2}:?[0-9]{2})$"
)
PRINTABLE = "^[^\\u0000-\\u001f]*$"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """Optional record fields: null is read as absent (Nightscout uploaders send it)."""
    return {"anyOf": [schema, {"type": "null"}]}


def _text(limit: int) -> dict[str, Any]:
    return _nullable({"type": "string", "maxLength": limit, "pattern": PRINTABLE})


def _number(low: float, high: float) -> dict[str, Any]:
    return _nullable({"type": "number", "minimum": low, "maximum": high})


ISO_TEXT = {"type": "string", "maxLength": 64, "pattern": ISO_8601}
TIME = {
    "description": "epoch milliseconds, or ISO 8601 with a UTC offset (Z or +hh:mm); from "
    "2000 to a day past the server's clock",
    "anyOf": [
        {"type": "number", "minimum": nightscout.EARLIEST_MS},
        ISO_TEXT,
        {"type": "null"},
    ],
}

# -- request bodies ------------------------------------------------------------------------

GLUCOSE = {
    "description": f"mg/dL, {nightscout.ERROR_CODE_BELOW:g} to {nightscout.SGV_MAX:g} (39 is "
    "a sensor's LOW, 401 its HIGH); below that only a sensor's whole-number error codes "
    "(stored, never decided)",
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": int(nightscout.ERROR_CODE_BELOW) - 1},
        {"type": "number", "minimum": nightscout.ERROR_CODE_BELOW, "maximum": nightscout.SGV_MAX},
    ],
}

ENTRY = {
    "type": "object",
    "description": "A Nightscout entry. Needs date, dateString or sysTime; sgv for type sgv "
    "(the default), mbg for type mbg. Unknown fields are dropped, not stored.",
    "properties": {
        "type": {
            "type": "string",
            "pattern": nightscout.TYPE_PATTERN.pattern,
            "default": "sgv",
            "description": "sgv (a CGM reading), mbg (a meter reading), cal, …",
        },
        "sgv": GLUCOSE,
        "mbg": GLUCOSE,
        "date": TIME,
        "dateString": _nullable(ISO_TEXT)
        | {"description": "ISO 8601 with a UTC offset; with date: the same instant (±1 min)"},
        "sysTime": _nullable(ISO_TEXT),
        "direction": _text(32),
        "device": _text(128),
        "noise": _number(0, 10),
        "filtered": _number(0, 1e7),
        "unfiltered": _number(0, 1e7),
        "rssi": _number(-1e4, 1e4),
        "delta": _number(-1e3, 1e3),
        "utcOffset": _number(-1440, 1440),
        "slope": _number(-1e9, 1e9),
        "intercept": _number(-1e9, 1e9),
        "scale": _number(-1e9, 1e9),
    },
    "anyOf": [{"required": ["date"]}, {"required": ["dateString"]}, {"required": ["sysTime"]}],
    "allOf": [
        {"if": {"properties": {"type": {"const": "sgv"}}}, "then": {"required": ["sgv"]}},
        {
            "if": {"properties": {"type": {"const": "mbg"}}, "required": ["type"]},
            "then": {"required": ["mbg"]},
        },
    ],
    "example": {"type": "sgv", "sgv": 123, "date": 1_765_000_000_000, "direction": "Flat"},
}

TREATMENT = {
    "type": "object",
    "description": "A Nightscout treatment, kept whole: the fields below are checked, every "
    "other field is kept as sent (AndroidAPS' isSMB, pumpId, pumpSerial; Loop's "
    "syncIdentifier; xDrip's uuid; temp-target ranges; a profile switch's profile), within "
    f"{nightscout.MAX_DOCUMENT_BYTES // 1024} KiB of JSON, nested at most "
    f"{nightscout.MAX_DEPTH} deep, field names of at most {nightscout.MAX_NAME} characters not "
    "starting with $. Needs created_at, date or mills. With the identifier, or the _id, of a "
    "stored treatment, or else its created_at and eventType, it replaces that one.",
    "properties": {
        "eventType": _text(64),
        "created_at": TIME,
        "date": TIME,
        "mills": TIME,
        "carbs": _number(0, 1_000) | {"description": "grams"},
        "insulin": _number(0, 200) | {"description": "units"},
        "duration": _number(0, 100_000) | {"description": "minutes"},
        "glucose": _number(0, 1_000),
        "utcOffset": _number(-1440, 1440),
        "absolute": _number(0, 100),
        "rate": _number(0, 100),
        "notes": _text(2_000),
        "enteredBy": _text(128),
        "glucoseType": _text(32),
        "units": _text(16),
        "identifier": _text(128),
        "_id": {"type": "string", "description": "a stored treatment's id (24 hex digits)"},
    },
    "anyOf": [{"required": ["created_at"]}, {"required": ["date"]}, {"required": ["mills"]}],
    "example": {"eventType": "Meal Bolus", "created_at": "2025-12-06T05:46:40Z", "carbs": 30},
}


DOCUMENT = {
    "type": "object",
    "description": "A Nightscout devicestatus or profile document, kept whole within "
    f"{nightscout.MAX_DOCUMENT_BYTES // 1024} KiB of JSON, nested at most "
    f"{nightscout.MAX_DEPTH} deep, field names of at most {nightscout.MAX_NAME} characters not "
    "starting with $. Its time: created_at, startDate, date or mills (the first given), else "
    "the server's clock.",
    "properties": {
        "created_at": TIME,
        "startDate": TIME,
        "date": TIME,
        "mills": TIME,
        "device": {"type": "string"},
    },
    "example": {
        "device": "loop://iPhone",
        "created_at": "2025-12-06T05:46:40Z",
        "uploader": {"battery": 76},
        "loop": {"iob": {"iob": 1.25}, "cob": {"cob": 12}},
    },
}


def _batch(record: str) -> dict[str, Any]:
    return {
        "anyOf": [
            {
                "type": "array",
                "items": ref(record),
                "minItems": 1,
                "maxItems": nightscout.MAX_RECORDS,
            },
            ref(record),
        ],
        "description": f"a list of at most {nightscout.MAX_RECORDS:,} records, or one; the "
        f"body at most {nightscout.MAX_BODY_BYTES:,} bytes. Each record is checked on its own: "
        "the valid ones are stored and answered (200), the refused ones are named by index in "
        f"the {REJECTED_HEADER} header; a batch with no valid record is a 422 naming the first "
        "bad record and its field, and stores nothing",
    }


STRING = {"type": "string", "maxLength": 2_000}
PATIENT_FIELD = {
    "type": "string",
    "maxLength": 2_000,
    "pattern": PERSON_ID,
    "description": "a clinician acts on this assigned patient (default: the caller)",
}

# -- answers -------------------------------------------------------------------------------

STORED = {
    "_id": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
    "date": {"type": "integer"},
}
ENTRY_OUT = {
    "type": "object",
    "required": ["_id", "type", "date", "dateString"],
    "properties": STORED
    | {
        "type": {"type": "string"},
        "dateString": {"type": "string"},
        "sgv": {"type": "number"},
        "mbg": {"type": "number"},
        "direction": {"type": "string"},
        "device": {"type": "string"},
        "sysTime": {"type": "string"},
        "utcOffset": {"type": "integer"},
        "warning": {
            "type": "string",
            "description": "upload answers only: dated after the server's clock, stored "
            "but not decided",
        },
    },
}
TREATMENT_OUT = {
    "type": "object",
    "required": ["_id", "eventType", "created_at", "date"],
    "properties": STORED
    | {
        "eventType": {"type": "string"},
        "created_at": {"type": "string"},
        "carbs": {"type": "number"},
        "insulin": {"type": "number"},
        "utcOffset": {"type": "integer"},
        "notes": {"type": "string"},
    },
}
DECISION_FIELDS = {
    "reading_ms": {"type": "integer"},
    "decision": {"enum": ["urgent", "alert", "snoozed", "none", "no_decision"]},
    "kind": {"type": ["string", "null"], "description": "hypo or hyper"},
    "probabilities": {
        "type": ["object", "null"],
        "additionalProperties": {"type": "number"},
        "description": "per class; null when no model ran",
    },
    "threshold": {"type": ["number", "null"]},
    "reason": {"type": "string"},
    "model_id": {"type": "integer"},
    "model_sha256": {"type": "string"},
    "model_kind": {"type": "string"},
    "cgm": {"type": ["number", "null"]},
}
DECISION = {
    "type": "object",
    "required": ["id", "created", "reading_ms", "decision", "reason"],
    "properties": DECISION_FIELDS | {"id": {"type": "integer"}, "created": {"type": "string"}},
}
CURRENT_ALERT = {
    "anyOf": [
        {
            "type": "object",
            "description": "no reading decided yet",
            "required": ["decision", "message"],
            "properties": {"decision": {"type": "null"}, "message": {"type": "string"}},
        },
        {
            "allOf": [ref("Decision")],
            "required": ["age_minutes", "stale", "stale_alarm", "urgent"],
            "properties": {
                "age_minutes": {"type": "number", "minimum": 0},
                "stale": {"type": "boolean"},
                "stale_alarm": {"type": "boolean"},
                "urgent": {"type": "boolean"},
            },
        },
    ]
}
ACTIVE_MODEL = {
    "type": "object",
    "required": ["patient", "kind", "model_id", "model_sha256", "candidate_id", "threshold"],
    "properties": {
        "patient": {"type": "string"},
        "kind": {"enum": ["predefined", "personalized"]},
        "model_id": {"type": "integer"},
        "model_sha256": {"type": "string"},
        "candidate_id": {"type": ["integer", "null"]},
        "threshold": {"type": "number"},
        "reason": {"type": "string"},
        "since": {"type": ["string", "null"]},
    },
}
JOB = {
    "type": "object",
    "required": ["id", "person_id", "status", "created"],
    "properties": {
        "id": {"type": "integer"},
        "person_id": {"type": "string"},
        "requested_by": {"type": "string"},
        "status": {"enum": ["queued", "running", "done", "failed"]},
        "session_id": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]},
        "created": {"type": "string"},
        "started": {"type": ["string", "null"]},
        "finished": {"type": ["string", "null"]},
    },
}
CANDIDATE = {
    "type": "object",
    "required": ["id", "patient", "name", "status", "threshold", "passed_gates", "gates"],
    "properties": {
        "id": {"type": "integer"},
        "patient": {"type": "string"},
        "name": {"type": "string"},
        "status": {
            "enum": [
                "failed_gates",
                "not_selected",
                "pending_review",
                "approved",
                "rejected",
                "superseded",
                "withdrawn",
            ]
        },
        "threshold": {"type": "number"},
        "passed_gates": {"type": "boolean"},
        "created": {"type": "string"},
        "metrics": {"type": "object", "description": "held-out figures"},
        "gates": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["gate", "passed", "outcome", "reason"],
                "properties": {
                    "gate": {"type": "string"},
                    "passed": {"type": "boolean"},
                    "outcome": {"type": "string"},
                    "reason": {"type": "string"},
                },
            },
        },
    },
}
AUDIT_ENTRY = {
    "type": "object",
    "required": ["id", "created", "actor", "action", "individual", "details"],
    "properties": {
        "id": {"type": "integer"},
        "created": {"type": "string"},
        "actor": {"type": "string"},
        "action": {"type": "string"},
        "individual": {"type": ["string", "null"]},
        "details": {"type": "object"},
    },
}
PROPERTIES_OUT = {
    "type": "object",
    "description": "Nightscout's /api/v2/properties: each present only when known",
    "properties": {
        "bgnow": {
            "type": "object",
            "required": ["mean", "last", "mills", "sgvs"],
            "properties": {
                "mean": {"type": "number"},
                "last": {"type": "number"},
                "mills": {"type": "integer"},
                "sgvs": {"type": "array", "items": {"type": "object"}},
            },
        },
        "delta": {
            "type": "object",
            "required": ["absolute", "elapsedMins", "interpolated", "mgdl", "display"],
        },
        "direction": {"type": "object", "required": ["value", "label", "entity", "display"]},
        "iob": {"type": "object", "required": ["iob", "display", "source"]},
        "cob": {"type": "object", "required": ["cob", "display", "source"]},
        "upbat": {"type": "object", "required": ["level", "display"]},
        "tailorml": {
            "type": "object",
            "description": "tailorml's current decision, as a property (as Nightscout's ar2 "
            "offers its forecast)",
            "required": ["decision", "mills", "display"],
            "properties": {
                "decision": {"enum": ["urgent", "alert", "snoozed", "none", "no_decision"]},
                "kind": {"type": ["string", "null"]},
                "probability": {"type": ["number", "null"]},
                "threshold": {"type": ["number", "null"]},
                "mills": {"type": "integer"},
                "level": {"enum": ["urgent", "warn", None]},
                "stale": {"type": "boolean"},
                "display": {"type": "string"},
            },
        },
    },
}
PEBBLE_OUT = {
    "type": "object",
    "required": ["status", "bgs", "cals"],
    "properties": {
        "status": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["now"],
                "properties": {"now": {"type": "integer"}},
            },
        },
        "bgs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sgv", "trend", "direction", "datetime", "bgdelta"],
                "properties": {
                    "sgv": {"type": "string", "description": "mg/dL, as text (as Nightscout)"},
                    "trend": {"type": "integer", "minimum": 0, "maximum": 9},
                    "direction": {"type": "string"},
                    "datetime": {"type": "integer"},
                    "bgdelta": {"type": "number"},
                    "battery": {"type": "string"},
                    "iob": {"type": "string"},
                    "cob": {"type": "number"},
                },
            },
        },
        "cals": {"type": "array"},
    },
}
ACCOUNT = {
    "id": {"type": "string", "pattern": PERSON_ID},
    "name": {"type": "string"},
    "role": {"enum": ["patient", "clinician"]},
}
SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "description": "every error: its status and one line saying what is wrong",
        "required": ["status", "message"],
        "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
        "additionalProperties": False,
    },
    "Conflict": {
        "type": "object",
        "required": ["status", "message", "reason"],
        "properties": {
            "status": {"const": 409},
            "message": {"type": "string"},
            "reason": {"enum": ["context_unknown", "model_changed"]},
        },
        "additionalProperties": False,
    },
    "Entry": ENTRY,
    "Document": DOCUMENT,
    "Documents": _batch("Document"),
    "StoredDocument": {
        "type": "object",
        "required": ["_id", "mills"],
        "properties": {"_id": STORED["_id"], "mills": {"type": "integer"}},
    },
    "TreatmentUpdate": {"allOf": [ref("Treatment")], "required": ["_id"]},
    "Deleted": {
        "type": "object",
        "required": ["n", "ok"],
        "properties": {"n": {"enum": [0, 1]}, "ok": {"const": 1}},
    },
    "Properties": PROPERTIES_OUT,
    "Pebble": PEBBLE_OUT,
    "Treatment": TREATMENT,
    "Entries": _batch("Entry"),
    "Treatments": _batch("Treatment"),
    "Review": {
        "type": "object",
        "required": ["decision"],
        "properties": {
            "decision": {"enum": ["approve", "reject"]},
            "comment": _nullable(STRING),
        },
        "example": {"decision": "approve", "comment": "gates and card reviewed"},
    },
    "Rollback": {
        "type": "object",
        "required": ["reason"],
        "properties": {
            "reason": STRING | {"minLength": 1, "description": "recorded for audit"},
            "patient": _nullable(PATIENT_FIELD),
        },
        "example": {"reason": "too many false alerts at night"},
    },
    "Personalization": {
        "type": "object",
        "properties": {"patient": _nullable(PATIENT_FIELD)},
    },
    "Status": {
        "type": "object",
        "required": [
            "status",
            "name",
            "version",
            "serverTime",
            "serverTimeEpoch",
            "apiEnabled",
            "settings",
        ],
        "properties": {
            "status": {"const": "ok"},
            "name": {"type": "string"},
            "version": {"type": "string"},
            "serverTime": {"type": "string", "description": "the server's clock, ISO 8601 UTC"},
            "serverTimeEpoch": {"type": "integer", "description": "the same, epoch ms"},
            "apiEnabled": {"type": "boolean"},
            "careportalEnabled": {"type": "boolean"},
            "settings": {
                "type": "object",
                "required": ["units", "thresholds"],
                "properties": {
                    "units": {"const": "mg/dl"},
                    "thresholds": {
                        "type": "object",
                        "required": ["bgHigh", "bgTargetTop", "bgTargetBottom", "bgLow"],
                        "additionalProperties": {"type": "number"},
                    },
                },
            },
        },
    },
    "VerifyAuth": {
        "type": "object",
        "description": "Nightscout's fields (canRead, canWrite, isAdmin, message, rolefound, "
        "permissions), then whose credentials they are",
        "required": ["canRead", "canWrite", "message", "id", "name", "role"],
        "properties": {
            "canRead": {"type": "boolean"},
            "canWrite": {"type": "boolean"},
            "isAdmin": {"type": "boolean"},
            "message": {"const": "OK"},
            "rolefound": {"const": "FOUND"},
            "permissions": {"const": "ROLE"},
        }
        | ACCOUNT,
    },
    "Me": {
        "type": "object",
        "required": ["id", "name", "role", "patients"],
        "properties": ACCOUNT
        | {
            "patients": {
                "type": "array",
                "items": {"type": "string"},
                "description": "a clinician's assigned patients",
            }
        },
    },
    "StoredEntry": ENTRY_OUT,
    "StoredTreatment": TREATMENT_OUT,
    "Decision": DECISION,
    "CurrentAlert": CURRENT_ALERT,
    "ActiveModel": ACTIVE_MODEL,
    "Job": JOB,
    "Candidate": CANDIDATE,
    "AuditEntry": AUDIT_ENTRY,
    "Export": {
        "type": "object",
        "required": ["person", "entries", "treatments", "alerts", "models", "audit"],
        "properties": {
            "person": {"type": "object", "properties": ACCOUNT},
            "entries": {"type": "array", "items": {"type": "object"}},
            "treatments": {"type": "array", "items": {"type": "object"}},
            "alerts": {"type": "array", "items": {"type": "object"}},
            "models": {
                "type": "object",
                "required": ["active", "history"],
                "properties": {
                    "active": {"type": "string"},
                    "history": {"type": "array", "items": {"type": "object"}},
                },
            },
            "audit": {"type": "array", "items": ref("AuditEntry")},
        },
    },
    "Erased": {
        "type": "object",
        "required": ["entries", "treatments", "alerts", "retired_models"],
        "properties": {
            "entries": {"type": "integer"},
            "treatments": {"type": "integer"},
            "alerts": {"type": "integer"},
            "retired_models": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "EncryptedSpec": {
        "type": "object",
        "description": "layout, CKKS parameters, classes and alert policy; no weights",
        "required": ["model_sha256"],
        "properties": {"model_sha256": {"type": "string", "pattern": HEX64}},
    },
    "ContextRegistered": {
        "type": "object",
        "required": ["registered", "context_sha256", "bytes", "replaced"],
        "properties": {
            "registered": {"const": True},
            "context_sha256": {"type": "string", "pattern": HEX64},
            "bytes": {"type": "integer"},
            "replaced": {"type": "array", "items": {"type": "string"}},
        },
    },
}

SECURITY_SCHEMES = {
    "apiSecret": {
        "type": "apiKey",
        "in": "header",
        "name": "api-secret",
        "description": "Nightscout uploaders: the SHA-1 hex (40 digits) of the token",
    },
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer TOKEN"},
    "token": {"type": "apiKey", "in": "query", "name": "token", "description": "?token=TOKEN"},
}
SECURITY = [{name: []} for name in SECURITY_SCHEMES]

# every answer carries these (the app's middleware); a few carry more
HEADERS = {
    "CacheControl": {
        "description": "answers carry health data: never cached",
        "required": True,
        "schema": {"const": "no-store"},
    },
    "ContentTypeOptions": {
        "description": "never sniffed",
        "required": True,
        "schema": {"const": "nosniff"},
    },
    "RetryAfter": {
        "description": "seconds to wait before retrying",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    },
    "RefusedRecords": {
        "description": "only when some records of the batch were refused: JSON, "
        '{"refused": how many, "records": [{"index", "message"}, ...the first 20]}',
        "required": False,
        "schema": {"type": "string"},
    },
    "ModelSha256": {
        "description": "the SHA-256 of the model that computed the answer",
        "required": True,
        "schema": {"type": "string", "pattern": HEX64},
    },
}
COMMON_HEADERS = {
    "Cache-Control": {"$ref": "#/components/headers/CacheControl"},
    "X-Content-Type-Options": {"$ref": "#/components/headers/ContentTypeOptions"},
}

ERRORS = {
    400: "refused: a patient id that is not p- and 12 hex digits, or what the service cannot "
    "do for this account or state (one line says why)",
    401: "no credentials, or wrong, revoked or erased ones",
    403: "someone else's data (the same answer for an id that does not exist)",
    404: "no such path (a path parameter that leaves the route)",
    408: "the body arrived too slowly, or stopped arriving",
    409: "made for a public context or model the server no longer has",
    413: "the body is too large",
    415: "a Content-Encoding other than gzip (a gzip body is decoded; the 1 MB limit is its "
    "decoded size)",
    422: "a bad body or query, naming the record and field",
    429: "this account is already uploading one",
    503: "too many being uploaded at once; retry later",
    507: "the server's storage is full; retry later",
}


def _error(code: int, why: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": why or ERRORS[code],
        "content": {JSON: {"schema": ref("Conflict" if code == 409 else "Error")}},
    }
    if code in (429, 503):
        answer["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
    return answer


# -- parameters ------------------------------------------------------------------------------


def query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


PATIENT = query(
    "patient",
    {"type": "string", "pattern": PERSON_ID},
    "a clinician acts on this assigned patient (p- and 12 hex digits; default: the caller)",
)
COUNT = query(
    "count",
    {"type": "integer", "minimum": 1, "maximum": nightscout.MAX_COUNT, "default": 10},
    "at most this many, newest first",
)
FILTER_TIME = {
    "anyOf": [
        {"type": "integer"},
        {"type": "string", "minLength": 1, "maxLength": 64, "pattern": ISO_8601},
    ]
}
OPS = {"gte": "at or after", "gt": "after", "lte": "at or before", "lt": "before"}


def time_filters(*fields: str) -> list[dict]:
    return [
        query(
            f"find[{field}][${op}]",
            FILTER_TIME,
            f"only records {words} this time (epoch ms, or ISO 8601 with a UTC offset)",
        )
        for field in fields
        for op, words in OPS.items()
    ]


def equal_filter(field: str) -> dict:
    return query(
        f"find[{field}]", {"type": "string", "maxLength": 64}, f"only records of this {field}"
    )


def body(
    schema: dict[str, Any], media: str = JSON, required: bool = True, example: Any = None
) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"requestBody": {"required": required, "content": {media: content}}}


# -- one route -------------------------------------------------------------------------------


def doc(
    summary: str,
    answer: dict[str, Any] | None,
    errors: tuple[int, ...] = (),
    *,
    status: int = 200,
    description: str | None = None,
    parameters: list[dict] | tuple = (),
    request: dict[str, Any] | None = None,
    public: bool = False,
    why: dict[int, str] | None = None,
    media: str = JSON,
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The decorator arguments that describe a route: `answer` is the schema of its `status`
    answer, `errors` the error statuses it can give (401 added unless `public`)."""
    ok: dict[str, Any] = {"description": description or summary}
    if answer is not None:
        ok["content"] = {media: {"schema": answer}}
    if headers:
        ok["headers"] = headers
    codes = sorted(set(errors) | (set() if public else {401}))
    extra: dict[str, Any] = dict(request or {})
    if parameters:
        extra["parameters"] = list(parameters)
    if not public:
        extra["security"] = SECURITY
    return {
        "summary": summary,
        "responses": {status: ok} | {code: _error(code, (why or {}).get(code)) for code in codes},
        "openapi_extra": extra,
    }


def many(name: str) -> dict[str, Any]:
    return {"type": "array", "items": ref(name)}


def install(app: FastAPI) -> None:
    """Serve the schema with the shared parts the routes refer to."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            with warnings.catch_warnings():
                # a GET-and-HEAD route gives both operations one id (GET's or HEAD's, as
                # a set orders them): each gets its own below
                warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
                schema = get_openapi(
                    title=app.title,
                    version=app.version,
                    openapi_version=app.openapi_version,
                    description=app.description,
                    routes=app.routes,
                )
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(SCHEMAS)
            components["securitySchemes"] = SECURITY_SCHEMES
            components["headers"] = HEADERS
            for operations in schema["paths"].values():
                for method, operation in operations.items():
                    # FastAPI's ids end in _<method>, one of the route's: its own, each
                    route_id = operation["operationId"].rsplit("_", 1)[0]
                    operation["operationId"] = f"{route_id}_{method}"
                    for answer in operation["responses"].values():
                        answer["headers"] = COMMON_HEADERS | answer.get("headers", {})
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# the headers of the encrypted-alert request and answer
CONTEXT_PARAMETER = {
    "name": CONTEXT_HEADER,
    "in": "header",
    "required": True,
    "description": "the SHA-256 of the public context the ciphertext was encrypted under",
    "schema": {"type": "string", "pattern": HEX64},
}
MODEL_PARAMETER = {
    "name": MODEL_HEADER,
    "in": "header",
    "required": True,
    "description": "model_sha256 of GET /api/v1/encrypted/spec (whose policy the client applies)",
    "schema": {"type": "string", "pattern": HEX64},
}
MODEL_ANSWER_HEADER = {MODEL_HEADER: {"$ref": "#/components/headers/ModelSha256"}}


# -- the routes (service.routes pass these to their decorators) -----------------------------

EARLIER = {"sgv": 118, "date": 1_765_000_000_000 - 300_000, "direction": "FortyFiveUp"}
ENTRY_FILTERS = [PATIENT, COUNT, *time_filters("date", "dateString")]
STATUS = doc("Nightscout status (no personal data)", ref("Status"), public=True)
VERIFYAUTH = doc(
    "Who the credentials belong to (Nightscout's shape, and the account)", ref("VerifyAuth")
)
EXPERIMENTS_TEST = doc(
    "Nightscout's secret check (Loop, Trio, xDrip4iOS): 200 with good credentials",
    {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
)
REFUSED = {REJECTED_HEADER: {"$ref": "#/components/headers/RefusedRecords"}}
UPLOAD_ENTRIES = doc(
    "Upload Nightscout entries (CGM readings)",
    many("StoredEntry"),
    (400, 403, 413, 415, 422, 507),
    description="The entries as stored, with their _id; an entry posted again (same type "
    "and date) is stored once, and one with a different value replaces the stored one (as "
    "Nightscout's upsert; the previous value stays in the record's history); of several "
    "values for one reading in one batch the last is stored and the others refused. New and "
    "corrected CGM readings are decided by the person's active model. Refused records of "
    f"a batch are named in {REJECTED_HEADER}.",
    parameters=[PATIENT],
    request=body(ref("Entries"), example=[ENTRY["example"], ENTRY["example"] | EARLIER]),
    headers=REFUSED,
)
ENTRIES = doc(
    "Entries, newest first",
    many("StoredEntry"),
    (400, 403, 422, 507),
    parameters=[*ENTRY_FILTERS, equal_filter("type")],
)
SGV = doc(
    "CGM readings (type sgv), newest first",
    many("StoredEntry"),
    (400, 403, 422, 507),
    parameters=ENTRY_FILTERS,
)
CURRENT_ENTRY = doc(
    "The newest CGM reading that is not in the future",
    many("StoredEntry") | {"maxItems": 1},
    (400, 403, 507),
    parameters=[PATIENT],
)
UPLOAD_TREATMENTS = doc(
    "Upload Nightscout treatments, kept whole",
    many("StoredTreatment"),
    (400, 403, 413, 415, 422, 507),
    parameters=[PATIENT],
    request=body(ref("Treatments"), example=[TREATMENT["example"]]),
    headers=REFUSED,
)
PUT_TREATMENT = doc(
    "Replace the treatment of the body's _id (Loop, AndroidAPS); the previous content stays "
    "in its history",
    ref("StoredTreatment"),
    (400, 403, 413, 415, 422, 507),
    parameters=[PATIENT],
    request=body(ref("TreatmentUpdate")),
    why={400: "another treatment has this created_at and eventType (or identifier)"},
)
DELETE_TREATMENT = doc(
    "Delete a treatment by its _id (n: 1 deleted, 0 none of the caller's has it)",
    ref("Deleted"),
    (400, 403, 422, 507),
    parameters=[PATIENT],
)
UPLOAD_DEVICESTATUS = doc(
    "Upload devicestatus documents (uploader battery, loop/openaps IOB, COB, predictions, "
    "pump), kept whole",
    many("StoredDocument"),
    (400, 403, 413, 415, 422, 507),
    parameters=[PATIENT],
    request=body(ref("Documents"), example=[DOCUMENT["example"]]),
    headers=REFUSED,
)
DOCUMENT_FILTERS = [PATIENT, COUNT, *time_filters("created_at", "date", "mills")]
DEVICESTATUS = doc(
    "devicestatus documents and tailorml's decisions (one record per decided reading, "
    "`device` tailorml://<model kind>, composed when read), newest first",
    many("StoredDocument"),
    (400, 403, 422, 507),
    parameters=DOCUMENT_FILTERS,
)
UPLOAD_PROFILE = doc(
    "Upload profile documents, kept whole",
    many("StoredDocument"),
    (400, 403, 413, 415, 422, 507),
    parameters=[PATIENT],
    request=body(ref("Documents")),
    headers=REFUSED,
)
PROFILES = doc(
    "Profile documents, newest first",
    many("StoredDocument"),
    (400, 403, 422, 507),
    parameters=DOCUMENT_FILTERS,
)
CURRENT_PROFILE = doc(
    "The newest profile document",
    ref("StoredDocument"),
    (400, 403, 404, 507),
    parameters=[PATIENT],
    why={404: "no profile has been uploaded"},
)
PROPERTIES = doc(
    "Nightscout's /api/v2/properties: bgnow, delta, direction, iob, cob, upbat and "
    "tailorml's alert",
    ref("Properties"),
    (400, 403, 507),
    parameters=[PATIENT],
)
SOME_PROPERTIES = doc(
    "Some of /api/v2/properties, named with commas (e.g. bgnow,delta,tailorml)",
    ref("Properties"),
    (400, 403, 422, 507),
    parameters=[PATIENT],
)
PEBBLE = doc(
    "Nightscout's /pebble (Nightguard, watch faces): the newest readings",
    ref("Pebble"),
    (400, 403, 422, 507),
    parameters=[PATIENT, COUNT],
)
TREATMENTS = doc(
    "Treatments, newest first",
    many("StoredTreatment"),
    (400, 403, 422, 507),
    parameters=[
        PATIENT,
        COUNT,
        *time_filters("created_at", "date", "timestamp"),
        equal_filter("eventType"),
    ],
)
CURRENT_ALERT = doc(
    "The decision of the newest reading at or before the server's clock, with its age",
    ref("CurrentAlert"),
    (400, 403, 507),
    parameters=[PATIENT],
)
ALERTS = doc(
    "Decision history, newest first",
    many("Decision"),
    (400, 403, 422, 507),
    parameters=[PATIENT, COUNT, *time_filters("date")],
)
MODEL = doc("The active model", ref("ActiveModel"), (400, 403, 507), parameters=[PATIENT])
ROLLBACK = doc(
    "Back to the predefined model at its own threshold (recorded)",
    ref("ActiveModel"),
    (400, 403, 413, 415, 422, 507),
    request=body(ref("Rollback")),
    why={400: "an empty reason, or a person never personalized (nothing to roll back)"},
)
PERSONALIZE = doc(
    "Queue a personalization (one at a time per person)",
    ref("Job"),
    (400, 403, 413, 415, 422, 507),
    status=202,
    request=body(ref("Personalization"), required=False),
    why={
        400: "a clinician's own account, or a personalization already under way",
        403: "not the caller's patient, or the patient has not consented to personalization",
    },
)
JOBS = doc("Personalization jobs", many("Job"), (400, 403, 507), parameters=[PATIENT])
JOB = doc(
    "One personalization job",
    ref("Job"),
    (403, 404, 422),
    why={422: "a job id that is not a whole number"},
)
CANDIDATES = doc(
    "Candidates with their gates and held-out figures",
    many("Candidate"),
    (400, 403, 507),
    parameters=[
        PATIENT,
        query("all", {"type": "boolean"}, "1 or true: every candidate, not only pending ones"),
    ],
)
CANDIDATE = doc(
    "One candidate",
    ref("Candidate"),
    (403, 404, 422, 507),
    why={422: "a candidate id that is not a whole number"},
)
REVIEW = doc(
    "Approve or reject a candidate (its patient's assigned clinician only)",
    ref("Candidate"),
    (400, 403, 404, 413, 415, 422, 507),
    request=body(ref("Review")),
    why={400: "the candidate is not awaiting review"},
)
ENCRYPTED_SPEC = doc(
    "What a client needs to encrypt for the HE-friendly model",
    ref("EncryptedSpec"),
    (400,),
    why={400: "the service runs without --he-model"},
)
ENCRYPTED_CONTEXT = doc(
    "Register a device's public CKKS context (the patient's own)",
    ref("ContextRegistered"),
    (400, 403, 408, 413, 429, 503, 507),
    request=body({"type": "string", "format": "binary"}, BINARY),
    why={
        400: "the service runs without --he-model, or not a public context of its chain",
        403: "a clinician's token (contexts are a patient's own)",
    },
)
ENCRYPTED_ALERT = doc(
    "Encrypted logits for one encrypted window (the patient's own; nothing kept)",
    {"type": "string", "format": "binary"},
    (400, 403, 409, 413, 507),
    parameters=[CONTEXT_PARAMETER, MODEL_PARAMETER],
    request=body({"type": "string", "format": "binary"}, BINARY),
    media=BINARY,
    headers=MODEL_ANSWER_HEADER,
    why={
        400: f"the service runs without --he-model, {CONTEXT_HEADER} or {MODEL_HEADER} "
        "missing or not 64 hex digits, or not a ciphertext of the spec",
        403: "a clinician's token (encrypted alerts are a patient's own)",
    },
)
ME = doc("The caller's account", ref("Me"))
EXPORT = doc("Everything stored about the caller, opened", ref("Export"), (507,))
AUDIT = doc(
    "The audit log about the person: its newest `count` lines, oldest first",
    many("AuditEntry"),
    (400, 403, 422, 507),
    parameters=[
        PATIENT,
        query(
            "count",
            {
                "type": "integer",
                "minimum": 1,
                "maximum": nightscout.MAX_COUNT,
                "default": nightscout.AUDIT_DEFAULT_COUNT,
            },
            "at most this many of the newest lines",
        ),
    ],
    why={422: "count not a whole number from 1 to 10,000"},
)
ERASE = doc(
    "Erase the caller's data and retire every model trained on it (cannot be undone)",
    ref("Erased"),
    (422, 507),
    parameters=[
        query(
            "confirm",
            {"type": "string", "pattern": PERSON_ID},
            "the caller's own id, to confirm",
            required=True,
        )
    ],
    why={422: "confirm missing or not the caller's id"},
)

# -- consent and Web Push (routes/consent.py, routes/push.py) -------------------------------

CONSENT_STATE = {
    "type": "object",
    "required": ["granted", "since", "source", "by"],
    "properties": {
        "granted": {"type": "boolean"},
        "since": {"type": ["string", "null"], "description": "when it was last recorded"},
        "source": {
            "type": ["string", "null"],
            "description": "enrollment, assignment, migration, patient or administrator",
        },
        "by": {"type": ["string", "null"], "description": "who recorded it"},
    },
}
SCHEMAS.update(
    {
        "Consent": {
            "type": "object",
            "required": ["patient", "personalization", "clinicians", "history"],
            "properties": {
                "patient": ACCOUNT["id"],
                "personalization": CONSENT_STATE,
                "clinicians": {
                    "type": "array",
                    "description": "every assigned clinician; only those granted see the data",
                    "items": {
                        "allOf": [CONSENT_STATE],
                        "required": ["id", "name"],
                        "properties": {"id": ACCOUNT["id"], "name": {"type": "string"}},
                    },
                },
                "history": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["scope", "granted", "source", "actor", "created"],
                    },
                },
            },
        },
        "ConsentChange": {
            "type": "object",
            "description": "either part, or both; withdrawing personalization stops queued "
            "and running jobs and rolls a personalized model back to the predefined one",
            "properties": {
                "personalization": {"type": ["boolean", "null"]},
                "clinicians": {
                    "type": ["object", "null"],
                    "description": "assigned clinician id -> true (grant) or false (withdraw)",
                    "propertyNames": {"pattern": PERSON_ID},
                    "additionalProperties": {"type": "boolean"},
                    "maxProperties": 100,
                },
            },
            "additionalProperties": False,
            "anyOf": [
                {
                    "required": ["personalization"],
                    "properties": {"personalization": {"type": "boolean"}},
                },
                {"required": ["clinicians"], "properties": {"clinicians": {"minProperties": 1}}},
            ],
            "example": {"personalization": False},
        },
        "PushSubscription": {
            "type": "object",
            "description": "a browser's PushSubscription.toJSON(): an https endpoint of a push "
            "service (a named host, not an IP address) and its keys",
            "required": ["endpoint", "keys"],
            "properties": {
                "endpoint": {"type": "string", "minLength": 10, "maxLength": 2_000},
                "keys": {
                    "type": "object",
                    "required": ["p256dh", "auth"],
                    "properties": {
                        "p256dh": {"type": "string", "maxLength": 200},
                        "auth": {"type": "string", "maxLength": 200},
                    },
                },
            },
        },
        "Subscribed": {
            "type": "object",
            "required": ["id", "new", "endpoint"],
            "properties": {
                "id": {"type": "string"},
                "new": {"type": "boolean", "description": "false: this endpoint was known"},
                "endpoint": {"type": "string"},
            },
        },
        "PushSubscriptions": {
            "type": "object",
            "required": ["vapid_public_key", "subscriptions"],
            "properties": {
                "vapid_public_key": {
                    "type": "string",
                    "description": "the applicationServerKey a browser subscribes with "
                    "(base64url, an uncompressed P-256 point)",
                },
                "subscriptions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "endpoint", "created"],
                    },
                },
            },
        },
    }
)
CONSENT = doc(
    "The patient's consents: to personalization and to each assigned clinician's access",
    ref("Consent"),
    (403, 507),
    why={403: "a clinician's token (consent is a patient's)"},
)
SET_CONSENT = doc(
    "Grant or withdraw consent (the patient's own); recorded and audited",
    ref("Consent"),
    (400, 403, 413, 415, 422, 507),
    request=body(ref("ConsentChange")),
    why={
        403: "a clinician's token (consent is a patient's)",
        422: "a bad body, or a clinician who is not assigned to the patient",
    },
)
PUSH_SUBSCRIPTIONS = doc(
    "The VAPID public key and the caller's push subscriptions", ref("PushSubscriptions"), (507,)
)
SUBSCRIBE = doc(
    "Subscribe a browser to the caller's alerts (a clinician's: their consenting patients')",
    ref("Subscribed"),
    (400, 413, 415, 422, 507),
    status=201,
    request=body(ref("PushSubscription")),
    why={400: "ten subscriptions already"},
)
UNSUBSCRIBE = doc(
    "Delete one of the caller's push subscriptions (n: 1 deleted, 0 none of the caller's)",
    ref("Deleted"),
    (422, 507),
    why={422: "a subscription id that leaves the route"},
)


# -- Nightscout API v3 (AndroidAPS' NSClient v3; service.routes.v3*) ----------------------

V3_COLLECTIONS = ["entries", "treatments", "devicestatus", "profile", "food", "settings"]
V3_ANY = {"type": "object", "description": "a stored record as kept (API v3 fields added)"}
V3_RECORD = {
    "type": "object",
    "required": ["identifier", "srvModified", "srvCreated"],
    "properties": {
        "identifier": {"type": "string", "description": "the client's, or the record's id"},
        "srvModified": {"type": "integer", "description": "server time of its last change"},
        "srvCreated": {"type": "integer", "description": "server time it was stored"},
        "isValid": {"const": False, "description": "only a deleted record's, in a history"},
    },
}
SCHEMAS.update(
    {
        "V3Record": V3_RECORD,
        "V3Records": {
            "type": "object",
            "required": ["status", "result"],
            "properties": {"status": {"const": 200}, "result": many("V3Record")},
        },
        "V3One": {
            "type": "object",
            "required": ["status", "result"],
            "properties": {"status": {"const": 200}, "result": ref("V3Record")},
        },
        "V3Written": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"enum": [200, 201]},
                "identifier": {"type": "string"},
                "lastModified": {"type": "integer"},
                "isDeduplication": {"const": True},
                "deduplicatedIdentifier": {"type": "string"},
            },
        },
        "V3Deleted": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": 200}},
        },
        "V3Version": {
            "type": "object",
            "required": ["status", "result"],
            "properties": {
                "status": {"const": 200},
                "result": {
                    "type": "object",
                    "required": ["version", "apiVersion", "srvDate", "storage"],
                    "properties": {
                        "version": {"type": "string"},
                        "apiVersion": {"type": "string"},
                        "srvDate": {"type": "integer"},
                        "storage": {"type": "object"},
                        "apiPermissions": {
                            "type": "object",
                            "description": "per collection: c(reate) r(ead) u(pdate) d(elete)",
                            "required": V3_COLLECTIONS,
                            "additionalProperties": {"enum": ["crud", "r"]},
                        },
                    },
                },
            },
        },
        "V3LastModified": {
            "type": "object",
            "required": ["status", "result"],
            "properties": {
                "status": {"const": 200},
                "result": {
                    "type": "object",
                    "required": ["srvDate", "collections"],
                    "properties": {
                        "srvDate": {"type": "integer"},
                        "srvDateString": {"type": "string"},
                        "collections": {
                            "type": "object",
                            "description": "the newest srvModified of each collection that "
                            "has records (deletions included)",
                            "additionalProperties": {"type": "integer"},
                        },
                    },
                },
            },
        },
    }
)
HEADERS.update(
    {
        "ETag": {
            "description": 'the newest srvModified of the answer, W/"<ms>" (a history\'s next '
            "lastModified)",
            "required": False,
            "schema": {"type": "string"},
        },
        "LastModified": {
            "description": "the same, as an HTTP date",
            "required": False,
            "schema": {"type": "string"},
        },
    }
)
V3_PATH = {
    "name": "collection",
    "in": "path",
    "required": True,
    "description": "the Nightscout collection",
    "schema": {"type": "string", "enum": V3_COLLECTIONS},
}
V3_IDENTIFIER = {
    "name": "identifier",
    "in": "path",
    "required": True,
    "description": "the record's identifier (the client's, or the id the service gave it)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
}
V3_LIMIT = query(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000},
    "at most this many",
)
V3_FIELDS = query("fields", {"type": "string", "maxLength": 500}, "only these fields (a,b,c)")
V3_WHY = {
    400: "a record or query Nightscout's API v3 refuses (one line says why): a field it keeps "
    "immutable changed, a bad time, limit or filter operator",
    404: "no such collection, or no record of that identifier",
    410: "the record of that identifier was deleted",
}
V3_ERRORS = (400, 403, 404, 507)
V3_HISTORY_HEADERS = {
    "ETag": {"$ref": "#/components/headers/ETag"},
    "Last-Modified": {"$ref": "#/components/headers/LastModified"},
}
V3_VERSION = doc(
    "API v3: versions (credentials required, unlike Nightscout's)",
    ref("V3Version"),
    (507,),
)
V3_STATUS = doc(
    "API v3: versions and the caller's permissions per collection",
    ref("V3Version"),
    (400, 403, 507),
    parameters=[PATIENT],
)
V3_LAST_MODIFIED = doc(
    "API v3: the newest change of each collection",
    ref("V3LastModified"),
    (400, 403, 507),
    parameters=[PATIENT],
)
V3_HISTORY = doc(
    "API v3: records changed or deleted after lastModified (epoch ms or ISO 8601), oldest "
    "change first; a deleted one with isValid false",
    ref("V3Records"),
    V3_ERRORS,
    parameters=[
        V3_PATH,
        {
            "name": "last_modified",
            "in": "path",
            "required": True,
            "description": "epoch ms or ISO 8601",
            "schema": {"type": "string", "minLength": 1, "maxLength": 64},
        },
        PATIENT,
        V3_LIMIT,
        V3_FIELDS,
    ],
    why=V3_WHY,
    headers=V3_HISTORY_HEADERS,
)
V3_HISTORY_HEADER = doc(
    "API v3: records changed or deleted at or after the Last-Modified header",
    ref("V3Records"),
    V3_ERRORS,
    parameters=[
        V3_PATH,
        {
            "name": "Last-Modified",
            "in": "header",
            "required": True,
            "description": "an HTTP date",
            "schema": {"type": "string", "maxLength": 64},
        },
        PATIENT,
        V3_LIMIT,
        V3_FIELDS,
    ],
    why=V3_WHY,
    headers=V3_HISTORY_HEADERS,
)
V3_SEARCH = doc(
    "API v3: records by filters (<field>$<op>=value: eq, ne, gt, gte, lt, lte, in, nin), "
    "sort or sort$desc (a time field), skip, limit, fields",
    ref("V3Records"),
    V3_ERRORS,
    parameters=[
        V3_PATH,
        PATIENT,
        V3_LIMIT,
        V3_FIELDS,
        query("skip", {"type": "integer", "minimum": 0}, "skip this many first"),
        query("sort", {"enum": ["date", "created_at", "srvModified"]}, "ascending by"),
        query("sort$desc", {"enum": ["date", "created_at", "srvModified"]}, "descending by"),
        query("date$gt", {"type": "integer"}, "AndroidAPS: readings after (epoch ms)"),
        query("created_at$gt", ISO_TEXT, "AndroidAPS: treatments after (ISO 8601)"),
        query("srvModified$gt", {"type": "integer"}, "changed after (epoch ms)"),
        query("type", {"type": "string", "maxLength": 32}, "AndroidAPS: type=sgv"),
    ],
    why=V3_WHY,
)
V3_CREATE = doc(
    "API v3: store one record (201); one with the identifier, or the deduplication fields, of "
    "a stored one replaces it (200, isDeduplication)",
    ref("V3Written"),
    (400, 403, 404, 413, 415, 507),
    status=201,
    parameters=[V3_PATH, PATIENT],
    request=body({"type": "object"}),
    why=V3_WHY,
)
V3_CREATE["responses"][200] = {
    "description": "a deduplication: the stored record was replaced",
    "content": {JSON: {"schema": ref("V3Written")}},
}
V3_READ = doc(
    "API v3: one record by its identifier",
    ref("V3One"),
    (*V3_ERRORS, 410),
    parameters=[V3_PATH, V3_IDENTIFIER, PATIENT, V3_FIELDS],
    why=V3_WHY,
)
V3_REPLACE = doc(
    "API v3: replace the record of that identifier (200), or store it under it (201)",
    ref("V3Written"),
    (400, 403, 404, 413, 415, 507),
    parameters=[V3_PATH, V3_IDENTIFIER, PATIENT],
    request=body({"type": "object"}),
    why=V3_WHY,
)
V3_REPLACE["responses"][201] = {
    "description": "no record had that identifier: stored under it",
    "content": {JSON: {"schema": ref("V3Written")}},
}
V3_PATCH = doc(
    "API v3: change the fields given of the record of that identifier",
    ref("V3Written"),
    (400, 403, 404, 410, 413, 415, 507),
    parameters=[V3_PATH, V3_IDENTIFIER, PATIENT],
    request=body({"type": "object"}),
    why=V3_WHY,
)
V3_DELETE = doc(
    "API v3: delete the record of that identifier (its history shows it with isValid false)",
    ref("V3Deleted"),
    V3_ERRORS,
    parameters=[V3_PATH, V3_IDENTIFIER, PATIENT],
    why=V3_WHY,
)
