"""The role credentials an instance's software reads from the metadata service
(`iam/security-credentials/<role>`), as EC2 hands them out: a session of the role in the
instance's profile, assumed by the EC2 service (the role's trust policy must allow the principal
`ec2.amazonaws.com`), named after the instance, valid for six hours, and replaced by a new one
well before it expires (`REFRESH_BEFORE`), so that SDKs that re-read them always get keys with
time left. The keys are ordinary role-session keys (iam/store.create_session_credentials): the
front door and Walrus check them, and the role's policies bound them, like AssumeRole's."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core import clock
from mallee.core import policy as iam_policy
from mallee.services.clc.iam import store
from mallee.services.clc.iam.roles import trust_policy
from mallee.services.clc.iam.views import role_arn
from mallee.services.clc.instance_profile_tables import ProfileAssociation
from mallee.services.clc.tables import AccessKey, Instance, InstanceProfile, Role

LIFETIME = _dt.timedelta(hours=6)
REFRESH_BEFORE = _dt.timedelta(minutes=15)  # EC2: new credentials at least 5 min before expiry
EC2_SERVICE = "ec2.amazonaws.com"


def iam_tree(s: Session, instance: Instance) -> dict[str, Any] | None:
    """`meta-data/iam/` of an instance with an instance profile (None without one): `info`, and
    `security-credentials/<role>` when the profile holds a role (made when first read)."""
    association = s.scalar(select(ProfileAssociation).where(ProfileAssociation.instance_id == instance.id))
    if association is None:
        return None
    profile = s.get(InstanceProfile, association.profile_id)
    role = s.get(Role, profile.role_id) if profile is not None and profile.role_id else None
    info = {
        "Code": "Success",
        "LastUpdated": _iso(association.created),
        "InstanceProfileArn": association.profile_arn,
        "InstanceProfileId": association.profile_id,
    }
    tree: dict[str, Any] = {"info": json.dumps(info, indent=2)}
    if role is not None:
        tree["security-credentials"] = {role.name: lambda: credentials(s, instance, role)}
    return tree


def credentials(s: Session, instance: Instance, role: Role) -> str:
    """The JSON document EC2 serves for the role: this instance's current session of it."""
    if not _ec2_may_assume(role):
        return json.dumps(
            {
                "Code": "AssumeRoleUnauthorizedAccess",
                "Message": f"EC2 cannot assume the role {role.name}. Please see documentation at "
                "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_switch-role-ec2.html",
                "LastUpdated": _iso(clock.now()),
            },
            indent=2,
        )
    key = current_key(s, instance, role)
    return json.dumps(
        {
            "Code": "Success",
            "LastUpdated": _iso(key.created),
            "Type": "AWS-HMAC",
            "AccessKeyId": key.id,
            "SecretAccessKey": key.secret,
            "Token": key.session_token,
            "Expiration": _iso(key.expires),
        },
        indent=2,
    )


def current_key(s: Session, instance: Instance, role: Role) -> AccessKey:
    """The instance's session of the role with the most time left, or a new one when that is less
    than REFRESH_BEFORE (committed with the request's session)."""
    now = clock.now()
    q = (
        select(AccessKey)
        .where(
            AccessKey.role_id == role.id,
            AccessKey.role_session_name == instance.id,
            AccessKey.expires > now + REFRESH_BEFORE,
        )
        .order_by(AccessKey.expires.desc())
        .limit(1)
    )
    found: AccessKey | None = s.scalar(q)
    if found is not None:
        return found
    return store.create_session_credentials(
        s, role.account_id, None, LIFETIME, role=role, session_name=instance.id, region=instance.zone[:-1]
    )


def _ec2_may_assume(role: Role) -> bool:
    """Whether the role's trust policy lets the EC2 service assume it (no conditions of a signed
    caller apply: the service is the principal)."""
    decision = iam_policy.evaluate(
        [trust_policy(role.trust_policy)],
        "sts:AssumeRole",
        role_arn(role),
        {},
        principal_arn=EC2_SERVICE,
        by_account=False,
    )
    return decision is iam_policy.Decision.ALLOW


def _iso(at: _dt.datetime | None) -> str:
    return (at or clock.now()).astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
