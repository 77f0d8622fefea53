"""How IAM records look in API answers, and the account an operation acts on."""

from __future__ import annotations

import json
from typing import Any

from mallee.core.context import RequestContext
from mallee.services.clc.tables import Group, User


def account_of(ctx: RequestContext) -> str:
    """The account acted on: the caller's, or a DelegateAccount the cloud administrator named."""
    assert ctx.account_id is not None, "authorize() settles the account before handlers run"
    return ctx.account_id


def user_view(user: User) -> dict[str, Any]:
    view: dict[str, Any] = {
        "Path": user.path,
        "UserName": user.name,
        "UserId": user.id,
        "Arn": f"arn:aws:iam::{user.account_id}:user{user.path}{user.name}",
        "CreateDate": user.created,
    }
    tags = json.loads(user.tags or "[]")
    if tags:
        view["Tags"] = tags
    return view


def group_view(group: Group) -> dict[str, Any]:
    return {
        "Path": group.path,
        "GroupName": group.name,
        "GroupId": group.id,
        "Arn": f"arn:aws:iam::{group.account_id}:group{group.path}{group.name}",
        "CreateDate": group.created,
    }
