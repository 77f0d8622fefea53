"""STS: GetCallerIdentity and GetSessionToken (temporary keys the front door verifies and expires)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import STS
from mallee.services.clc.iam import store

DEFAULT_SESSION = 43200  # seconds; AWS's default for GetSessionToken
ROOT_MAX_SESSION = 3600  # AWS caps the root identity's sessions at one hour


@STS.operation(access="any")
def get_caller_identity(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    principal = ctx.principal
    assert principal is not None
    return {"UserId": principal.user_id, "Account": principal.account_id, "Arn": principal.arn}


@STS.operation(access="any")
def get_session_token(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    principal = ctx.principal
    assert principal is not None
    if principal.session_token:
        raise CloudError("AccessDenied", "Cannot call GetSessionToken with session credentials")
    seconds = p.get("DurationSeconds", DEFAULT_SESSION)
    if principal.is_root:
        seconds = min(seconds, ROOT_MAX_SESSION)
    user_id = None if principal.is_root else principal.user_id
    key = store.create_session_credentials(
        ctx.session, principal.account_id, user_id, _dt.timedelta(seconds=seconds)
    )
    return {
        "Credentials": {
            "AccessKeyId": key.id,
            "SecretAccessKey": key.secret,
            "SessionToken": key.session_token,
            "Expiration": key.expires,
        }
    }
