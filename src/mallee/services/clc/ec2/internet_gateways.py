"""Internet gateways: Create/Delete/Describe/Attach/DetachInternetGateway.

A VPC has at most one gateway. A subnet is public when its route table sends 0.0.0.0/0 to the
gateway attached to its VPC (route_tables.is_public); on Mallee the "internet" is the cloud's
public network, reached through 1:1 NAT of public addresses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from mallee.core import ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import resources, tags, vpcs
from mallee.services.clc.network_tables import InternetGateway, NetworkInterface, PublicAddress

NOT_FOUND = "InvalidInternetGatewayID.NotFound"


def owned(ctx: RequestContext, gateway_id: str) -> InternetGateway:
    gateway: InternetGateway = resources.owned(ctx, InternetGateway, gateway_id, "igw", NOT_FOUND)
    return gateway


def view(gateway: InternetGateway, tag_list: list[dict[str, str]]) -> dict[str, Any]:
    attachments = [{"State": "available", "VpcId": gateway.vpc_id}] if gateway.vpc_id else []
    return {
        "InternetGatewayId": gateway.id,
        "OwnerId": gateway.account_id,
        "Attachments": attachments,
        "Tags": tag_list,
    }


_FILTERS: dict[str, Any] = {
    "internet-gateway-id": lambda v: v["InternetGatewayId"],
    "attachment.vpc-id": lambda v: [a["VpcId"] for a in v["Attachments"]],
    "attachment.state": lambda v: [a["State"] for a in v["Attachments"]],
    "owner-id": lambda v: v["OwnerId"],
}


@EC2.operation()
def create_internet_gateway(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    assert ctx.account_id is not None
    gateway = InternetGateway(id=ids.resource_id("igw"), account_id=ctx.account_id, vpc_id=None)
    ctx.session.add(gateway)
    ctx.session.flush()
    tags.from_specifications(
        ctx.session, ctx.account_id, gateway.id, "internet-gateway", p.get("TagSpecifications")
    )
    return {"InternetGateway": view(gateway, tags.tags_of(ctx.session, [gateway.id])[gateway.id])}


@EC2.operation()
def describe_internet_gateways(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    vpcs.ensure_default(ctx)
    return resources.describe(
        ctx,
        p,
        InternetGateway,
        ids_member="InternetGatewayIds",
        prefix="igw",
        not_found=NOT_FOUND,
        order=(InternetGateway.id,),
        view=view,
        getters=_FILTERS,
        key="InternetGateways",
    )


@EC2.operation()
def delete_internet_gateway(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    gateway = owned(ctx, p["InternetGatewayId"])
    if gateway.vpc_id is not None:
        raise CloudError(
            "DependencyViolation",
            f"The internetGateway '{gateway.id}' has dependencies and cannot be deleted.",
        )
    tags.remove_all(ctx.session, gateway.id)
    ctx.session.delete(gateway)
    return {}


@EC2.operation()
def attach_internet_gateway(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    gateway = owned(ctx, p["InternetGatewayId"])
    vpc = vpcs.owned(ctx, p["VpcId"])
    if gateway.vpc_id is not None:
        raise CloudError(
            "Resource.AlreadyAssociated",
            f"resource {gateway.id} is already attached to network {gateway.vpc_id}",
        )
    other = ctx.session.scalar(select(InternetGateway.id).where(InternetGateway.vpc_id == vpc.id))
    if other is not None:
        raise CloudError(
            "InvalidParameterValue", f"Network {vpc.id} already has an internet gateway attached"
        )
    gateway.vpc_id = vpc.id
    return {}


@EC2.operation()
def detach_internet_gateway(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    gateway = owned(ctx, p["InternetGatewayId"])
    vpc = vpcs.owned(ctx, p["VpcId"])
    if gateway.vpc_id != vpc.id:
        raise CloudError("Gateway.NotAttached", f"resource {gateway.id} is not attached to network {vpc.id}")
    mapped = ctx.session.scalar(
        select(PublicAddress.public_ip)
        .join(NetworkInterface, NetworkInterface.id == PublicAddress.interface_id)
        .where(NetworkInterface.vpc_id == vpc.id)
        .limit(1)
    )
    if mapped is not None:
        raise CloudError(
            "DependencyViolation",
            f"Network {vpc.id} has some mapped public address(es) ({mapped}). Please unmap those public "
            "address(es) before detaching the gateway.",
        )
    gateway.vpc_id = None  # routes through it stay, blackholed, as on AWS (see route_tables.view)
    return {}
