"""IAM login profiles, a user's console password: Create/Get/Update/DeleteLoginProfile, and
ChangePassword, by which an IAM user changes its own (passwords.py hashes and checks them)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core import clock
from mallee.core import policy as iam_policy
from mallee.core.context import Principal, RequestContext
from mallee.core.errors import CloudError
from mallee.db.session import hold_write_lock
from mallee.services.clc.apis import IAM
from mallee.services.clc.ec2.resources import unsupported
from mallee.services.clc.iam import passwords, store
from mallee.services.clc.iam.identity import caller_decision, condition_context
from mallee.services.clc.iam.password_policy import PasswordPolicy, check_password
from mallee.services.clc.iam.views import account_of
from mallee.services.clc.tables import User

# What Mallee does not do of these operations (sign-in sessions through OAuth flows).
_UNSUPPORTED = ("MaxSigninSessionDuration", "ResetMaxSigninSessionDuration")


@IAM.operation()
def create_login_profile(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    unsupported(p, *_UNSUPPORTED)
    s = ctx.session
    user = _user_of(ctx, p)
    password = p.get("Password")
    if password is None:  # optional in the model only for AssumeRoot sessions, which Mallee has not
        raise CloudError(
            "ValidationError",
            "1 validation error detected: Value null at 'password' failed to satisfy constraint: "
            "Member must not be null",
        )
    if user.password_hash is not None:
        raise _exists(user)
    policy = _policy_check(s, account_of(ctx), password)
    hashed = passwords.hash_password(password)  # slow: before the lock
    _lock(s, user)
    if _current_hash(s, user) is not None:
        raise _exists(user)
    now = clock.now()
    _set_password(user, hashed, None, policy)
    user.password_created = now
    user.password_reset_required = bool(p.get("PasswordResetRequired"))
    return {"LoginProfile": _view(user)}


@IAM.operation()
def get_login_profile(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    user = _user_of(ctx, p)
    if user.password_hash is None:
        raise _no_profile(user)
    return {"LoginProfile": _view(user)}


@IAM.operation()
def update_login_profile(ctx: RequestContext, p: dict[str, Any]) -> None:
    unsupported(p, *_UNSUPPORTED)
    s = ctx.session
    user = _user_of(ctx, p)
    if user.password_hash is None:
        raise _no_profile(user)
    password = p.get("Password")
    hashed: str | None = None
    policy: PasswordPolicy | None = None
    if password is not None:
        # An administrator's reset: the policy's rules apply, not its reuse prevention (that is
        # for the user's own changes, ChangePassword).
        policy = _policy_check(s, account_of(ctx), password)
        hashed = passwords.hash_password(password)
    _lock(s, user)
    current = _current_hash(s, user)
    if current is None:
        raise _no_profile(user)
    if hashed is not None:
        _set_password(user, hashed, current, policy)
    if p.get("PasswordResetRequired") is not None:
        user.password_reset_required = p["PasswordResetRequired"]
    return None


@IAM.operation()
def delete_login_profile(ctx: RequestContext, p: dict[str, Any]) -> None:
    user = _user_of(ctx, p)
    if user.password_hash is None:
        raise _no_profile(user)
    user.password_hash = user.password_history = None
    user.password_created = user.password_changed = None
    user.password_reset_required = None
    return None


@IAM.operation(access="any")
def change_password(ctx: RequestContext, p: dict[str, Any]) -> None:
    """The caller's own password. Authorized here rather than by the identity port: it acts on
    the caller's own user (iam:ChangePassword on its ARN), and the account's password policy may
    allow every user that (AllowUsersToChangePassword) without any IAM policy saying so."""
    s = ctx.session
    user = _authorized_changer(ctx)
    stored = user.password_hash
    if stored is None:
        raise _no_profile(user)
    if not passwords.check_password(p["OldPassword"], stored):
        raise _denied(ctx, user, "the old password is not correct")
    new = p["NewPassword"]
    policy = _policy_check(s, user.account_id, new)
    reuse = policy.PasswordReusePrevention if policy else None
    if reuse:
        recent = [stored, *_history(user)][:reuse]
        if any(passwords.check_password(new, old) for old in recent):
            raise CloudError(
                "PasswordPolicyViolation",
                "Password does not conform to the account password policy: it must not be one of "
                f"the last {reuse} passwords.",
            )
    hashed = passwords.hash_password(new)
    _lock(s, user)
    if _current_hash(s, user) != stored:
        raise CloudError(
            "EntityTemporarilyUnmodifiable",
            f"Login Profile for User {user.name} changed while this request ran; try again.",
        )
    _set_password(user, hashed, stored, policy)
    user.password_reset_required = False
    return None


# -- helpers -----------------------------------------------------------------------------------------


def _user_of(ctx: RequestContext, p: dict[str, Any]) -> User:
    """The user named, else the calling IAM user (AWS's default for UserName)."""
    s, account_id = ctx.session, account_of(ctx)
    if p.get("UserName"):
        return store.get_user(s, account_id, p["UserName"])
    principal = ctx.principal
    assert principal is not None
    if principal.user_name is None or principal.role_name is not None or principal.account_id != account_id:
        raise CloudError("ValidationError", "Must specify userName when calling with non-User credentials")
    return store.get_user(s, account_id, principal.user_name)


def _authorized_changer(ctx: RequestContext) -> User:
    """The IAM user calling ChangePassword, if it may: an explicit Deny of iam:ChangePassword on
    its ARN refuses; an Allow, or the account policy's AllowUsersToChangePassword, permits
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_passwords_enable-user-change.html)."""
    principal = ctx.principal
    assert principal is not None
    if any(key == "DelegateAccount" for key, _ in ctx.request.form_params()):
        raise CloudError(
            "UnsupportedOperation",
            "ChangePassword changes the caller's own password: DelegateAccount cannot be given with it.",
        )
    if principal.user_name is None or principal.role_name is not None:
        raise CloudError(
            "InvalidUserType",
            "Only an IAM user can change its own password with ChangePassword, not the account's "
            "root user or a role session.",
        )
    s = ctx.session
    user = store.get_user(s, principal.account_id, principal.user_name)
    if principal.session_token:  # GetSessionToken's keys, as the identity port refuses them for IAM
        raise _denied(ctx, user, "temporary credentials cannot call IAM")
    decision = caller_decision(
        s, principal, "iam:ChangePassword", _arn(user), condition_context(ctx, principal)
    )
    if decision is iam_policy.Decision.ALLOW:
        return user
    policy = PasswordPolicy.of(store.find_account(s, user.account_id))
    if decision is iam_policy.Decision.IMPLICIT_DENY and policy and policy.AllowUsersToChangePassword:
        return user
    raise _denied(ctx, user)


def _policy_check(s: Session, account_id: str, password: str) -> PasswordPolicy | None:
    """The account's password policy, after refusing `password` if it breaks it."""
    account = store.find_account(s, account_id)
    policy = PasswordPolicy.of(account)
    check_password(password, policy, account.name)
    return policy


def _set_password(user: User, hashed: str, previous: str | None, policy: PasswordPolicy | None) -> None:
    """Make `hashed` the user's password, keeping `previous` and the ones before it while the
    policy's PasswordReusePrevention needs them (the current one counts as one of them)."""
    keep = ((policy.PasswordReusePrevention or 0) if policy else 0) - 1
    history = ([previous] if previous else []) + _history(user)
    user.password_hash = hashed
    user.password_history = json.dumps(history[:keep]) if keep > 0 and history else None
    user.password_changed = clock.now()


def _history(user: User) -> list[str]:
    found: list[str] = json.loads(user.password_history or "[]")
    return found


def _current_hash(s: Session, user: User) -> str | None:
    """The user's password hash as the database has it now (not as this session first read it)."""
    return s.scalar(select(User.password_hash).where(User.id == user.id))


def _lock(s: Session, user: User) -> None:
    """Hold the write lock for the user's login profile, so that what is read next of it stays
    so until this transaction writes."""
    hold_write_lock(s, [f"iam-login-profile:{user.id}"])


def _view(user: User) -> dict[str, Any]:
    return {
        "UserName": user.name,
        "CreateDate": user.password_created,
        "PasswordResetRequired": bool(user.password_reset_required),
    }


def _arn(user: User) -> str:
    return f"arn:aws:iam::{user.account_id}:user{user.path}{user.name}"


def _exists(user: User) -> CloudError:
    return CloudError("EntityAlreadyExists", f"Login Profile for user {user.name} already exists.")


def _no_profile(user: User) -> CloudError:
    return CloudError("NoSuchEntity", f"Login Profile for User {user.name} cannot be found.")


def _denied(ctx: RequestContext, user: User, why: str = "") -> CloudError:
    principal: Principal | None = ctx.principal
    assert principal is not None
    message = f"User: {principal.arn} is not authorized to perform: iam:ChangePassword on resource: "
    return CloudError("AccessDenied", message + _arn(user) + (f" ({why})" if why else ""))
