"""EC2 tags: CreateTags, DeleteTags, DescribeTags, and the helpers other handlers use for
`TagSpecifications`, `Tags` in their views and `tag:` filters.

Taggable resources are table-driven: `RESOURCES` maps an id prefix to the resource type EC2 names
and the table that holds it (any table with `id` and `account_id` columns). Instances plug in with
one line: `"i": ("instance", Instance, "InvalidInstanceID.NotFound")`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.protocol.xmlcodec import xml_can_carry
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import filters
from mallee.services.clc.network_tables import (
    InternetGateway,
    NetworkAcl,
    NetworkInterface,
    PublicAddress,
    RouteTable,
    SecurityGroup,
    Subnet,
    Vpc,
)
from mallee.services.clc.paging import page
from mallee.services.clc.tables import Image, Instance, KeyPair, Tag
from mallee.services.clc.volume_tables import Snapshot, Volume

# id prefix -> (EC2 resource type, table, error code when the caller has no such resource)
RESOURCES: dict[str, tuple[str, Any, str]] = {
    "ami": ("image", Image, "InvalidAMIID.NotFound"),
    "aki": ("image", Image, "InvalidAMIID.NotFound"),
    "ari": ("image", Image, "InvalidAMIID.NotFound"),
    "key": ("key-pair", KeyPair, "InvalidKeyPair.NotFound"),
    "i": ("instance", Instance, "InvalidInstanceID.NotFound"),
    "vpc": ("vpc", Vpc, "InvalidVpcID.NotFound"),
    "subnet": ("subnet", Subnet, "InvalidSubnetID.NotFound"),
    "igw": ("internet-gateway", InternetGateway, "InvalidInternetGatewayID.NotFound"),
    "rtb": ("route-table", RouteTable, "InvalidRouteTableID.NotFound"),
    "acl": ("network-acl", NetworkAcl, "InvalidNetworkAclID.NotFound"),
    "sg": ("security-group", SecurityGroup, "InvalidGroup.NotFound"),
    "eni": ("network-interface", NetworkInterface, "InvalidNetworkInterfaceID.NotFound"),
    "vol": ("volume", Volume, "InvalidVolume.NotFound"),
    "snap": ("snapshot", Snapshot, "InvalidSnapshot.NotFound"),
}
# Elastic IPs are tagged by allocation id (their row's key is the address).
ELASTIC_IP = ("elastic-ip", "InvalidAllocationID.NotFound")
MAX_TAGS = 50


def _resource(resource_id: str) -> tuple[str, Any, str]:
    entry = RESOURCES.get(resource_id.partition("-")[0])
    if entry is None or "-" not in resource_id:
        raise CloudError("InvalidID", f"The ID '{resource_id}' is not valid")
    return entry


def _check_tag(tag: dict[str, Any]) -> tuple[str, str]:
    key, value = tag.get("Key"), tag.get("Value", "") or ""
    if not key:
        raise CloudError("InvalidParameterValue", "Tag keys must not be empty.")
    if len(key) > 128 or len(value) > 256:
        raise CloudError("InvalidParameterValue", "Tag keys are at most 128 characters, values 256.")
    if key.lower().startswith("aws:"):
        raise CloudError("InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for AWS use")
    if not xml_can_carry(key) or not xml_can_carry(value):
        raise CloudError("InvalidParameterValue", "Tag keys and values must not contain control characters.")
    return key, value


def put(
    s: Session, account_id: str, resource_id: str, resource_type: str, tags: Iterable[dict[str, Any]]
) -> None:
    """Add or overwrite tags on a resource the caller owns (checked by the caller)."""
    for tag in tags:
        key, value = _check_tag(tag)
        row = s.get(Tag, (resource_id, key))
        if row is None:
            s.add(
                Tag(
                    resource_id=resource_id,
                    key=key,
                    value=value,
                    resource_type=resource_type,
                    account_id=account_id,
                )
            )
        else:
            row.value = value
    s.flush()
    count = len(list(s.scalars(select(Tag.key).where(Tag.resource_id == resource_id))))
    if count > MAX_TAGS:
        raise CloudError("TagLimitExceeded", f"A resource may have at most {MAX_TAGS} tags.")


def from_specifications(
    s: Session, account_id: str, resource_id: str, resource_type: str, specs: list[dict[str, Any]] | None
) -> None:
    """Apply a create call's `TagSpecifications` (each must name this call's resource type)."""
    for spec in specs or []:
        if spec.get("ResourceType") != resource_type:
            raise CloudError(
                "InvalidParameterValue",
                f"'{spec.get('ResourceType')}' is not a valid taggable resource type for this operation.",
            )
        put(s, account_id, resource_id, resource_type, spec.get("Tags", []))


def tags_of(s: Session, resource_ids: Iterable[str]) -> dict[str, list[dict[str, str]]]:
    """The tags of many resources at once: resource id -> [{Key, Value}]."""
    ids = list(resource_ids)
    out: dict[str, list[dict[str, str]]] = {i: [] for i in ids}
    if ids:
        for row in s.scalars(select(Tag).where(Tag.resource_id.in_(ids)).order_by(Tag.key)):
            out[row.resource_id].append({"Key": row.key, "Value": row.value})
    return out


def remove_all(s: Session, resource_id: str) -> None:
    s.execute(delete(Tag).where(Tag.resource_id == resource_id))


def _values_of(key: str) -> filters.Getter[dict[str, Any]]:
    return lambda v: [t["Value"] for t in v.get("Tags", []) if t["Key"] == key]


def _value_if(key: str) -> filters.Getter[dict[str, Any]]:
    return lambda v: v["Value"] if v["Key"] == key else None


def with_tag_filters(
    items: list[dict[str, Any]],
    specs: list[dict[str, Any]] | None,
    getters: dict[str, filters.Getter[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """`filters.apply` over views that carry `Tags`, adding `tag-key`, `tag-value` and `tag:<key>`."""
    extra: dict[str, filters.Getter[dict[str, Any]]] = {
        "tag-key": lambda v: [t["Key"] for t in v.get("Tags", [])],
        "tag-value": lambda v: [t["Value"] for t in v.get("Tags", [])],
    }
    for spec in specs or []:
        name = spec.get("Name") or ""
        if name.startswith("tag:"):
            key = name[4:]
            extra[name] = _values_of(key)
    return filters.apply(items, specs, {**getters, **extra})


def _owned(ctx: RequestContext, resource_id: str) -> str:
    if resource_id.startswith("eipalloc-"):
        found = ctx.session.scalar(select(PublicAddress).where(PublicAddress.allocation_id == resource_id))
        if found is None or found.account_id != ctx.account_id:
            raise CloudError(ELASTIC_IP[1], f"The ID '{resource_id}' does not exist")
        return ELASTIC_IP[0]
    resource_type, table, not_found = _resource(resource_id)
    row = ctx.session.get(table, resource_id)
    if row is None or row.account_id != ctx.account_id:
        raise CloudError(not_found, f"The ID '{resource_id}' does not exist")
    return resource_type


@EC2.operation()
def create_tags(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    for resource_id in p["Resources"]:
        put(ctx.session, str(ctx.account_id), resource_id, _owned(ctx, resource_id), p.get("Tags", []))
    return {}


@EC2.operation()
def delete_tags(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    for resource_id in p["Resources"]:
        _owned(ctx, resource_id)
        wanted = p.get("Tags")
        q = delete(Tag).where(Tag.resource_id == resource_id, Tag.account_id == ctx.account_id)
        if not wanted:  # no Tags: delete them all
            ctx.session.execute(q)
            continue
        for tag in wanted:
            cond = q.where(Tag.key == tag["Key"])
            if "Value" in tag:  # a given value (even "") must match; no value: any value
                cond = cond.where(Tag.value == (tag["Value"] or ""))
            ctx.session.execute(cond)
    return {}


@EC2.operation()
def describe_tags(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    rows = ctx.session.scalars(
        select(Tag).where(Tag.account_id == ctx.account_id).order_by(Tag.resource_id, Tag.key)
    )
    views = [
        {"ResourceId": t.resource_id, "ResourceType": t.resource_type, "Key": t.key, "Value": t.value}
        for t in rows
    ]
    getters: dict[str, filters.Getter[dict[str, Any]]] = {
        "key": lambda v: v["Key"],
        "value": lambda v: v["Value"],
        "resource-id": lambda v: v["ResourceId"],
        "resource-type": lambda v: v["ResourceType"],
    }
    for spec in p.get("Filters") or []:
        name = spec.get("Name") or ""
        if name.startswith("tag:"):
            key = name[4:]
            getters[name] = _value_if(key)
    views = filters.apply(views, p.get("Filters"), getters)
    limit = p.get("MaxResults")
    if limit is not None and not 5 <= limit <= 1000:
        raise CloudError("InvalidParameterValue", "MaxResults must be between 5 and 1000.")
    chunk, token = page(views, p.get("NextToken"), limit, default=len(views) or 1, code="InvalidNextToken")
    out: dict[str, Any] = {"Tags": chunk}
    if token:
        out["NextToken"] = token
    return out
