"""The CLC's side of the gateway's identity port: whose key is this, and may they do that?

Key look-ups are cached for a moment per process (every API call needs one); IAM changes made through
this process clear the cache at once, so revoking a key or a policy takes effect on the next request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from mallee.core import clock
from mallee.core import policy as iam_policy
from mallee.core.context import Principal, RequestContext
from mallee.core.errors import CloudError
from mallee.db.session import Database
from mallee.protocol.auth import AuthError
from mallee.protocol.dispatch import Operation
from mallee.protocol.gateway import Credential
from mallee.rpc.cloud import KeyIdentity
from mallee.services.clc.iam import store
from mallee.services.clc.tables import AccessKey, Account, Role, User

CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class _Resolved:
    credential: Credential
    documents: tuple[str, ...]  # the IAM policy documents that apply (none for root identities)
    policies: tuple[iam_policy.Policy, ...]
    # A role session's session policies, which narrow `policies` (None: it was given none).
    session_documents: tuple[str, ...] | None
    session_policies: tuple[iam_policy.Policy, ...] | None
    expires: float  # monotonic time the cache entry dies
    token_expires: float | None  # wall-clock epoch seconds, for temporary credentials


class Identity:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, _Resolved] = {}
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

    def resolve(self, access_key_id: str, session_token: str | None) -> Credential:
        return self._lookup(access_key_id, session_token).credential

    def describe_key(self, access_key_id: str, session_token: str | None) -> KeyIdentity:
        """What another component needs to authenticate and authorize this key's requests."""
        entry = self._lookup(access_key_id, session_token)
        return KeyIdentity(
            principal=entry.credential.principal,
            secret_key=entry.credential.secret_key,
            policies=list(entry.documents),
            session_policies=None if entry.session_documents is None else list(entry.session_documents),
            token_expires=entry.token_expires,
        )

    def _lookup(self, access_key_id: str, session_token: str | None) -> _Resolved:
        entry = self._cache.get(access_key_id)
        if entry is None or entry.expires < time.monotonic():
            with self.db.session() as s:
                entry = self._load(s, access_key_id)
            with self._lock:
                self._cache[access_key_id] = entry
        if entry.token_expires is not None or session_token is not None:
            if entry.credential.principal.session_token != session_token:
                raise AuthError("invalid-token", "The security token included in the request is invalid.")
            if entry.token_expires is not None and entry.token_expires <= clock.now().timestamp():
                raise AuthError("expired-token", "The security token included in the request is expired")
        return entry

    def _load(self, s: Session, access_key_id: str) -> _Resolved:
        key = s.get(AccessKey, access_key_id)
        if key is None:
            raise AuthError("unknown-key", "The security token included in the request is invalid.")
        if not key.active:
            raise AuthError("inactive-key", "The security token included in the request is invalid.")
        account = s.get(Account, key.account_id)
        assert account is not None  # foreign key
        user = s.get(User, key.user_id) if key.user_id else None
        role = s.get(Role, key.role_id) if key.role_id else None
        user_id = account.id  # the root identity's
        if user is not None:
            user_id = user.id
        elif role is not None:
            user_id = f"{role.id}:{key.role_session_name}"  # AWS's AssumedRoleId
        principal = Principal(
            account_id=account.id,
            account_name=account.name,
            access_key_id=key.id,
            user_id=user_id,
            user_name=user.name if user else None,
            is_system_admin=account.is_system,
            session_token=key.session_token,
            role_name=role.name if role else None,
            role_path=role.path if role else "/",
            role_session_name=key.role_session_name,
        )
        docs, session_docs = store.key_policy_documents(s, key)
        return _Resolved(
            credential=Credential(principal, key.secret),
            documents=tuple(docs),
            policies=tuple(iam_policy.parse_policy_cached(d) for d in docs),
            session_documents=None if session_docs is None else tuple(session_docs),
            session_policies=(
                None
                if session_docs is None
                else tuple(iam_policy.parse_policy_cached(d) for d in session_docs)
            ),
            expires=time.monotonic() + CACHE_SECONDS,
            token_expires=key.expires.timestamp() if key.expires else None,
        )

    # -- authorization --------------------------------------------------------------------------

    def authorize(self, ctx: RequestContext, operation: Operation) -> None:
        principal = ctx.principal
        if principal is None:
            raise CloudError("AccessDenied", "Access Denied")
        ctx.account_id = principal.account_id
        delegate = _delegate_account(ctx)
        if operation.access == "any":
            return
        if principal.session_token and principal.role_name is None and ctx.service == "iam":
            # AWS: credentials from GetSessionToken cannot call IAM unless MFA was used (a role
            # session can, as its role's policies allow).
            raise _denied(ctx, principal, "temporary credentials cannot call IAM")
        if operation.access == "system" and not principal.is_system_admin:
            raise _denied(ctx, principal, "only the cloud administrator may do this")
        if not principal.is_root:
            entry = self._lookup(principal.access_key_id, principal.session_token)
            action = f"{ctx.service}:{operation.name}"
            resource = _resource(ctx, principal.account_id)
            decision = iam_policy.evaluate_session(
                entry.policies, entry.session_policies, action, resource, condition_context(ctx, principal)
            )
            if decision is not iam_policy.Decision.ALLOW:
                raise _denied(ctx, principal)
        if delegate is not None:
            if not principal.is_system_admin:
                raise _denied(ctx, principal, "only the cloud administrator may use DelegateAccount")
            with self.db.session() as s:
                ctx.account_id = store.find_account(s, delegate).id


