"""Identity records: accounts, users, groups, roles, instance profiles, access keys and where their
policies come from.

Functions take an open SQLAlchemy session and raise CloudError with IAM's codes; the handlers in this
package turn them into API operations, and `bootstrap` uses them to create the system account.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable, Mapping

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from mallee.core import clock, ids
from mallee.core.errors import CloudError
from mallee.db.session import hold_write_lock
from mallee.services.clc.iam.managed import AWS_MANAGED
from mallee.services.clc.tables import (
    AccessKey,
    Account,
    Group,
    GroupMember,
    InlinePolicy,
    InstanceProfile,
    ManagedPolicy,
    PolicyAttachment,
    Role,
    User,
)

Named = type[Account] | type[User] | type[Group] | type[Role] | type[InstanceProfile] | type[ManagedPolicy]

# Eucalyptus account names are DNS-label-like (they become IAM account aliases).
_ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
MAX_KEYS_PER_IDENTITY = 2  # IAM's quota of access keys per user
MAX_TAGS = 50  # IAM's quota of tags per user, role or instance profile


def claim_name(
    s: Session, model: Named, name: str, taken: str, *, account_id: str | None = None, other_than: str = ""
) -> None:
    """Refuse (EntityAlreadyExists, message `taken`) a name another record of `model` in the
    account has, compared case-insensitively as IAM does, and hold the write lock for that name
    until the transaction ends: of two requests creating one name at once, the second waits and
    then sees the first's row, instead of failing on the unique constraint (a 500). A lock rather
    than catching the IntegrityError because the constraint is case-sensitive and IAM's rule is not."""
    hold_write_lock(s, [f"iam-name:{model.__tablename__}:{account_id}:{name.lower()}"])
    q = select(model.id).where(func.lower(model.name) == name.lower())
    if account_id is not None:
        q = q.where(model.account_id == account_id)  # type: ignore[union-attr]
    if other_than:
        q = q.where(model.id != other_than)
    if s.scalar(q) is not None:
        raise CloudError("EntityAlreadyExists", taken)


# -- accounts ----------------------------------------------------------------------------------


def check_account_name(name: str) -> None:
    if not _ACCOUNT_NAME.match(name) or "--" in name:
        raise CloudError(
            "ValidationError",
            f"Account name {name!r} must be 3-63 lower-case letters, digits and single hyphens, "
            "starting and ending with a letter or digit.",
        )


def create_account(s: Session, name: str, *, is_system: bool = False) -> Account:
    check_account_name(name)
    claim_name(s, Account, name, f"Account {name} already exists.")
    account_id = ids.account_id()
    while s.get(Account, account_id) is not None:
        account_id = ids.account_id()
    account = Account(id=account_id, name=name, is_system=is_system, created=clock.now())
    s.add(account)
    s.flush()
    return account


def find_account(s: Session, name_or_id: str) -> Account:
    account = s.get(Account, name_or_id) if name_or_id.isdigit() else None
    account = account or s.scalar(select(Account).where(Account.name == name_or_id))
    if account is None:
        raise CloudError("NoSuchEntity", f"The account {name_or_id} cannot be found.")
    return account


def system_account(s: Session) -> Account | None:
    return s.scalar(select(Account).where(Account.is_system.is_(True)))


def delete_account(s: Session, account: Account, *, recursive: bool) -> None:
    if account.is_system:
        raise CloudError("DeleteConflict", "The system account cannot be deleted.")
    # Identities (users, roles) must go first unless Recursive; their containers go with the account.
    for what, identity in (("users", User), ("roles", Role)):
        if not recursive and s.scalar(
            select(func.count()).select_from(identity).where(identity.account_id == account.id)
        ):
            raise CloudError(
                "DeleteConflict", f"Cannot delete an account that has {what}; use Recursive=true."
            )
    owners = [select(m.id).where(m.account_id == account.id) for m in (User, Group, Role)]
    s.execute(delete(InlinePolicy).where(or_(*(InlinePolicy.owner_id.in_(o) for o in owners))))
    s.execute(delete(PolicyAttachment).where(or_(*(PolicyAttachment.owner_id.in_(o) for o in owners))))
    s.execute(delete(GroupMember).where(GroupMember.group_id.in_(owners[1])))
    # Profiles before roles: a profile refers to its role.
    for model in (AccessKey, ManagedPolicy, Group, User, InstanceProfile, Role):
        s.execute(delete(model).where(model.account_id == account.id))
    s.delete(account)


