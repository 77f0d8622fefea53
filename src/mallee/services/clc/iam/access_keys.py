"""IAM access keys: Create/List/Update/DeleteAccessKey, for users and for the account's root."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import IAM
from mallee.services.clc.iam import store
from mallee.services.clc.iam.views import account_of
from mallee.services.clc.paging import marker_page
from mallee.services.clc.tables import AccessKey, User


def _owner(ctx: RequestContext, p: dict[str, Any]) -> User | None:
    """The user named, else the caller (a user, or None for the root identity), as IAM does."""
    s, account_id = ctx.session, account_of(ctx)
    if p.get("UserName"):
        return store.get_user(s, account_id, p["UserName"])
    principal = ctx.principal
    assert principal is not None
    if principal.role_name is not None:  # a role session has no keys of its own to manage
        raise CloudError("ValidationError", "Must specify userName when calling with non-User credentials")
    if principal.user_name is not None and principal.account_id == account_id:
        return store.get_user(s, account_id, principal.user_name)
    return None


def _key_of(ctx: RequestContext, owner: User | None, key_id: str) -> AccessKey:
    key: AccessKey | None = ctx.session.get(AccessKey, key_id)
    owner_id = owner.id if owner else None
    if (
        key is None
        or key.session_token is not None
        or key.account_id != account_of(ctx)
        or key.user_id != owner_id
    ):
        raise CloudError("NoSuchEntity", f"The Access Key with id {key_id} cannot be found.")
    return key


def _status(key: AccessKey) -> str:
    return "Active" if key.active else "Inactive"


@IAM.operation()
def create_access_key(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    owner = _owner(ctx, p)
    key = store.create_access_key(ctx.session, account_of(ctx), owner.id if owner else None)
    out: dict[str, Any] = {
        "AccessKeyId": key.id,
        "SecretAccessKey": key.secret,
        "Status": _status(key),
        "CreateDate": key.created,
    }
    if owner:
        out["UserName"] = owner.name
    return {"AccessKey": out}


@IAM.operation()
def list_access_keys(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    owner = _owner(ctx, p)
    q = select(AccessKey).where(
        AccessKey.account_id == account_of(ctx),
        AccessKey.session_token.is_(None),
        AccessKey.user_id == owner.id if owner else AccessKey.user_id.is_(None),
    )
    keys = list(ctx.session.scalars(q.order_by(AccessKey.created, AccessKey.id)))
    meta = []
    for key in keys:
        item: dict[str, Any] = {"AccessKeyId": key.id, "Status": _status(key), "CreateDate": key.created}
        if owner:
            item["UserName"] = owner.name
        meta.append(item)
    return marker_page("AccessKeyMetadata", meta, p)


@IAM.operation()
def update_access_key(ctx: RequestContext, p: dict[str, Any]) -> None:
    key = _key_of(ctx, _owner(ctx, p), p["AccessKeyId"])
    key.active = p["Status"] == "Active"
    return None


@IAM.operation()
def delete_access_key(ctx: RequestContext, p: dict[str, Any]) -> None:
    key = _key_of(ctx, _owner(ctx, p), p["AccessKeyId"])
    ctx.session.delete(key)
    return None


@IAM.operation()
def get_access_key_last_used(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    key = ctx.session.get(AccessKey, p["AccessKeyId"])
    if key is None or key.account_id != account_of(ctx):
        raise CloudError("NoSuchEntity", f"The Access Key with id {p['AccessKeyId']} cannot be found.")
    user = ctx.session.get(User, key.user_id) if key.user_id else None
    return {
        "UserName": user.name if user else "root",
        "AccessKeyLastUsed": {"Region": "N/A", "ServiceName": "N/A"},
    }
