"""IAM policies: inline user, group and role policies, customer managed policies and attachments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from mallee.core import clock, ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.core.policy import parse_policy
from mallee.services.clc.apis import IAM
from mallee.services.clc.iam import store
from mallee.services.clc.iam.managed import AWS_MANAGED
from mallee.services.clc.iam.views import account_of, encoded_document
from mallee.services.clc.paging import marker_page
from mallee.services.clc.tables import Group, InlinePolicy, ManagedPolicy, PolicyAttachment, Role, User

# IAM's size quotas, in characters without white space.
INLINE_MAX = {"user": 2048, "group": 5120, "role": 10240}
MANAGED_MAX = 6144

_OWNERS: dict[str, Callable[[Session, str, str], User | Group | Role]] = {
    "user": store.get_user,
    "group": store.get_group,
    "role": store.get_role,
}


def _owner_id(ctx: RequestContext, kind: str, name: str) -> str:
    return _OWNERS[kind](ctx.session, account_of(ctx), name).id


# -- inline --------------------------------------------------------------------------------------


def _put_inline(ctx: RequestContext, kind: str, owner: str, name: str, document: str) -> None:
    parse_policy(document, max_size=INLINE_MAX[kind])
    s = ctx.session
    owner_id = _owner_id(ctx, kind, owner)
    q = select(InlinePolicy).where(
        InlinePolicy.owner_kind == kind, InlinePolicy.owner_id == owner_id, InlinePolicy.name == name
    )
    existing = s.scalar(q)
    if existing:
        existing.document = document
    else:
        s.add(InlinePolicy(owner_kind=kind, owner_id=owner_id, name=name, document=document))


def _get_inline(ctx: RequestContext, kind: str, owner: str, name: str) -> InlinePolicy:
    owner_id = _owner_id(ctx, kind, owner)
    q = select(InlinePolicy).where(
        InlinePolicy.owner_kind == kind, InlinePolicy.owner_id == owner_id, InlinePolicy.name == name
    )
    found: InlinePolicy | None = ctx.session.scalar(q)
    if found is None:
        raise CloudError("NoSuchEntity", f"The {kind} policy with name {name} cannot be found.")
    return found


def _list_inline(ctx: RequestContext, kind: str, owner: str, p: dict[str, Any]) -> dict[str, Any]:
    owner_id = _owner_id(ctx, kind, owner)
    q = select(InlinePolicy.name).where(InlinePolicy.owner_kind == kind, InlinePolicy.owner_id == owner_id)
    names = list(ctx.session.scalars(q.order_by(InlinePolicy.name)))
    return marker_page("PolicyNames", names, p)


@IAM.operation()
def put_user_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    _put_inline(ctx, "user", p["UserName"], p["PolicyName"], p["PolicyDocument"])
    return None


@IAM.operation()
def get_user_policy(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    found = _get_inline(ctx, "user", p["UserName"], p["PolicyName"])
    return {
        "UserName": p["UserName"],
        "PolicyName": found.name,
        "PolicyDocument": encoded_document(found.document),
    }


@IAM.operation()
def list_user_policies(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    return _list_inline(ctx, "user", p["UserName"], p)


@IAM.operation()
def delete_user_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    ctx.session.delete(_get_inline(ctx, "user", p["UserName"], p["PolicyName"]))
    return None


@IAM.operation()
def put_group_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    _put_inline(ctx, "group", p["GroupName"], p["PolicyName"], p["PolicyDocument"])
    return None


@IAM.operation()
def get_group_policy(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    found = _get_inline(ctx, "group", p["GroupName"], p["PolicyName"])
    return {
        "GroupName": p["GroupName"],
        "PolicyName": found.name,
        "PolicyDocument": encoded_document(found.document),
    }


@IAM.operation()
def list_group_policies(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    return _list_inline(ctx, "group", p["GroupName"], p)


@IAM.operation()
def delete_group_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    ctx.session.delete(_get_inline(ctx, "group", p["GroupName"], p["PolicyName"]))
    return None


@IAM.operation()
def put_role_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    _put_inline(ctx, "role", p["RoleName"], p["PolicyName"], p["PolicyDocument"])
    return None


@IAM.operation()
def get_role_policy(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    found = _get_inline(ctx, "role", p["RoleName"], p["PolicyName"])
    return {
        "RoleName": p["RoleName"],
        "PolicyName": found.name,
        "PolicyDocument": encoded_document(found.document),
    }


@IAM.operation()
def list_role_policies(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    return _list_inline(ctx, "role", p["RoleName"], p)


@IAM.operation()
def delete_role_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    ctx.session.delete(_get_inline(ctx, "role", p["RoleName"], p["PolicyName"]))
    return None


# -- managed -------------------------------------------------------------------------------------


def _arn(policy: ManagedPolicy) -> str:
    return f"arn:aws:iam::{policy.account_id}:policy{policy.path}{policy.name}"


def _attachments(ctx: RequestContext, arn: str) -> int:
    q = select(func.count()).select_from(PolicyAttachment).where(PolicyAttachment.policy_arn == arn)
    return int(ctx.session.scalar(q) or 0)


def _managed_view(ctx: RequestContext, policy: ManagedPolicy) -> dict[str, Any]:
    arn = _arn(policy)
    view: dict[str, Any] = {
        "PolicyName": policy.name,
        "PolicyId": policy.id,
        "Arn": arn,
        "Path": policy.path,
        "DefaultVersionId": "v1",
        "AttachmentCount": _attachments(ctx, arn),
        "IsAttachable": True,
        "CreateDate": policy.created,
        "UpdateDate": policy.updated,
    }
    if policy.description:
        view["Description"] = policy.description
    return view


def _aws_view(ctx: RequestContext, arn: str) -> dict[str, Any]:
    policy = AWS_MANAGED[arn]
    epoch = clock.now().replace(year=2015, month=2, day=6, hour=18, minute=40, second=0, microsecond=0)
    return {
        "PolicyName": policy.name,
        "PolicyId": "ANPA" + policy.name.upper()[:17].ljust(17, "X"),
        "Arn": arn,
        "Path": "/",
        "DefaultVersionId": "v1",
        "AttachmentCount": _attachments(ctx, arn),
        "IsAttachable": True,
        "Description": policy.description,
        "CreateDate": epoch,
        "UpdateDate": epoch,
    }


def _visible_policy(ctx: RequestContext, arn: str) -> ManagedPolicy | None:
    """None for an AWS managed policy; the record for one of the caller's; NoSuchEntity otherwise."""
    if arn in AWS_MANAGED:
        return None
    policy = store.find_managed_policy(ctx.session, arn)
    if policy is None or policy.account_id != account_of(ctx):
        raise CloudError("NoSuchEntity", f"Policy {arn} does not exist or is not attachable.")
    return policy