# -- users and groups ----------------------------------------------------------------------------


def get_user(s: Session, account_id: str, name: str) -> User:
    user = s.scalar(select(User).where(User.account_id == account_id, User.name == name))
    if user is None:
        raise CloudError("NoSuchEntity", f"The user with name {name} cannot be found.")
    return user


def get_group(s: Session, account_id: str, name: str) -> Group:
    group = s.scalar(select(Group).where(Group.account_id == account_id, Group.name == name))
    if group is None:
        raise CloudError("NoSuchEntity", f"The group with name {name} cannot be found.")
    return group


def get_role(s: Session, account_id: str, name: str) -> Role:
    role = s.scalar(select(Role).where(Role.account_id == account_id, Role.name == name))
    if role is None:
        raise CloudError("NoSuchEntity", f"The role with name {name} cannot be found.")
    return role


def get_instance_profile(s: Session, account_id: str, name: str) -> InstanceProfile:
    profile = s.scalar(
        select(InstanceProfile).where(InstanceProfile.account_id == account_id, InstanceProfile.name == name)
    )
    if profile is None:
        raise CloudError("NoSuchEntity", f"Instance Profile {name} cannot be found.")
    return profile


def groups_of_user(s: Session, user_id: str) -> list[Group]:
    q = (
        select(Group)
        .join(GroupMember, GroupMember.group_id == Group.id)
        .where(GroupMember.user_id == user_id)
    )
    return list(s.scalars(q.order_by(Group.name)))


# -- tags (users, roles, instance profiles: a JSON list of {Key, Value} on the record) ------------


def tagged(stored: str, new: Iterable[Mapping[str, str]]) -> str:
    """`stored` with the `new` tags set: a key given again takes the new value, as TagRole does."""
    tags = {t["Key"]: t["Value"] for t in json.loads(stored or "[]")}
    tags.update((t["Key"], t.get("Value", "")) for t in new)
    if len(tags) > MAX_TAGS:
        raise CloudError("LimitExceeded", f"Cannot exceed quota for TagsPerEntity: {MAX_TAGS}")
    return json.dumps([{"Key": k, "Value": v} for k, v in tags.items()])


def untagged(stored: str, keys: Iterable[str]) -> str:
    """`stored` without the tags `keys` name (keys it does not have are no error, as on AWS)."""
    gone = set(keys)
    return json.dumps([t for t in json.loads(stored or "[]") if t["Key"] not in gone])


# -- access keys ---------------------------------------------------------------------------------


def create_access_key(s: Session, account_id: str, user_id: str | None) -> AccessKey:
    count = s.scalar(
        select(func.count())
        .select_from(AccessKey)
        .where(
            AccessKey.account_id == account_id,
            AccessKey.user_id.is_(None) if user_id is None else AccessKey.user_id == user_id,
            AccessKey.session_token.is_(None),
        )
    )
    if (count or 0) >= MAX_KEYS_PER_IDENTITY:
        raise CloudError(
            "LimitExceeded", f"Cannot exceed quota for AccessKeysPerUser: {MAX_KEYS_PER_IDENTITY}"
        )
    key = AccessKey(
        id=ids.access_key_id(),
        secret=ids.secret_access_key(),
        account_id=account_id,
        user_id=user_id,
        active=True,
        created=clock.now(),
    )
    s.add(key)
    s.flush()
    return key


