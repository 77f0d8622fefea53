"""What an instance's software is given: an IAM instance profile (RunInstances IamInstanceProfile,
Associate/Replace/DisassociateIamInstanceProfile, DescribeIamInstanceProfileAssociations) and its
metadata service options (RunInstances MetadataOptions, ModifyInstanceMetadataOptions), recorded
in instance_profile_tables.py and shown by DescribeInstances (`views_of`). The metadata service
(services/clc/metadata.py) enforces the options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core import clock, ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.core.policy import Decision
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import filters, resources
from mallee.services.clc.ec2.resources import one_page
from mallee.services.clc.iam.identity import caller_decision, condition_context
from mallee.services.clc.iam.views import instance_profile_arn, role_arn
from mallee.services.clc.instance_profile_tables import MetadataOptions, ProfileAssociation
from mallee.services.clc.tables import Instance, InstanceProfile, Role

# -- metadata options ------------------------------------------------------------------------------

DEFAULTS = MetadataOptions(  # EC2's, for an instance without a row (never added to a session)
    http_tokens="optional",
    http_put_response_hop_limit=1,
    http_endpoint="enabled",
    instance_metadata_tags="disabled",
)
_CHOICES = {
    "HttpTokens": ("http_tokens", ("optional", "required")),
    "HttpEndpoint": ("http_endpoint", ("enabled", "disabled")),
    "InstanceMetadataTags": ("instance_metadata_tags", ("enabled", "disabled")),
}


def options_of(s: Session, instance_id: str) -> MetadataOptions:
    """An instance's metadata options (EC2's defaults when it has no row)."""
    return s.get(MetadataOptions, instance_id) or DEFAULTS


def set_options(s: Session, instance_id: str, p: dict[str, Any] | None) -> MetadataOptions:
    """Record the options `p` (RunInstances MetadataOptions, ModifyInstanceMetadataOptions) gives,
    the others kept; InvalidParameterValue for a value EC2 refuses."""
    p = p or {}
    if p.get("HttpProtocolIpv6") == "enabled":
        raise CloudError("UnsupportedOperation", "Mallee does not serve instance metadata over IPv6.")
    row = s.get(MetadataOptions, instance_id)
    if row is None:
        row = MetadataOptions(instance_id=instance_id, **_fields(DEFAULTS))
        s.add(row)
    for member, (field, allowed) in _CHOICES.items():
        value = p.get(member)
        if value is None:
            continue
        if value not in allowed:
            raise CloudError("InvalidParameterValue", f"Invalid value '{value}' for {member}.")
        setattr(row, field, value)
    hops = p.get("HttpPutResponseHopLimit")
    if hops is not None:
        if not 1 <= hops <= 64:
            raise CloudError("InvalidParameterValue", "HttpPutResponseHopLimit must be between 1 and 64.")
        row.http_put_response_hop_limit = hops
    return row


def _fields(o: MetadataOptions) -> dict[str, Any]:
    return {
        "http_tokens": o.http_tokens,
        "http_put_response_hop_limit": o.http_put_response_hop_limit,
        "http_endpoint": o.http_endpoint,
        "instance_metadata_tags": o.instance_metadata_tags,
    }


def options_view(o: MetadataOptions) -> dict[str, Any]:
    return {
        "State": "applied",
        "HttpTokens": o.http_tokens,
        "HttpPutResponseHopLimit": o.http_put_response_hop_limit,
        "HttpEndpoint": o.http_endpoint,
        "HttpProtocolIpv6": "disabled",
        "InstanceMetadataTags": o.instance_metadata_tags,
    }


@EC2.operation()
def modify_instance_metadata_options(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    instance = _instance(ctx, p["InstanceId"])
    options = set_options(ctx.session, instance.id, p)
    return {"InstanceId": instance.id, "InstanceMetadataOptions": options_view(options)}


# -- instance profiles -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    id: str
    arn: str


def resolve_profile(ctx: RequestContext, spec: dict[str, Any] | None) -> Profile | None:
    """The caller's instance profile an IamInstanceProfileSpecification names (Arn or Name)."""
    if not spec:
        return None
    arn, name = spec.get("Arn"), spec.get("Name")
    if arn and name:
        raise CloudError(
            "InvalidParameterCombination",
            "The parameter 'iamInstanceProfile.name' may not be used in combination with "
            "'iamInstanceProfile.arn'",
        )
    if not (arn or name):
        raise CloudError("InvalidParameterValue", "iamInstanceProfile needs an Arn or a Name.")
    wanted = name or str(arn).rsplit("/", 1)[-1]
    q = select(InstanceProfile).where(InstanceProfile.account_id == ctx.account_id)
    profile = ctx.session.scalar(q.where(InstanceProfile.name == wanted))
    if profile is None or (arn and instance_profile_arn(profile) != arn):
        member, value, what = ("arn", arn, "ARN") if arn else ("name", name, "name")
        raise CloudError(
            "InvalidParameterValue",
            f"Value ({value}) for parameter iamInstanceProfile.{member} is invalid. "
            f"Invalid IAM Instance Profile {what}",
        )
    role = ctx.session.get(Role, profile.role_id) if profile.role_id else None
    if role is not None:
        _may_pass(ctx, role)
    return Profile(profile.id, instance_profile_arn(profile))