@IAM.operation()
def create_policy(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s, account_id = ctx.session, account_of(ctx)
    parse_policy(p["PolicyDocument"], max_size=MANAGED_MAX)
    path = p.get("Path", "/")
    name = p["PolicyName"]
    store.claim_name(s, ManagedPolicy, name, f"A policy called {name} already exists.", account_id=account_id)
    now = clock.now()
    policy = ManagedPolicy(
        id=ids.unique_id("ANPA"),
        account_id=account_id,
        name=p["PolicyName"],
        path=path,
        description=p.get("Description", ""),
        document=p["PolicyDocument"],
        created=now,
        updated=now,
    )
    s.add(policy)
    s.flush()
    return {"Policy": _managed_view(ctx, policy)}


@IAM.operation()
def get_policy(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    policy = _visible_policy(ctx, p["PolicyArn"])
    return {"Policy": _aws_view(ctx, p["PolicyArn"]) if policy is None else _managed_view(ctx, policy)}


@IAM.operation()
def get_policy_version(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    arn = p["PolicyArn"]
    policy = _visible_policy(ctx, arn)
    if p["VersionId"] != "v1":
        raise CloudError("NoSuchEntity", f"Policy {arn} version {p['VersionId']} does not exist.")
    document = AWS_MANAGED[arn].document if policy is None else policy.document
    created = _aws_view(ctx, arn)["CreateDate"] if policy is None else policy.created
    return {
        "PolicyVersion": {
            "Document": encoded_document(document),
            "VersionId": "v1",
            "IsDefaultVersion": True,
            "CreateDate": created,
        }
    }


@IAM.operation()
def list_policies(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    scope = p.get("Scope", "All")
    views: list[dict[str, Any]] = []
    if scope in ("All", "AWS"):
        views += [_aws_view(ctx, arn) for arn in sorted(AWS_MANAGED)]
    if scope in ("All", "Local"):
        q = (
            select(ManagedPolicy)
            .where(ManagedPolicy.account_id == account_of(ctx))
            .order_by(ManagedPolicy.name)
        )
        views += [_managed_view(ctx, pol) for pol in ctx.session.scalars(q)]
    if p.get("OnlyAttached"):
        views = [v for v in views if v["AttachmentCount"] > 0]
    prefix = p.get("PathPrefix", "/")
    views = [v for v in views if v["Path"].startswith(prefix)]
    return marker_page("Policies", views, p)


@IAM.operation()
def delete_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    policy = _visible_policy(ctx, p["PolicyArn"])
    if policy is None:
        raise CloudError("AccessDenied", "AWS managed policies cannot be deleted.")
    if _attachments(ctx, p["PolicyArn"]):
        raise CloudError("DeleteConflict", "Cannot delete a policy attached to entities.")
    ctx.session.delete(policy)
    return None


def _attach(ctx: RequestContext, kind: str, owner: str, arn: str) -> None:
    _visible_policy(ctx, arn)
    owner_id = _owner_id(ctx, kind, owner)
    if ctx.session.get(PolicyAttachment, (kind, owner_id, arn)) is None:
        ctx.session.add(PolicyAttachment(owner_kind=kind, owner_id=owner_id, policy_arn=arn))


def _detach(ctx: RequestContext, kind: str, owner: str, arn: str) -> None:
    owner_id = _owner_id(ctx, kind, owner)
    result = ctx.session.execute(
        delete(PolicyAttachment).where(
            PolicyAttachment.owner_kind == kind,
            PolicyAttachment.owner_id == owner_id,
            PolicyAttachment.policy_arn == arn,
        )
    )
    if result.rowcount == 0:
        raise CloudError("NoSuchEntity", f"Policy {arn} was not found attached to {owner}.")


def _list_attached(ctx: RequestContext, kind: str, owner: str, p: dict[str, Any]) -> dict[str, Any]:
    owner_id = _owner_id(ctx, kind, owner)
    q = select(PolicyAttachment.policy_arn).where(
        PolicyAttachment.owner_kind == kind, PolicyAttachment.owner_id == owner_id
    )
    arns = sorted(ctx.session.scalars(q))
    prefix = p.get("PathPrefix", "/")
    # A policy's path is its ARN's between ":policy" and its name.
    arns = [arn for arn in arns if (arn.split(":policy", 1)[1].rsplit("/", 1)[0] + "/").startswith(prefix)]
    attached = [{"PolicyName": arn.rsplit("/", 1)[-1], "PolicyArn": arn} for arn in arns]
    return marker_page("AttachedPolicies", attached, p)


@IAM.operation()
def attach_user_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    _attach(ctx, "user", p["UserName"], p["PolicyArn"])
    return None


@IAM.operation()
def detach_user_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    _detach(ctx, "user", p["UserName"], p["PolicyArn"])
    return None


@IAM.operation()
def list_attached_user_policies(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    return _list_attached(ctx, "user", p["UserName"], p)


@IAM.operation()
def attach_group_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    _attach(ctx, "group", p["GroupName"], p["PolicyArn"])
    return None


@IAM.operation()
def detach_group_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    _detach(ctx, "group", p["GroupName"], p["PolicyArn"])
    return None


@IAM.operation()
def list_attached_group_policies(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    return _list_attached(ctx, "group", p["GroupName"], p)


@IAM.operation()
def attach_role_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    _attach(ctx, "role", p["RoleName"], p["PolicyArn"])
    return None


@IAM.operation()
def detach_role_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    _detach(ctx, "role", p["RoleName"], p["PolicyArn"])
    return None


@IAM.operation()
def list_attached_role_policies(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    return _list_attached(ctx, "role", p["RoleName"], p)