def create_session_credentials(
    s: Session,
    account_id: str,
    user_id: str | None,
    lifetime: _dt.timedelta,
    *,
    role: Role | None = None,
    session_name: str | None = None,
    session_policy: str | None = None,
    session_policy_arns: list[str] | None = None,
    region: str | None = None,
) -> AccessKey:
    """Temporary keys: GetSessionToken's act as `user_id` (None: root), AssumeRole's as a session
    of `role` named `session_name`, narrowed by the session policies given (None: none). A new
    session of a role is a use of it, made in `region` (GetRole's RoleLastUsed)."""
    now = clock.now()
    if role is not None:
        role.last_used, role.last_used_region = now, region
    key = AccessKey(
        id=ids.access_key_id(temporary=True),
        secret=ids.secret_access_key(),
        account_id=account_id,
        user_id=user_id,
        active=True,
        created=now,
        session_token=ids.session_token(),
        expires=now + lifetime,
        role_id=role.id if role else None,
        role_session_name=session_name,
        session_policy=session_policy,
        session_policy_arns=None if session_policy_arns is None else json.dumps(session_policy_arns),
    )
    s.add(key)
    # Expired temporary keys are useless; drop them as new ones are made so the table stays small.
    s.execute(delete(AccessKey).where(AccessKey.expires < now - _dt.timedelta(hours=1)))
    s.flush()
    return key


# -- policies ------------------------------------------------------------------------------------


def policy_documents_for_user(s: Session, user: User) -> list[str]:
    """Every identity policy that applies to a user: inline and attached, its own and its groups'."""
    group_ids = [g.id for g in groups_of_user(s, user.id)]
    return _policy_documents(s, [("user", user.id)] + [("group", gid) for gid in group_ids])


def policy_documents_for_role(s: Session, role: Role) -> list[str]:
    """A role's permissions policies, inline and attached."""
    return _policy_documents(s, [("role", role.id)])


def key_policy_documents(s: Session, key: AccessKey) -> tuple[list[str], list[str] | None]:
    """The identity policies a key acts with (none for a root identity), and its session policies
    (a role session's inline and managed ones; None when it was given none). A managed session
    policy deleted since counts for nothing, so the session keeps no more than it was given."""
    if key.role_id is not None:
        role = s.get(Role, key.role_id)
        assert role is not None  # foreign key
        return policy_documents_for_role(s, role), session_policy_documents(s, key)
    user = s.get(User, key.user_id) if key.user_id else None
    return (policy_documents_for_user(s, user) if user else []), None


def session_policy_documents(s: Session, key: AccessKey) -> list[str] | None:
    """A role session's session policies, inline and managed (None when it was given none)."""
    if key.session_policy is None and key.session_policy_arns is None:
        return None
    session = [key.session_policy] if key.session_policy is not None else []
    for arn in json.loads(key.session_policy_arns or "[]"):
        doc = managed_policy_document(s, arn)
        if doc is not None:
            session.append(doc)
    return session


def managed_policy_document(s: Session, arn: str) -> str | None:
    if arn in AWS_MANAGED:
        return AWS_MANAGED[arn].document
    policy = find_managed_policy(s, arn)
    return policy.document if policy else None


def find_managed_policy(s: Session, arn: str) -> ManagedPolicy | None:
    m = re.match(r"^arn:aws:iam::(\d{12}):policy(/(?:.*/)?)([^/]+)$", arn)
    if not m:
        return None
    account_id, path, name = m.groups()
    return s.scalar(
        select(ManagedPolicy).where(
            ManagedPolicy.account_id == account_id, ManagedPolicy.name == name, ManagedPolicy.path == path
        )
    )


def _policy_documents(s: Session, owners: list[tuple[str, str]]) -> list[str]:
    docs: list[str] = []
    arns: list[str] = []
    for kind, owner_id in owners:
        docs += s.scalars(
            select(InlinePolicy.document).where(
                InlinePolicy.owner_kind == kind, InlinePolicy.owner_id == owner_id
            )
        )
        arns += s.scalars(
            select(PolicyAttachment.policy_arn).where(
                PolicyAttachment.owner_kind == kind, PolicyAttachment.owner_id == owner_id
            )
        )
    for arn in arns:
        doc = managed_policy_document(s, arn)
        if doc is not None:
            docs.append(doc)
    return docs
