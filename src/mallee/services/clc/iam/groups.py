"""IAM groups: Create/Get/List/DeleteGroup and membership."""

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
from mallee.services.clc.tables import Group, GroupMember, InlinePolicy, PolicyAttachment, User


@IAM.operation()
def create_group(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s, account_id = ctx.session, account_of(ctx)
    name = p["GroupName"]
    store.claim_name(s, Group, name, f"Group with name {name} already exists.", account_id=account_id)
    group = Group(
        id=ids.unique_id("AGPA"),
        account_id=account_id,
        name=name,
        path=p.get("Path", "/"),
        created=clock.now(),
    )
    s.add(group)
    s.flush()
    return {"Group": group_view(group)}


@IAM.operation()
def get_group(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s, account_id = ctx.session, account_of(ctx)
    group = store.get_group(s, account_id, p["GroupName"])
    members = s.scalars(
        select(User)
        .join(GroupMember, GroupMember.user_id == User.id)
        .where(GroupMember.group_id == group.id)
        .order_by(User.name)
    )
    return {"Group": group_view(group), **marker_page("Users", [user_view(u) for u in members], p)}


@IAM.operation()
def list_groups(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s, account_id = ctx.session, account_of(ctx)
    prefix = p.get("PathPrefix", "/")
    groups = [
        g
        for g in s.scalars(select(Group).where(Group.account_id == account_id).order_by(Group.name))
        if g.path.startswith(prefix)
    ]
    return marker_page("Groups", [group_view(g) for g in groups], p)


@IAM.operation()
def delete_group(ctx: RequestContext, p: dict[str, Any]) -> None:
    s, account_id = ctx.session, account_of(ctx)
    group = store.get_group(s, account_id, p["GroupName"])
    for what, query in (
        ("users", exists().where(GroupMember.group_id == group.id)),
        (
            "inline policies",
            exists().where(InlinePolicy.owner_kind == "group", InlinePolicy.owner_id == group.id),
        ),
        (
            "attached policies",
            exists().where(PolicyAttachment.owner_kind == "group", PolicyAttachment.owner_id == group.id),
        ),
    ):
        if s.scalar(select(query)):
            raise CloudError("DeleteConflict", f"Cannot delete entity, must remove {what} first.")
    s.delete(group)
    return None


@IAM.operation()
def add_user_to_group(ctx: RequestContext, p: dict[str, Any]) -> None:
    s, account_id = ctx.session, account_of(ctx)
    group = store.get_group(s, account_id, p["GroupName"])
    user = store.get_user(s, account_id, p["UserName"])
    if s.get(GroupMember, (group.id, user.id)) is None:  # adding twice is not an error on AWS
        s.add(GroupMember(group_id=group.id, user_id=user.id))
    return None


@IAM.operation()
def remove_user_from_group(ctx: RequestContext, p: dict[str, Any]) -> None:
    s, account_id = ctx.session, account_of(ctx)
    group = store.get_group(s, account_id, p["GroupName"])
    user = store.get_user(s, account_id, p["UserName"])
    result = s.execute(
        delete(GroupMember).where(GroupMember.group_id == group.id, GroupMember.user_id == user.id)
    )
    if result.rowcount == 0:
        raise CloudError("NoSuchEntity", f"User {user.name} is not in group {group.name}.")
    return None
