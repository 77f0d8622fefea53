"""Account-level IAM: aliases, the account summary, and Eucalyptus' account administration
(CreateAccount, ListAccounts, DeleteAccount: the cloud administrator's extensions to IAM)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.rpc import objectstorage
from mallee.rpc.contract import Empty
from mallee.rpc.transport import RpcError
from mallee.services.clc import peers
from mallee.services.clc.apis import IAM
from mallee.services.clc.iam import policies, roles, store
from mallee.services.clc.iam.views import account_of
from mallee.services.clc.tables import (
    AccessKey,
    Account,
    Group,
    InlinePolicy,
    InstanceProfile,
    ManagedPolicy,
    Role,
    User,
)


@IAM.operation()
def create_account_alias(ctx: RequestContext, p: dict[str, Any]) -> None:
    s = ctx.session
    alias = p["AccountAlias"]
    store.check_account_name(alias)
    account = store.find_account(s, account_of(ctx))
    if alias == account.name:
        return None
    store.claim_name(s, Account, alias, f"The account alias {alias} already exists.", other_than=account.id)
    account.name = alias  # in Eucalyptus the alias is the account's name
    return None


@IAM.operation()
def list_account_aliases(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    account = store.find_account(ctx.session, account_of(ctx))
    return {"AccountAliases": [account.name], "IsTruncated": False}


def _count(ctx: RequestContext, model: Any, *where: Any) -> int:
    return int(ctx.session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


@IAM.operation()
def get_account_summary(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    account_id = account_of(ctx)
    users = select(User.id).where(User.account_id == account_id)
    groups = select(Group.id).where(Group.account_id == account_id)
    root_keys = _count(
        ctx,
        AccessKey,
        AccessKey.account_id == account_id,
        AccessKey.user_id.is_(None),
        AccessKey.session_token.is_(None),
    )
    return {
        "SummaryMap": {
            "Users": _count(ctx, User, User.account_id == account_id),
            "UsersQuota": 5000,
            "Groups": _count(ctx, Group, Group.account_id == account_id),
            "GroupsQuota": 300,
            "GroupsPerUserQuota": 10,
            "Policies": _count(ctx, ManagedPolicy, ManagedPolicy.account_id == account_id),
            "PoliciesQuota": 1500,
            "PolicySizeQuota": 6144,
            "PolicyVersionsInUse": _count(ctx, ManagedPolicy, ManagedPolicy.account_id == account_id),
            "PolicyVersionsInUseQuota": 10000,
            "VersionsPerPolicyQuota": 5,
            "UserPolicySizeQuota": 2048,
            "GroupPolicySizeQuota": 5120,
            "AttachedPoliciesPerUserQuota": 10,
            "AttachedPoliciesPerGroupQuota": 10,
            "AccessKeysPerUserQuota": store.MAX_KEYS_PER_IDENTITY,
            "AccountAccessKeysPresent": 1 if root_keys else 0,
            "AccountMFAEnabled": 0,
            "MFADevices": 0,
            "MFADevicesInUse": 0,
            "ServerCertificates": 0,
            "ServerCertificatesQuota": 20,
            "InlinePoliciesOnUsers": _count(
                ctx, InlinePolicy, InlinePolicy.owner_kind == "user", InlinePolicy.owner_id.in_(users)
            ),
            "InlinePoliciesOnGroups": _count(
                ctx, InlinePolicy, InlinePolicy.owner_kind == "group", InlinePolicy.owner_id.in_(groups)
            ),
            "Roles": _count(ctx, Role, Role.account_id == account_id),
            "RolesQuota": 1000,
            "InstanceProfiles": _count(ctx, InstanceProfile, InstanceProfile.account_id == account_id),
            "InstanceProfilesQuota": 1000,
            "RolePolicySizeQuota": policies.INLINE_MAX["role"],
            "AssumeRolePolicySizeQuota": roles.TRUST_POLICY_MAX,
            "AttachedPoliciesPerRoleQuota": 10,
        }
    }


@IAM.operation(access="system")
def create_account(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    account = store.create_account(ctx.session, p["AccountName"])
    return {"Account": {"AccountName": account.name, "AccountId": account.id}}


@IAM.operation(access="system")
def list_accounts(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    accounts = ctx.session.scalars(select(Account).order_by(Account.name))
    return {"Accounts": [{"AccountName": a.name, "AccountId": a.id} for a in accounts]}


@IAM.operation(access="system")
def delete_account(ctx: RequestContext, p: dict[str, Any]) -> None:
    account = store.find_account(ctx.session, p["AccountName"])
    store.delete_account(ctx.session, account, recursive=bool(p.get("Recursive")))
    return None


@IAM.operation(access="system")
def put_account_quota(ctx: RequestContext, p: dict[str, Any]) -> None:
    account = store.find_account(ctx.session, p["AccountName"])
    account.max_objects = p.get("MaxObjects") or None
    account.max_bytes = p.get("MaxBytes") or None
    return None


@IAM.operation(access="system")
def list_account_usage(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    try:
        used = peers.walrus().call(objectstorage.USAGE, Empty()).accounts
    except (OSError, RpcError) as exc:
        raise CloudError("ServiceUnavailable", f"Walrus did not answer: {exc}", 503) from exc
    rows = []
    for a in ctx.session.scalars(select(Account).order_by(Account.name)):
        u = used.get(a.id) or objectstorage.AccountUsage(buckets=0, objects=0, bytes=0)
        row: dict[str, Any] = {
            "AccountName": a.name,
            "AccountId": a.id,
            "Buckets": u.buckets,
            "Objects": u.objects,
            "Bytes": u.bytes,
        }
        if a.max_objects:
            row["MaxObjects"] = a.max_objects
        if a.max_bytes:
            row["MaxBytes"] = a.max_bytes
        rows.append(row)
    return {"Accounts": rows}
