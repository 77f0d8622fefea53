"""IAM users: Create/Get/List/Update/DeleteUser, and the groups a user is in."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, exists, select

from mallee.core import clock, ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import IAM
from mallee.services.clc.iam import store
from mallee.services.clc.iam.views import account_of, group_view, user_view
from mallee.services.clc.paging import marker_page
from mallee.services.clc.tables import AccessKey, GroupMember, InlinePolicy, PolicyAttachment, User


@IAM.operation()
def create_user(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s, account_id = ctx.session, account_of(ctx)
    name = p["UserName"]
    tags = store.tagged("[]", p.get("Tags", []))
    store.claim_name(s, User, name, f"User with name {name} already exists.", account_id=account_id)
    user = User(
        id=ids.unique_id("AIDA"),
        account_id=account_id,
        name=name,
        path=p.get("Path", "/"),
        created=clock.now(),
        tags=tags,
    )
    s.add(user)
    s.flush()
    return {"User": user_view(user)}


@IAM.operation()
def get_user(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s, account_id = ctx.session, account_of(ctx)
    name = p.get("UserName")
    if name is None:
        principal = ctx.principal
        assert principal is not None
        if principal.role_name is not None:
            raise CloudError(
                "ValidationError", "Must specify userName when calling with non-User credentials"
            )
        if principal.user_name is None or principal.account_id != account_id:
            # The root identity answers with its account's ARN, as AWS does.
            account = store.find_account(s, account_id)
            return {
                "User": {
                    "UserId": account.id,
                    "Arn": f"arn:aws:iam::{account.id}:root",
                    "CreateDate": account.created,
                    "Path": "/",
                    "UserName": account.name,
                }
            }
        name = principal.user_name
    return {"User": user_view(store.get_user(s, account_id, name))}


@IAM.operation()
def list_users(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s, account_id = ctx.session, account_of(ctx)
    users = list(s.scalars(select(User).where(User.account_id == account_id).order_by(User.name)))
    prefix = p.get("PathPrefix", "/")
    users = [u for u in users if u.path.startswith(prefix)]
    return marker_page("Users", [user_view(u) for u in users], p)


@IAM.operation()
def update_user(ctx: RequestContext, p: dict[str, Any]) -> None:
    s, account_id = ctx.session, account_of(ctx)
    user = store.get_user(s, account_id, p["UserName"])
    new_name = p.get("NewUserName")
    if new_name and new_name != user.name:
        taken = f"User with name {new_name} already exists."
        store.claim_name(s, User, new_name, taken, account_id=account_id, other_than=user.id)
        user.name = new_name
    if p.get("NewPath"):
        user.path = p["NewPath"]
    return None


@IAM.operation()
def delete_user(ctx: RequestContext, p: dict[str, Any]) -> None:
    s, account_id = ctx.session, account_of(ctx)
    user = store.get_user(s, account_id, p["UserName"])
    # AWS refuses while the user still has things attached; the error says what to remove first,
    # its password (login profile) before anything else.
    if user.password_hash is not None:
        raise CloudError("DeleteConflict", "Cannot delete entity, must delete login profile first.")
    for what, query in (
        ("access keys", exists().where(AccessKey.user_id == user.id, AccessKey.session_token.is_(None))),
        ("group memberships", exists().where(GroupMember.user_id == user.id)),
        (
            "inline policies",
            exists().where(InlinePolicy.owner_kind == "user", InlinePolicy.owner_id == user.id),
        ),
        (
            "attached policies",
            exists().where(PolicyAttachment.owner_kind == "user", PolicyAttachment.owner_id == user.id),
        ),
    ):
        if s.scalar(select(query)):
            raise CloudError("DeleteConflict", f"Cannot delete entity, must remove {what} first.")
    s.execute(delete(AccessKey).where(AccessKey.user_id == user.id))  # expired temporary keys
    s.delete(user)
    return None


@IAM.operation()
def list_groups_for_user(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s, account_id = ctx.session, account_of(ctx)
    user = store.get_user(s, account_id, p["UserName"])
    groups = store.groups_of_user(s, user.id)
    return marker_page("Groups", [group_view(g) for g in groups], p)
