"""IAM roles: Create/Get/List/Update/DeleteRole, their trust policies and tags.

A role's permissions are inline policies and managed-policy attachments (policies.py, owner kind
"role"); its trust policy and MaxSessionDuration govern STS AssumeRole (services/clc/sts.py).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from sqlalchemy import exists, select

from mallee.core import clock, ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.core.policy import Policy, parse_resource_policy
from mallee.core.policy_conditions import malformed
from mallee.services.clc.apis import IAM
from mallee.services.clc.ec2.resources import unsupported
from mallee.services.clc.iam import store
from mallee.services.clc.iam.views import account_of, role_view, tag_list
from mallee.services.clc.paging import marker_page
from mallee.services.clc.tables import InlinePolicy, InstanceProfile, PolicyAttachment, Role

# IAM's default quota for a trust policy (ACLSizePerRole), in characters without white space.
TRUST_POLICY_MAX = 2048


@IAM.operation()
def create_role(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    unsupported(p, "PermissionsBoundary", "MaxSigninSessionDuration")
    s, account_id = ctx.session, account_of(ctx)
    name = p["RoleName"]
    check_trust_policy(p["AssumeRolePolicyDocument"])
    tags = store.tagged("[]", p.get("Tags", []))
    store.claim_name(s, Role, name, f"Role with name {name} already exists.", account_id=account_id)
    role = Role(
        id=ids.unique_id("AROA"),
        account_id=account_id,
        name=name,
        path=p.get("Path", "/"),
        description=p.get("Description", ""),
        trust_policy=p["AssumeRolePolicyDocument"],
        # The model bounds it to 3600..43200; the parser answers ValidationError outside.
        max_session_duration=p.get("MaxSessionDuration", 3600),
        created=clock.now(),
        tags=tags,
    )
    s.add(role)
    s.flush()
    return {"Role": role_view(role)}


@IAM.operation()
def get_role(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    role = store.get_role(ctx.session, account_of(ctx), p["RoleName"])
    return {"Role": role_view(role, with_last_used=True)}


@IAM.operation()
def list_roles(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s, account_id = ctx.session, account_of(ctx)
    prefix = p.get("PathPrefix", "/")
    roles = [
        r
        for r in s.scalars(select(Role).where(Role.account_id == account_id).order_by(Role.name))
        if r.path.startswith(prefix)
    ]
    return marker_page("Roles", [role_view(r, with_tags=False) for r in roles], p)


@IAM.operation()
def update_role(ctx: RequestContext, p: dict[str, Any]) -> None:
    unsupported(p, "MaxSigninSessionDuration", "ResetMaxSigninSessionDuration")
    role = store.get_role(ctx.session, account_of(ctx), p["RoleName"])
    if "Description" in p:
        role.description = p["Description"]
    if "MaxSessionDuration" in p:
        role.max_session_duration = p["MaxSessionDuration"]
    return None


@IAM.operation()
def update_role_description(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    role = store.get_role(ctx.session, account_of(ctx), p["RoleName"])
    role.description = p["Description"]
    return {"Role": role_view(role)}


@IAM.operation()
def update_assume_role_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    role = store.get_role(ctx.session, account_of(ctx), p["RoleName"])
    check_trust_policy(p["PolicyDocument"])
    role.trust_policy = p["PolicyDocument"]
    return None


@IAM.operation()
def delete_role(ctx: RequestContext, p: dict[str, Any]) -> None:
    s = ctx.session
    role = store.get_role(s, account_of(ctx), p["RoleName"])
    # As AWS: refused while anything still refers to the role; the error says what to remove first.
    for what, query in (
        ("roles from instance profile", exists().where(InstanceProfile.role_id == role.id)),
        (
            "inline policies",
            exists().where(InlinePolicy.owner_kind == "role", InlinePolicy.owner_id == role.id),
        ),
        (
            "attached policies",
            exists().where(PolicyAttachment.owner_kind == "role", PolicyAttachment.owner_id == role.id),
        ),
    ):
        if s.scalar(select(query)):
            raise CloudError("DeleteConflict", f"Cannot delete entity, must remove {what} first.")
    s.delete(role)
    return None


@IAM.operation()
def tag_role(ctx: RequestContext, p: dict[str, Any]) -> None:
    role = store.get_role(ctx.session, account_of(ctx), p["RoleName"])
    role.tags = store.tagged(role.tags, p["Tags"])
    return None


@IAM.operation()
def untag_role(ctx: RequestContext, p: dict[str, Any]) -> None:
    role = store.get_role(ctx.session, account_of(ctx), p["RoleName"])
    role.tags = store.untagged(role.tags, p["TagKeys"])
    return None


@IAM.operation()
def list_role_tags(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    role = store.get_role(ctx.session, account_of(ctx), p["RoleName"])
    return marker_page("Tags", tag_list(role.tags), p)


@functools.lru_cache(maxsize=256)
def trust_policy(document: str) -> Policy:
    """A stored trust policy, parsed (memoised per text) for AssumeRole to evaluate: its statements
    apply to the role itself (Resource "*")."""
    return check_trust_policy(document)


def check_trust_policy(document: str) -> Policy:
    """Refuse (MalformedPolicyDocument) a trust policy IAM would refuse: one the policy parser
    refuses as a resource policy (it must name a Principal), one that names a Resource, or one
    with actions outside STS's. Answers the policy as parsed."""
    if sum(1 for char in document if not char.isspace()) > TRUST_POLICY_MAX:
        raise malformed(f"Cannot exceed quota for ACLSizePerRole: {TRUST_POLICY_MAX}")
    try:
        root = json.loads(document)
        statements = root.get("Statement") if isinstance(root, dict) else None
        statements = statements if isinstance(statements, list) else [statements]
        for statement in statements:
            if isinstance(statement, dict):
                if "Resource" in statement or "NotResource" in statement:
                    raise malformed("Has prohibited field Resource.")
                # The role itself is the resource: the parser's grammar for resource policies wants one.
                statement["Resource"] = "*"
        with_resources = json.dumps(root)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python recurses
        raise malformed() from None
    parsed = parse_resource_policy(with_resources, max_size=2**31)  # its size was checked above, as given
    for statement in statements:  # the parser checked the grammar: Action is a string or strings
        actions = statement.get("Action", [])
        if "NotAction" in statement or not all(
            a.lower().startswith("sts:") for a in ([actions] if isinstance(actions, str) else actions)
        ):
            raise malformed("AssumeRole policy may only specify STS AssumeRole actions.")
    return parsed
