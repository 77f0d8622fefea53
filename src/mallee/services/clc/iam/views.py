"""How IAM records look in API answers, and the account an operation acts on."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from mallee.core.context import RequestContext
from mallee.services.clc.tables import Group, InstanceProfile, Role, User


def account_of(ctx: RequestContext) -> str:
    """The account acted on: the caller's, or a DelegateAccount the cloud administrator named."""
    assert ctx.account_id is not None, "authorize() settles the account before handlers run"
    return ctx.account_id


def encoded_document(document: str) -> str:
    """A policy document as IAM answers it: URL-encoded (RFC 3986); SDKs decode it."""
    return quote(document, safe="")


def tag_list(stored: str) -> list[dict[str, str]]:
    tags: list[dict[str, str]] = json.loads(stored or "[]")
    return tags


def user_view(user: User) -> dict[str, Any]:
    view: dict[str, Any] = {
        "Path": user.path,
        "UserName": user.name,
        "UserId": user.id,
        "Arn": f"arn:aws:iam::{user.account_id}:user{user.path}{user.name}",
        "CreateDate": user.created,
    }
    tags = tag_list(user.tags)
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


def role_arn(role: Role) -> str:
    return f"arn:aws:iam::{role.account_id}:role{role.path}{role.name}"


def instance_profile_arn(profile: InstanceProfile) -> str:
    return f"arn:aws:iam::{profile.account_id}:instance-profile{profile.path}{profile.name}"


def role_view(role: Role, *, with_tags: bool = True, with_last_used: bool = False) -> dict[str, Any]:
    """A Role as IAM answers it: GetRole with its tags and RoleLastUsed (empty until a session of
    the role is made, as AWS answers it); ListRoles leaves out both, as AWS does."""
    view: dict[str, Any] = {
        "Path": role.path,
        "RoleName": role.name,
        "RoleId": role.id,
        "Arn": role_arn(role),
        "CreateDate": role.created,
        "AssumeRolePolicyDocument": encoded_document(role.trust_policy),
        "MaxSessionDuration": role.max_session_duration,
    }
    if role.description:
        view["Description"] = role.description
    tags = tag_list(role.tags) if with_tags else []
    if tags:
        view["Tags"] = tags
    if with_last_used:
        used = {"LastUsedDate": role.last_used, "Region": role.last_used_region}
        view["RoleLastUsed"] = {k: v for k, v in used.items() if v is not None}
    return view


def instance_profile_view(profile: InstanceProfile, roles: Sequence[Role]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "Path": profile.path,
        "InstanceProfileName": profile.name,
        "InstanceProfileId": profile.id,
        "Arn": instance_profile_arn(profile),
        "CreateDate": profile.created,
        "Roles": [role_view(r) for r in roles],
    }
    tags = tag_list(profile.tags)
    if tags:
        view["Tags"] = tags
    return view
