"""IAM policy documents: validation (as PutUserPolicy does it) and evaluation (as AWS documents it).

`parse_policy` turns an identity-policy JSON document into an immutable `Policy`, raising
CloudError("MalformedPolicyDocument", ...) with AWS's messages for anything IAM would refuse.
`parse_resource_policy` does the same for resource policies (S3 bucket policies), which must name
a Principal. `evaluate` applies AWS's "Policy evaluation logic" for a single account:

1. a matching Deny statement in any policy wins (explicit deny);
2. otherwise a matching Allow statement allows;
3. otherwise the request is implicitly denied.

A statement matches when its Action (or NotAction), Resource (or NotResource), Principal (resource
policies only) and every condition match. Action names compare case-insensitively; resources
compare case-sensitively, and a `*` in either spans any characters including ':' and '/'.

A role session's session policies bound what it may do (`evaluate_session` for its identity
policies; `evaluate(..., session_policies=...)` for a resource policy, where a grant naming the role
is bounded and one naming the session itself is not).

Pure Python, no I/O; parsed policies are cached per document text by `parse_policy_cached`.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from mallee.core.policy_conditions import (
    Condition,
    RequestContext,
    Template,
    conditions_match,
    malformed,
    parse_conditions,
)

__all__ = [
    "Decision",
    "Policy",
    "Principal",
    "Statement",
    "evaluate",
    "evaluate_session",
    "parse_policy",
    "parse_policy_cached",
    "parse_resource_policy",
]

VERSIONS = ("2012-10-17", "2008-10-17")
# A policy without a Version is a 2008-10-17 policy, where `${...}` is literal text, not a variable.
DEFAULT_VERSION = "2008-10-17"
VARIABLES_VERSION = "2012-10-17"

_TOP_ELEMENTS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_ELEMENTS = frozenset(
    {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
    | {"Principal", "NotPrincipal"}
)
_PRINCIPAL_KINDS = ("AWS", "Service", "Federated", "CanonicalUser")
_VENDOR = re.compile(r"[A-Za-z0-9*?.\-]+")
_ACCOUNT = re.compile(r"\d{12}")
_ROOT_ARN = re.compile(r"arn:[^:]+:iam::(\d{12}):root")

_NO_PRINCIPAL_ALLOWED = "Policy document should not specify a principal."
_PRINCIPAL_REQUIRED = "Missing required field Principal."
_NEEDS_ACTIONS = "Policy statement must contain actions."
_NEEDS_RESOURCES = "Policy statement must contain resources."
_NEEDS_VENDOR = "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc."
_ONE_COLON = "Actions/Condition can contain only one colon."
_DUPLICATE_SID = "Statement IDs (SID) in a single policy must be unique."
_BAD_PRINCIPAL = "Invalid principal in policy."


class Decision(enum.Enum):
    ALLOW = "Allow"
    DENY = "Deny"  # an explicit Deny statement matched
    IMPLICIT_DENY = "ImplicitDeny"  # nothing allowed the request


@dataclass(frozen=True)
class Principal:
    kind: str  # "*" (anyone), "AWS", "Service", "Federated" or "CanonicalUser"
    value: str  # for "AWS", bare account ids are stored as the account's root ARN


@dataclass(frozen=True)
class Statement:
    effect: str  # "Allow" | "Deny"
    actions: tuple[Template, ...]
    resources: tuple[Template, ...]
    conditions: tuple[Condition, ...] = ()
    not_action: bool = False
    not_resource: bool = False
    principals: tuple[Principal, ...] | None = None  # None in identity policies
    not_principal: bool = False
    sid: str | None = None


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]
    version: str = DEFAULT_VERSION
    id: str | None = None


# --- parsing ---


def parse_policy(document: str, *, max_size: int = 10240) -> Policy:
    """Validate and parse an identity policy (user, group or role inline policy, managed policy)."""
    return _parse(document, max_size, resource_policy=False)


def parse_resource_policy(document: str, *, max_size: int = 20480) -> Policy:
    """Validate and parse a resource policy (e.g. an S3 bucket policy): Principal is required."""
    return _parse(document, max_size, resource_policy=True)


@functools.lru_cache(maxsize=1024)
def parse_policy_cached(document: str) -> Policy:
    """parse_policy with the default size limit, memoised per document text (policies are immutable)."""
    return parse_policy(document)


def _parse(document: str, max_size: int, *, resource_policy: bool) -> Policy:
    if not isinstance(document, str):
        raise malformed()
    # IAM counts policy size without whitespace.
    if sum(1 for char in document if not char.isspace()) > max_size:
        raise malformed(f"Cannot exceed quota for PolicySize: {max_size}")
    root = _load_json(document)
    if not isinstance(root, dict) or not set(root) <= _TOP_ELEMENTS or "Statement" not in root:
        raise malformed()
    version = root.get("Version", DEFAULT_VERSION)
    policy_id = root.get("Id")
    if version not in VERSIONS or not isinstance(policy_id, str | None):
        raise malformed()
    raw_statements = root["Statement"]
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list) or not raw_statements:
        raise malformed()
    variables = version == VARIABLES_VERSION
    statements = tuple(_parse_statement(raw, variables, resource_policy) for raw in raw_statements)
    _check_sids_unique(statements)
    return Policy(statements, version, policy_id)


def _load_json(document: str) -> Any:
    def reject_constant(name: str) -> Any:  # NaN and Infinity are not JSON
        raise ValueError(name)

    try:
        return json.loads(document, parse_constant=reject_constant)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python recurses
        raise malformed() from None


def _parse_statement(raw: object, variables: bool, resource_policy: bool) -> Statement:
    if not isinstance(raw, dict) or not set(raw) <= _STATEMENT_ELEMENTS:
        raise malformed()
    principals, not_principal = _parse_principal_element(raw, resource_policy)
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise malformed()
    sid = raw.get("Sid")
    if not isinstance(sid, str | None):
        raise malformed()
    actions, not_action = _pick(raw, "Action", "NotAction", _NEEDS_ACTIONS)
    resources, not_resource = _pick(raw, "Resource", "NotResource", _NEEDS_RESOURCES)
    for action in actions:
        _check_action(action)
    for resource in resources:
        _check_resource(resource)
    return Statement(
        effect=effect,
        actions=tuple(Template.parse(a, variables=False, wildcards=True) for a in actions),
        resources=tuple(Template.parse(r, variables=variables, wildcards=True) for r in resources),
        conditions=parse_conditions(raw.get("Condition", {}), variables=variables),
        not_action=not_action,
        not_resource=not_resource,
        principals=principals,
        not_principal=not_principal,
        sid=sid,
    )


def _pick(raw: dict[str, Any], positive: str, negative: str, missing: str) -> tuple[list[str], bool]:
    """The values of Action/NotAction (or Resource/NotResource), and whether it was the Not form."""
    if positive in raw and negative in raw:
        raise malformed()
    name = positive if positive in raw else negative
    if name not in raw:
        raise malformed(missing)
    values = _strings(raw[name])
    if not values:
        raise malformed(missing)
    return values, name == negative


def _strings(value: object) -> list[str]:
    """A string-or-list-of-strings element, as a list."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise malformed()


