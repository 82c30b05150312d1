"""Nightscout's token exchange (`lib/authorization/endpoints.js`): an API v3 client
(AndroidAPS' NSClient v3: core/nssdk networking/NightscoutAuthRefreshService.kt) trades its
access token, in the path, for a JWT it sends as `Authorization: Bearer` until a 401 tells
it to trade again (NSAuthInterceptor.kt). Here the access token is the account's token.

Not in /openapi.json: its credential is the path itself, which no generated request can
know (the contract test's positive cases would all be 401); docs/service.md describes it."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from tailorml.service.auth import issue_jwt, resolve
from tailorml.service.deps import ServiceDep

router = APIRouter()

# what the JWT lets its holder do, in Nightscout's shiro words (the answer's
# `permissionGroups`; AndroidAPS reads only token, iat and exp)
PERMISSIONS = ["api:*:read", "api:*:create", "api:*:update", "api:*:delete"]


@router.get("/api/v2/authorization/request/{access_token}", include_in_schema=False)
async def request_jwt(access_token: str, service: ServiceDep):
    def issue() -> dict:
        person = resolve(service.store, token=access_token)  # 401 as any wrong token
        answer = issue_jwt(service.jwt_key(), person.id, service.store.token_hash(person.id))
        service.store.record(
            f"{person.name} ({person.role})", "jwt_issued", person.id, {"exp": answer["exp"]}
        )
        return {
            "token": answer["token"],
            "sub": person.name,
            "permissionGroups": [PERMISSIONS],
            "iat": answer["iat"],
            "exp": answer["exp"],
        }

    return await run_in_threadpool(issue)