def _may_pass(ctx: RequestContext, role: Role) -> None:
    """Giving an instance a profile passes its role to EC2: the caller needs iam:PassRole on the
    role (or it could act through an instance with more than it may itself)."""
    principal = ctx.principal
    assert principal is not None
    arn = role_arn(role)
    context = condition_context(ctx, principal)
    if caller_decision(ctx.session, principal, "iam:PassRole", arn, context) is not Decision.ALLOW:
        raise CloudError(
            "UnauthorizedOperation",
            f"You are not authorized to perform this operation. User: {principal.arn} is not "
            f"authorized to perform: iam:PassRole on resource: {arn}",
        )


def associate(s: Session, instance_id: str, profile: Profile) -> ProfileAssociation:
    row = ProfileAssociation(
        id=ids.resource_id("iip-assoc"),
        instance_id=instance_id,
        profile_id=profile.id,
        profile_arn=profile.arn,
        created=clock.now(),
    )
    s.add(row)
    return row


def associations_of(s: Session, instance_ids: list[str]) -> dict[str, ProfileAssociation]:
    q = select(ProfileAssociation).where(ProfileAssociation.instance_id.in_(instance_ids))
    return {row.instance_id: row for row in s.scalars(q)}


def association_view(row: ProfileAssociation, state: str = "associated") -> dict[str, Any]:
    return {
        "AssociationId": row.id,
        "InstanceId": row.instance_id,
        "IamInstanceProfile": {"Arn": row.profile_arn, "Id": row.profile_id},
        "State": state,
        "Timestamp": row.created,
    }


@EC2.operation()
def associate_iam_instance_profile(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    instance = _instance(ctx, p["InstanceId"])
    profile = resolve_profile(ctx, p["IamInstanceProfile"])
    assert profile is not None
    if associations_of(ctx.session, [instance.id]):
        raise CloudError("IncorrectState", f"There is an existing association for instance {instance.id}")
    row = associate(ctx.session, instance.id, profile)
    return {"IamInstanceProfileAssociation": association_view(row, "associating")}


@EC2.operation()
def replace_iam_instance_profile_association(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    row = _association(ctx, p["AssociationId"])
    profile = resolve_profile(ctx, p["IamInstanceProfile"])
    assert profile is not None
    ctx.session.delete(row)
    ctx.session.flush()
    new = associate(ctx.session, row.instance_id, profile)
    return {"IamInstanceProfileAssociation": association_view(new, "associating")}


@EC2.operation()
def disassociate_iam_instance_profile(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    row = _association(ctx, p["AssociationId"])
    ctx.session.delete(row)
    return {"IamInstanceProfileAssociation": association_view(row, "disassociating")}


_FILTERS: dict[str, filters.Getter[dict[str, Any]]] = {
    "instance-id": lambda v: v["InstanceId"],
    "state": lambda v: v["State"],
}


@EC2.operation()
def describe_iam_instance_profile_associations(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    q = (
        select(ProfileAssociation)
        .join(Instance, Instance.id == ProfileAssociation.instance_id)
        .where(Instance.account_id == ctx.account_id)
        .order_by(ProfileAssociation.created, ProfileAssociation.id)
    )
    wanted = p.get("AssociationIds")
    if wanted:
        q = q.where(ProfileAssociation.id.in_(wanted))
    rows = list(ctx.session.scalars(q))
    missing = sorted(set(wanted or ()) - {row.id for row in rows})
    if missing:
        raise CloudError("InvalidAssociationID.NotFound", f"An association ID was not found: {missing[0]}")
    views = filters.apply([association_view(row) for row in rows], p.get("Filters"), _FILTERS)
    return one_page(p, views, "IamInstanceProfileAssociations")


def _instance(ctx: RequestContext, instance_id: str) -> Instance:
    """The caller's instance (resources.owned), not yet terminated."""
    instance: Instance = resources.owned(ctx, Instance, instance_id, "i", "InvalidInstanceID.NotFound")
    if instance.state == "terminated":
        raise CloudError("InvalidInstanceID.NotFound", f"The instance ID '{instance_id}' does not exist")
    return instance


def _association(ctx: RequestContext, association_id: str) -> ProfileAssociation:
    row: ProfileAssociation | None = ctx.session.get(ProfileAssociation, association_id)
    instance = ctx.session.get(Instance, row.instance_id) if row is not None else None
    if row is None or instance is None or instance.account_id != ctx.account_id:
        raise CloudError(
            "InvalidAssociationID.NotFound", f"The association ID '{association_id}' does not exist"
        )
    return row