def _check_action(action: str) -> None:
    if action == "*":
        return
    parts = action.split(":")
    if len(parts) == 1:
        raise malformed(_NEEDS_VENDOR)
    if len(parts) > 2:
        raise malformed(_ONE_COLON)
    if not _VENDOR.fullmatch(parts[0]):
        raise malformed(f"Vendor {parts[0]} is not valid")


def _check_resource(resource: str) -> None:
    if resource != "*" and not resource.startswith("arn:"):
        raise malformed(f'Resource {resource} must be in ARN format or "*".')


def _check_sids_unique(statements: Sequence[Statement]) -> None:
    sids = [statement.sid for statement in statements if statement.sid]
    if len(sids) != len(set(sids)):
        raise malformed(_DUPLICATE_SID)


def _parse_principal_element(
    raw: dict[str, Any], resource_policy: bool
) -> tuple[tuple[Principal, ...] | None, bool]:
    present = [name for name in ("Principal", "NotPrincipal") if name in raw]
    if not resource_policy:
        if present:
            raise malformed(_NO_PRINCIPAL_ALLOWED)
        return None, False
    if not present:
        raise malformed(_PRINCIPAL_REQUIRED)
    if len(present) > 1:
        raise malformed()
    return _parse_principals(raw[present[0]]), present[0] == "NotPrincipal"


def _parse_principals(value: object) -> tuple[Principal, ...]:
    if value == "*":
        return (Principal("*", "*"),)
    if not isinstance(value, dict) or not value or not set(value) <= set(_PRINCIPAL_KINDS):
        raise malformed(_BAD_PRINCIPAL)
    principals: list[Principal] = []
    for kind, names in value.items():
        for name in _strings(names):
            principals.append(Principal(kind, _normalise_principal(kind, name)))
    if not principals:
        raise malformed(_BAD_PRINCIPAL)
    return tuple(principals)


def _normalise_principal(kind: str, name: str) -> str:
    if kind != "AWS" or name == "*" or name.startswith("arn:"):
        return name
    if _ACCOUNT.fullmatch(name):
        return f"arn:aws:iam::{name}:root"
    raise malformed(_BAD_PRINCIPAL)


# --- evaluation ---


class _Named(enum.IntEnum):
    """How a statement's Principal names the caller (identity policies name no one: DIRECTLY)."""

    NOT = 0
    # Through the caller's role or account: for a role session, what its session policies allow.
    THROUGH = 1
    DIRECTLY = 2  # the caller's own ARN, or anyone ("*")


class _Caller(NamedTuple):
    arn: str | None  # the caller's own ARN (None: anonymous)
    role_arn: str | None  # a role session's role
    account: str | None  # None: naming the account does not name the caller (by_account=False)