def _delegate_account(ctx: RequestContext) -> str | None:
    for key, value in ctx.request.form_params():
        if key == "DelegateAccount" and value:
            return value
    return None


def _resource(ctx: RequestContext, account_id: str) -> str:
    """The ARN an operation acts on, where the request names one; `*` otherwise."""
    if ctx.service == "iam":
        if "UserName" in ctx.params:
            return f"arn:aws:iam::{account_id}:user/{ctx.params['UserName']}"
        if "GroupName" in ctx.params:
            return f"arn:aws:iam::{account_id}:group/{ctx.params['GroupName']}"
        if "InstanceProfileName" in ctx.params:  # before RoleName: AddRoleToInstanceProfile acts on it
            return f"arn:aws:iam::{account_id}:instance-profile/{ctx.params['InstanceProfileName']}"
        if "RoleName" in ctx.params:
            return f"arn:aws:iam::{account_id}:role/{ctx.params['RoleName']}"
        if "PolicyArn" in ctx.params:
            return str(ctx.params["PolicyArn"])
    return "*"


def caller_decision(
    s: Session, principal: Principal, action: str, resource: str, context: Mapping[str, str | Sequence[str]]
) -> iam_policy.Decision:
    """What the caller's own policies (and a session's session policies) say about `action` on
    `resource`, read in the request's session: for what an operation checks beyond its own action
    (iam:PassRole when RunInstances passes a role, sts:AssumeRole). A root identity may do
    anything its account may."""
    if principal.is_root:
        return iam_policy.Decision.ALLOW
    key = s.get(AccessKey, principal.access_key_id)
    assert key is not None  # it signed this request
    docs, session_docs = store.key_policy_documents(s, key)
    return iam_policy.evaluate_session(
        [iam_policy.parse_policy_cached(d) for d in docs],
        None if session_docs is None else [iam_policy.parse_policy_cached(d) for d in session_docs],
        action,
        resource,
        context,
    )


def caller_session_policies(s: Session, principal: Principal) -> list[iam_policy.Policy] | None:
    """A role session's session policies, read in the request's session (None: it was given none,
    or the caller is no role session): they bound what a resource policy naming its role grants."""
    if principal.role_name is None:
        return None
    key = s.get(AccessKey, principal.access_key_id)
    assert key is not None  # it signed this request
    docs = store.session_policy_documents(s, key)
    return None if docs is None else [iam_policy.parse_policy_cached(d) for d in docs]


def condition_context(ctx: RequestContext, principal: Principal) -> dict[str, str | list[str]]:
    """The global condition keys of a signed request (a role session's aws:PrincipalArn is its
    role's ARN, as on AWS)."""
    values: dict[str, str | list[str]] = {
        **({"aws:username": principal.user_name} if principal.user_name else {}),
        "aws:userid": principal.user_id,
        "aws:principalaccount": principal.account_id,
        "aws:principalarn": principal.principal_arn,
        "aws:currenttime": clock.iso8601(clock.now()),
        "aws:epochtime": str(int(clock.now().timestamp())),
        "aws:securetransport": "false",
        "aws:requestedregion": ctx.region,
    }
    if ctx.request.remote_addr:
        values["aws:sourceip"] = ctx.request.remote_addr
    return values


def _denied(ctx: RequestContext, principal: Principal, why: str = "") -> CloudError:
    action = f"{ctx.service}:{ctx.operation}"
    if ctx.service == "ec2":
        return CloudError("UnauthorizedOperation", "You are not authorized to perform this operation.")
    resource = _resource(ctx, principal.account_id)
    message = f"User: {principal.arn} is not authorized to perform: {action} on resource: {resource}"
    if why:
        message += f" ({why})"
    return CloudError("AccessDenied", message)
