"""IAM instance profiles: Create/Get/List/DeleteInstanceProfile, the role each holds, and tags."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from mallee.core import clock, ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import IAM
from mallee.services.clc.iam import store
from mallee.services.clc.iam.views import account_of, instance_profile_view, tag_list
from mallee.services.clc.paging import marker_page
from mallee.services.clc.tables import InstanceProfile, Role

# AWS: an instance profile holds at most one role, and the quota cannot be raised.
ONE_ROLE = "Cannot exceed quota for InstanceSessionsPerInstanceProfile: 1"


@IAM.operation()
def create_instance_profile(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s, account_id = ctx.session, account_of(ctx)
    name = p["InstanceProfileName"]
    tags = store.tagged("[]", p.get("Tags", []))
    taken = f"Instance Profile {name} already exists."
    store.claim_name(s, InstanceProfile, name, taken, account_id=account_id)
    profile = InstanceProfile(
        id=ids.unique_id("AIPA"),
        account_id=account_id,
        name=name,
        path=p.get("Path", "/"),
        created=clock.now(),
        tags=tags,
    )
    s.add(profile)
    s.flush()
    return {"InstanceProfile": instance_profile_view(profile, [])}


@IAM.operation()
def get_instance_profile(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    profile = store.get_instance_profile(ctx.session, account_of(ctx), p["InstanceProfileName"])
    return {"InstanceProfile": _view(ctx, profile)}


@IAM.operation()
def list_instance_profiles(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    q = select(InstanceProfile).where(InstanceProfile.account_id == account_of(ctx))
    prefix = p.get("PathPrefix", "/")
    profiles = [
        profile
        for profile in ctx.session.scalars(q.order_by(InstanceProfile.name))
        if profile.path.startswith(prefix)
    ]
    return marker_page("InstanceProfiles", [_view(ctx, profile) for profile in profiles], p)


@IAM.operation()
def delete_instance_profile(ctx: RequestContext, p: dict[str, Any]) -> None:
    profile = store.get_instance_profile(ctx.session, account_of(ctx), p["InstanceProfileName"])
    if profile.role_id is not None:
        raise CloudError(
            "DeleteConflict", "Cannot delete entity, must remove roles from instance profile first."
        )
    ctx.session.delete(profile)
    return None


@IAM.operation()
def add_role_to_instance_profile(ctx: RequestContext, p: dict[str, Any]) -> None:
    s, account_id = ctx.session, account_of(ctx)
    profile = store.get_instance_profile(s, account_id, p["InstanceProfileName"])
    role = store.get_role(s, account_id, p["RoleName"])
    # One statement that only fills an empty profile: of two adds at once, one wins, one is refused.
    filled = s.execute(
        update(InstanceProfile)
        .where(InstanceProfile.id == profile.id, InstanceProfile.role_id.is_(None))
        .values(role_id=role.id)
    )
    if filled.rowcount == 0:
        raise CloudError("LimitExceeded", ONE_ROLE)
    return None


@IAM.operation()
def remove_role_from_instance_profile(ctx: RequestContext, p: dict[str, Any]) -> None:
    s, account_id = ctx.session, account_of(ctx)
    profile = store.get_instance_profile(s, account_id, p["InstanceProfileName"])
    role = store.get_role(s, account_id, p["RoleName"])
    if profile.role_id != role.id:
        raise CloudError(
            "NoSuchEntity", f"Role {role.name} in Instance Profile {profile.name} cannot be found."
        )
    profile.role_id = None
    return None


@IAM.operation()
def list_instance_profiles_for_role(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s, account_id = ctx.session, account_of(ctx)
    role = store.get_role(s, account_id, p["RoleName"])
    q = select(InstanceProfile).where(InstanceProfile.role_id == role.id).order_by(InstanceProfile.name)
    return marker_page("InstanceProfiles", [instance_profile_view(ip, [role]) for ip in s.scalars(q)], p)


@IAM.operation()
def tag_instance_profile(ctx: RequestContext, p: dict[str, Any]) -> None:
    profile = store.get_instance_profile(ctx.session, account_of(ctx), p["InstanceProfileName"])
    profile.tags = store.tagged(profile.tags, p["Tags"])
    return None


@IAM.operation()
def untag_instance_profile(ctx: RequestContext, p: dict[str, Any]) -> None:
    profile = store.get_instance_profile(ctx.session, account_of(ctx), p["InstanceProfileName"])
    profile.tags = store.untagged(profile.tags, p["TagKeys"])
    return None


@IAM.operation()
def list_instance_profile_tags(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    profile = store.get_instance_profile(ctx.session, account_of(ctx), p["InstanceProfileName"])
    return marker_page("Tags", tag_list(profile.tags), p)


def _view(ctx: RequestContext, profile: InstanceProfile) -> dict[str, Any]:
    role = ctx.session.get(Role, profile.role_id) if profile.role_id else None
    return instance_profile_view(profile, [role] if role else [])
