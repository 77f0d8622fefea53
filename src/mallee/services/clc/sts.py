"""STS: GetCallerIdentity, GetSessionToken (temporary keys the front door verifies and expires) and
AssumeRole (role sessions: temporary keys that act as a role, narrowed by session policies)."""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core import policy as iam_policy
from mallee.core.context import Principal, RequestContext
from mallee.core.errors import CloudError
from mallee.core.policy import Decision
from mallee.services.clc.apis import STS
from mallee.services.clc.ec2.resources import unsupported
from mallee.services.clc.iam import store
from mallee.services.clc.iam.identity import caller_decision, caller_session_policies, condition_context
from mallee.services.clc.iam.managed import AWS_MANAGED
from mallee.services.clc.iam.roles import trust_policy
from mallee.services.clc.tables import AccessKey, Role

DEFAULT_SESSION = 43200  # seconds; AWS's default for GetSessionToken
ROOT_MAX_SESSION = 3600  # AWS caps the root identity's sessions at one hour
ROLE_SESSION = 3600  # AssumeRole's default DurationSeconds
CHAINED_MAX_SESSION = 3600  # a role session assuming a role ("role chaining") gets at most an hour
# The plaintext of a session's inline and managed session policies together (AWS: 2,048 characters).
SESSION_POLICY_MAX = 2048
ASSUME_ROLE = "sts:AssumeRole"

# arn:aws:iam::<account>:role<path><name>, the path "/" or "/a/b/".
_ROLE_ARN = re.compile(r"arn:aws:iam::(\d{12}):role(/(?:[\x21-\x7e]*/)?)([\w+=,.@-]+)")


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
    return {"Credentials": _credentials(key)}


# AssumeRole authorizes itself (access="any"): the decision needs the role's trust policy as well
# as the caller's policies, and in the role's own account a trust policy naming the caller is
# enough on its own.
@STS.operation(access="any")
def assume_role(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    principal = ctx.principal
    assert principal is not None
    # AWS refuses the root user whatever the trust policy says ("You cannot use AWS account root
    # user credentials to call this operation":
    # https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html).
    if principal.is_root:
        raise CloudError("AccessDenied", "Roles may not be assumed by root accounts.")
    unsupported(
        p, "Tags", "TransitiveTagKeys", "SerialNumber", "TokenCode", "SourceIdentity", "ProvidedContexts"
    )
    s: Session = ctx.session
    role_arn, session_name = p["RoleArn"], p["RoleSessionName"]
    role = _find_role(s, role_arn)
    context: dict[str, str | list[str]] = {
        **condition_context(ctx, principal),
        "sts:rolesessionname": session_name,
    }
    if "ExternalId" in p:
        context["sts:externalid"] = p["ExternalId"]
    # A missing role is refused like a forbidden one, as AWS does: no one learns which roles exist.
    if role is None or not may_assume(
        trust_policy(role.trust_policy),
        principal,
        caller_decision(s, principal, ASSUME_ROLE, role_arn, context),
        role.account_id,
        role_arn,
        context,
        session_policies=caller_session_policies(s, principal),
    ):
        raise CloudError(
            "AccessDenied",
            f"User: {principal.arn} is not authorized to perform: {ASSUME_ROLE} on resource: {role_arn}",
        )
    seconds = p.get("DurationSeconds", ROLE_SESSION)  # the model bounds it to 900..43200
    if principal.role_name is not None and seconds > CHAINED_MAX_SESSION:
        raise CloudError(
            "ValidationError",
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by "
            "role chaining.",
        )
    if seconds > role.max_session_duration:
        raise CloudError(
            "ValidationError",
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        )
    policy = p.get("Policy")
    arns = [d["arn"] for d in p.get("PolicyArns", []) if d.get("arn")]
    packed = _packed_size(policy, arns)
    if policy is not None:
        iam_policy.parse_policy(policy, max_size=SESSION_POLICY_MAX)  # MalformedPolicyDocument
    for arn in arns:
        found = store.find_managed_policy(s, arn)
        if arn not in AWS_MANAGED and (found is None or found.account_id != role.account_id):
            raise CloudError("ValidationError", f"Policy {arn} does not exist or is not attachable.")
    key = store.create_session_credentials(
        s,
        role.account_id,
        None,
        _dt.timedelta(seconds=seconds),
        role=role,
        session_name=session_name,
        session_policy=policy,
        session_policy_arns=arns or None,
        region=ctx.region,
    )
    answer: dict[str, Any] = {
        "Credentials": _credentials(key),
        "AssumedRoleUser": {
            "AssumedRoleId": f"{role.id}:{session_name}",
            "Arn": f"arn:aws:sts::{role.account_id}:assumed-role/{role.name}/{session_name}",
        },
    }
    if policy is not None or arns:
        answer["PackedPolicySize"] = packed
    return answer


def may_assume(
    trust: iam_policy.Policy,
    caller: Principal,
    caller_decision: Decision,
    role_account: str,
    role_arn: str,
    context: Mapping[str, str | Sequence[str]],
    *,
    session_policies: Sequence[iam_policy.Policy] | None = None,
) -> bool:
    """AWS's rule for AssumeRole ("Cross account resource access", IAM User Guide): the role's
    trust policy must allow the caller (naming it, its role, its account or "*"), and so must the
    caller's own policies (`caller_decision`) — except in the role's own account when the trust
    policy names the caller itself, as a resource policy may there. A role session's
    `session_policies` bound what a trust policy naming its role grants (not one naming the
    session). An explicit Deny refuses."""

    def trusts(by_account: bool) -> Decision:
        return iam_policy.evaluate(
            [trust],
            ASSUME_ROLE,
            role_arn,
            context,
            principal_arn=caller.arn,
            principal_account=caller.account_id,
            role_arn=caller.role_arn,
            session_policies=session_policies,
            by_account=by_account,
        )

    trusted = trusts(by_account=True)
    if Decision.DENY in (trusted, caller_decision) or trusted is not Decision.ALLOW:
        return False
    if caller_decision is Decision.ALLOW:
        return True
    return caller.account_id == role_account and trusts(by_account=False) is Decision.ALLOW


def _find_role(s: Session, arn: str) -> Role | None:
    m = _ROLE_ARN.fullmatch(arn)
    if m is None:
        raise CloudError("ValidationError", f"{arn} is invalid")
    account_id, path, name = m.groups()
    role: Role | None = s.scalar(
        select(Role).where(Role.account_id == account_id, Role.name == name, Role.path == path)
    )
    return role


def _packed_size(policy: str | None, arns: list[str]) -> int:
    """PackedPolicySize: the session policies' share (per cent) of what a session may carry;
    PackedPolicyTooLarge past it."""
    plain = sum(1 for char in policy or "" if not char.isspace()) + sum(len(arn) for arn in arns)
    percent = math.ceil(plain * 100 / SESSION_POLICY_MAX)
    if percent > 100:
        raise CloudError(
            "PackedPolicyTooLarge",
            f"Packed policy consumes {percent}% of allotted space, please use smaller policy for request.",
        )
    return percent


def _credentials(key: AccessKey) -> dict[str, Any]:
    return {
        "AccessKeyId": key.id,
        "SecretAccessKey": key.secret,
        "SessionToken": key.session_token,
        "Expiration": key.expires,
    }