def evaluate(
    policies: Iterable[Policy],
    action: str,
    resource: str,
    context: Mapping[str, str | Sequence[str]] | None = None,
    *,
    principal_arn: str | None = None,
    principal_account: str | None = None,
    role_arn: str | None = None,
    session_policies: Sequence[Policy] | None = None,
    by_account: bool = True,
) -> Decision:
    """Decide a request against identity or resource policies (explicit deny > allow > implicit deny).

    `context` holds the request's condition keys (any case) and the values policy variables draw on,
    e.g. {"aws:username": "alice", "aws:SourceIp": "10.0.0.1", "aws:TagKeys": ["a", "b"]}.
    `principal_arn`/`principal_account` describe the caller for resource policies' Principal;
    identity policies ignore them. Anonymous callers pass neither. A role session also passes its
    `role_arn` and its `session_policies` (None: it was given none). A Principal naming the role
    stands for its sessions, but grants a session only what its session policies also allow; one
    naming the session's own ARN (or anyone) grants without them; an explicit Deny in the session
    policies refuses ("Session policies", IAM User Guide:
    https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies.html#policies_session). A
    grant naming the caller's account is bounded like one naming its role. `by_account=False` asks
    whether a statement names the caller itself, not only its account (AssumeRole's rule for trust
    policies in the role's own account).
    """
    ctx = RequestContext(context)
    account = principal_account or _account_of(principal_arn)
    caller = _Caller(principal_arn, role_arn, account if by_account else None)
    allowed = _Named.NOT
    for policy in policies:
        for statement in policy.statements:
            named = _statement_applies(statement, action, resource, ctx, caller)
            if named is _Named.NOT:
                continue
            if statement.effect == "Deny":
                return Decision.DENY
            allowed = max(allowed, named)
    if allowed is _Named.NOT:
        return Decision.IMPLICIT_DENY
    if session_policies is None:
        return Decision.ALLOW
    bound = evaluate(session_policies, action, resource, context)
    if bound is Decision.DENY:
        return Decision.DENY
    return Decision.ALLOW if allowed is _Named.DIRECTLY else bound


def evaluate_session(
    policies: Iterable[Policy],
    session_policies: Sequence[Policy] | None,
    action: str,
    resource: str,
    context: Mapping[str, str | Sequence[str]] | None = None,
) -> Decision:
    """The identity-based decision for a caller whose credentials carry session policies (None:
    none were given): AWS allows only what both its policies and the session policies allow, and
    an explicit Deny in either refuses ("Session policies", IAM User Guide)."""
    decision = evaluate(policies, action, resource, context)
    if session_policies is None or decision is Decision.DENY:
        return decision
    bound = evaluate(session_policies, action, resource, context)
    if bound is not Decision.ALLOW:
        return bound
    return decision


def _statement_applies(
    statement: Statement, action: str, resource: str, ctx: RequestContext, caller: _Caller
) -> _Named:
    """How the statement names the caller when it applies to this request; NOT when it does not."""
    named = _principal_applies(statement, caller)
    if (
        named is not _Named.NOT
        and _any_match(statement.actions, action, ctx, ignore_case=True) != statement.not_action
        # An unresolvable policy variable makes its pattern match nothing; under NotResource that
        # means the resource is "not listed", so the statement applies.
        and _any_match(statement.resources, resource, ctx, ignore_case=False) != statement.not_resource
        and conditions_match(statement.conditions, ctx)
    ):
        return named
    return _Named.NOT


def _any_match(patterns: Sequence[Template], value: str, ctx: RequestContext, *, ignore_case: bool) -> bool:
    return any(pattern.matches(value, ctx, ignore_case=ignore_case) for pattern in patterns)


def _principal_applies(statement: Statement, caller: _Caller) -> _Named:
    if statement.principals is None:
        return _Named.DIRECTLY
    listed = max((_principal_matches(p, caller) for p in statement.principals), default=_Named.NOT)
    if statement.not_principal:
        return _Named.DIRECTLY if listed is _Named.NOT else _Named.NOT
    return listed


def _principal_matches(principal: Principal, caller: _Caller) -> _Named:
    if principal.kind == "*" or (principal.kind == "AWS" and principal.value == "*"):
        return _Named.DIRECTLY
    # A signed caller's ARN is an IAM/STS ARN, so a service name (ec2.amazonaws.com) never matches it.
    if caller.arn is not None and principal.value == caller.arn:
        return _Named.DIRECTLY
    if principal.kind != "AWS":
        return _Named.NOT
    if caller.role_arn is not None and principal.value == caller.role_arn:
        return _Named.THROUGH
    # An account's root ARN stands for every principal of that account.
    root = _ROOT_ARN.fullmatch(principal.value)
    if root is not None and caller.account == root.group(1):
        return _Named.THROUGH
    return _Named.NOT


def _account_of(arn: str | None) -> str | None:
    """The account field of an ARN (arn:partition:service:region:account:resource)."""
    parts = (arn or "").split(":", 5)
    return parts[4] if len(parts) == 6 and parts[4] else None
