"""Route tables and network ACLs: Create/Delete/DescribeRouteTables, Create/Replace/DeleteRoute,
Associate/DisassociateRouteTable, DescribeNetworkAcls.

Routes go to `local` (the VPC's own CIDR, always present) or to an internet gateway; a subnet
without an explicit association uses its VPC's main table. Every VPC has one network ACL that allows
everything; it is describable, and custom ACLs are refused by name.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core import ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import internet_gateways, resources, subnets, tags, vpcs
from mallee.services.clc.network_tables import (
    InternetGateway,
    NetworkAcl,
    Route,
    RouteTable,
    RouteTableAssociation,
    Subnet,
)

NOT_FOUND = "InvalidRouteTableID.NotFound"
MAX_ROUTES = 50
_TARGETS = (
    "DestinationIpv6CidrBlock",
    "DestinationPrefixListId",
    "EgressOnlyInternetGatewayId",
    "InstanceId",
    "NatGatewayId",
    "NetworkInterfaceId",
    "TransitGatewayId",
    "VpcPeeringConnectionId",
    "VpcEndpointId",
    "LocalGatewayId",
    "CarrierGatewayId",
    "CoreNetworkArn",
    "OdbNetworkArn",
)


def owned(ctx: RequestContext, table_id: str) -> RouteTable:
    table: RouteTable = resources.owned(ctx, RouteTable, table_id, "rtb", NOT_FOUND)
    return table


def table_of(s: Session, subnet: Subnet) -> RouteTable:
    """The route table a subnet uses: its own association, else its VPC's main table."""
    explicit = s.scalar(
        select(RouteTable)
        .join(RouteTableAssociation, RouteTableAssociation.route_table_id == RouteTable.id)
        .where(RouteTableAssociation.subnet_id == subnet.id)
    )
    if explicit is not None:
        return explicit
    main = s.scalar(
        select(RouteTable).where(RouteTable.vpc_id == subnet.vpc_id, RouteTable.is_main.is_(True))
    )
    assert main is not None, f"VPC {subnet.vpc_id} has no main route table"
    return main


def is_public(s: Session, subnet: Subnet) -> bool:
    """Whether the subnet's route table sends 0.0.0.0/0 to the internet gateway of its VPC."""
    table = table_of(s, subnet)
    route = s.get(Route, (table.id, "0.0.0.0/0"))
    if route is None or not route.gateway_id.startswith("igw-"):
        return False
    gateway = s.get(InternetGateway, route.gateway_id)
    return gateway is not None and gateway.vpc_id == subnet.vpc_id


def _route_view(s: Session, route: Route, vpc_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "DestinationCidrBlock": route.destination,
        "GatewayId": route.gateway_id,
        "Origin": route.origin,
        "State": "active",
    }
    if route.gateway_id.startswith("igw-"):
        gateway = s.get(InternetGateway, route.gateway_id)
        if gateway is None or gateway.vpc_id != vpc_id:
            out["State"] = "blackhole"
    return out


def view(s: Session, table: RouteTable, tag_list: list[dict[str, str]]) -> dict[str, Any]:
    routes = s.scalars(select(Route).where(Route.route_table_id == table.id).order_by(Route.destination))
    associations: list[dict[str, Any]] = []
    if table.is_main:
        associations.append(
            {
                "Main": True,
                "RouteTableAssociationId": "rtbassoc-" + table.id.split("-", 1)[1],
                "RouteTableId": table.id,
                "AssociationState": {"State": "associated"},
            }
        )
    for a in s.scalars(select(RouteTableAssociation).where(RouteTableAssociation.route_table_id == table.id)):
        associations.append(
            {
                "Main": False,
                "RouteTableAssociationId": a.id,
                "RouteTableId": table.id,
                "SubnetId": a.subnet_id,
                "AssociationState": {"State": "associated"},
            }
        )
    return {
        "RouteTableId": table.id,
        "VpcId": table.vpc_id,
        "OwnerId": table.account_id,
        "Routes": [_route_view(s, r, table.vpc_id) for r in routes],
        "Associations": associations,
        "PropagatingVgws": [],
        "Tags": tag_list,
    }


_FILTERS: dict[str, Any] = {
    "route-table-id": lambda v: v["RouteTableId"],
    "vpc-id": lambda v: v["VpcId"],
    "owner-id": lambda v: v["OwnerId"],
    "association.main": lambda v: [a["Main"] for a in v["Associations"]],
    "association.subnet-id": lambda v: [a.get("SubnetId") for a in v["Associations"]],
    "association.route-table-association-id": lambda v: [
        a["RouteTableAssociationId"] for a in v["Associations"]
    ],
    "association.route-table-id": lambda v: [a["RouteTableId"] for a in v["Associations"]],
    "route.destination-cidr-block": lambda v: [r["DestinationCidrBlock"] for r in v["Routes"]],
    "route.gateway-id": lambda v: [r["GatewayId"] for r in v["Routes"]],
    "route.origin": lambda v: [r["Origin"] for r in v["Routes"]],
    "route.state": lambda v: [r["State"] for r in v["Routes"]],
}


@EC2.operation()
def create_route_table(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    assert ctx.account_id is not None
    vpc = vpcs.owned(ctx, p["VpcId"])
    table = RouteTable(id=ids.resource_id("rtb"), account_id=ctx.account_id, vpc_id=vpc.id, is_main=False)
    ctx.session.add(table)
    ctx.session.flush()
    ctx.session.add(
        Route(route_table_id=table.id, destination=vpc.cidr, gateway_id="local", origin="CreateRouteTable")
    )
    ctx.session.flush()
    tags.from_specifications(ctx.session, ctx.account_id, table.id, "route-table", p.get("TagSpecifications"))
    return {"RouteTable": view(ctx.session, table, tags.tags_of(ctx.session, [table.id])[table.id])}


@EC2.operation()
def describe_route_tables(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    vpcs.ensure_default(ctx)
    return resources.describe(
        ctx,
        p,
        RouteTable,
        ids_member="RouteTableIds",
        prefix="rtb",
        not_found=NOT_FOUND,
        order=(RouteTable.vpc_id, RouteTable.id),
        view=lambda table, tag_list: view(ctx.session, table, tag_list),
        getters=_FILTERS,
        key="RouteTables",
    )


@EC2.operation()
def delete_route_table(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    table = owned(ctx, p["RouteTableId"])
    associated = ctx.session.scalar(
        select(RouteTableAssociation.id).where(RouteTableAssociation.route_table_id == table.id).limit(1)
    )
    if table.is_main or associated is not None:
        raise CloudError(
            "DependencyViolation", f"The routeTable '{table.id}' has dependencies and cannot be deleted."
        )
    tags.remove_all(ctx.session, table.id)
    ctx.session.delete(table)
    return {}


def _destination(p: dict[str, Any]) -> str:
    resources.unsupported(p, *_TARGETS)
    if not p.get("DestinationCidrBlock"):
        raise CloudError("MissingParameter", "The request must contain the parameter destinationCidrBlock")
    try:
        return str(ipaddress.IPv4Network(p["DestinationCidrBlock"]))
    except ValueError:
        raise CloudError(
            "InvalidParameterValue",
            f"Value ({p['DestinationCidrBlock']}) for parameter destinationCidrBlock is invalid.",
        ) from None


def _gateway(ctx: RequestContext, table: RouteTable, p: dict[str, Any]) -> str:
    if not p.get("GatewayId"):
        raise CloudError(
            "MissingParameter", "A route needs a target: GatewayId (Mallee routes to gateways only)."
        )
    gateway = internet_gateways.owned(ctx, p["GatewayId"])
    if gateway.vpc_id != table.vpc_id:
        raise CloudError(
            "InvalidParameterValue",
            f"route table {table.id} and network gateway {gateway.id} belong to different networks",
        )
    return gateway.id


@EC2.operation()
def create_route(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    table = owned(ctx, p["RouteTableId"])
    destination = _destination(p)
    gateway_id = _gateway(ctx, table, p)
    if ctx.session.get(Route, (table.id, destination)) is not None:
        raise CloudError("RouteAlreadyExists", f"The route identified by {destination} already exists.")
    count = len(list(ctx.session.scalars(select(Route.destination).where(Route.route_table_id == table.id))))
    if count >= MAX_ROUTES:
        raise CloudError("RouteLimitExceeded", f"A route table has at most {MAX_ROUTES} routes.")
    ctx.session.add(
        Route(route_table_id=table.id, destination=destination, gateway_id=gateway_id, origin="CreateRoute")
    )
    return {"Return": True}


@EC2.operation()
def replace_route(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    table = owned(ctx, p["RouteTableId"])
    destination = _destination(p)
    route = ctx.session.get(Route, (table.id, destination))
    if route is None:
        raise CloudError(
            "InvalidRoute.NotFound",
            f"no route with destination-cidr-block {destination} in route table {table.id}",
        )
    if route.gateway_id == "local" and not p.get("LocalTarget"):
        raise CloudError("InvalidParameterValue", "The local route cannot be replaced.")
    if p.get("LocalTarget"):
        raise CloudError("UnsupportedOperation", "Mallee does not support LocalTarget yet.")
    route.gateway_id = _gateway(ctx, table, p)
    return {}


@EC2.operation()
def delete_route(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    table = owned(ctx, p["RouteTableId"])
    resources.unsupported(p, "DestinationIpv6CidrBlock", "DestinationPrefixListId")
    destination = _destination(p)
    route = ctx.session.get(Route, (table.id, destination))
    if route is None:
        raise CloudError(
            "InvalidRoute.NotFound",
            f"no route with destination-cidr-block {destination} in route table {table.id}",
        )
    if route.gateway_id == "local":
        raise CloudError("InvalidParameterValue", "cannot remove local route in route table")
    ctx.session.delete(route)
    return {}


@EC2.operation()
def associate_route_table(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    resources.unsupported(p, "GatewayId", "PublicIpv4Pool")
    table = owned(ctx, p["RouteTableId"])
    if not p.get("SubnetId"):
        raise CloudError("MissingParameter", "The request must contain the parameter SubnetId")
    subnet = subnets.owned(ctx, p["SubnetId"])
    if subnet.vpc_id != table.vpc_id:
        raise CloudError(
            "InvalidParameterValue",
            f"Route table {table.id} and subnet {subnet.id} belong to different networks",
        )
    existing = ctx.session.scalar(
        select(RouteTableAssociation).where(RouteTableAssociation.subnet_id == subnet.id)
    )
    if existing is not None:
        raise CloudError(
            "Resource.AlreadyAssociated",
            f"the specified association for route table {existing.route_table_id} conflicts with an "
            "existing association",
        )
    association = RouteTableAssociation(
        id=ids.resource_id("rtbassoc"), route_table_id=table.id, subnet_id=subnet.id
    )
    ctx.session.add(association)
    return {"AssociationId": association.id, "AssociationState": {"State": "associated"}}


@EC2.operation()
def disassociate_route_table(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    association_id = p["AssociationId"]
    resources.check_id(association_id, "rtbassoc", "InvalidAssociationID.Malformed")
    association = ctx.session.get(RouteTableAssociation, association_id)
    table = ctx.session.get(RouteTable, association.route_table_id) if association else None
    if association is None or table is None or table.account_id != ctx.account_id:
        raise CloudError(
            "InvalidAssociationID.NotFound", f"The association ID '{association_id}' does not exist"
        )
    ctx.session.delete(association)
    return {}


# -- network ACLs ----------------------------------------------------------------------------


def _acl_entries() -> list[dict[str, Any]]:
    entries = []
    for egress in (True, False):
        entries.append(
            {
                "CidrBlock": "0.0.0.0/0",
                "Egress": egress,
                "Protocol": "-1",
                "RuleAction": "allow",
                "RuleNumber": 100,
            }
        )
        entries.append(
            {
                "CidrBlock": "0.0.0.0/0",
                "Egress": egress,
                "Protocol": "-1",
                "RuleAction": "deny",
                "RuleNumber": 32767,
            }
        )
    return entries


def _acl_view(s: Session, acl: NetworkAcl, tag_list: list[dict[str, str]]) -> dict[str, Any]:
    subnet_ids = s.scalars(select(Subnet.id).where(Subnet.vpc_id == acl.vpc_id).order_by(Subnet.id))
    return {
        "NetworkAclId": acl.id,
        "VpcId": acl.vpc_id,
        "OwnerId": acl.account_id,
        "IsDefault": True,
        "Entries": _acl_entries(),
        "Associations": [
            {
                "NetworkAclAssociationId": "aclassoc-" + subnet_id.split("-", 1)[1],
                "NetworkAclId": acl.id,
                "SubnetId": subnet_id,
            }
            for subnet_id in subnet_ids
        ],
        "Tags": tag_list,
    }


_ACL_FILTERS: dict[str, Any] = {
    "network-acl-id": lambda v: v["NetworkAclId"],
    "vpc-id": lambda v: v["VpcId"],
    "owner-id": lambda v: v["OwnerId"],
    "default": lambda v: v["IsDefault"],
    "association.subnet-id": lambda v: [a["SubnetId"] for a in v["Associations"]],
    "association.network-acl-id": lambda v: [a["NetworkAclId"] for a in v["Associations"]],
    "entry.rule-action": lambda v: [e["RuleAction"] for e in v["Entries"]],
    "entry.cidr": lambda v: [e["CidrBlock"] for e in v["Entries"]],
    "entry.egress": lambda v: [e["Egress"] for e in v["Entries"]],
    "entry.protocol": lambda v: [e["Protocol"] for e in v["Entries"]],
    "entry.rule-number": lambda v: [e["RuleNumber"] for e in v["Entries"]],
}


@EC2.operation()
def describe_network_acls(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    vpcs.ensure_default(ctx)
    return resources.describe(
        ctx,
        p,
        NetworkAcl,
        ids_member="NetworkAclIds",
        prefix="acl",
        not_found="InvalidNetworkAclID.NotFound",
        order=(NetworkAcl.vpc_id,),
        view=lambda acl, tag_list: _acl_view(ctx.session, acl, tag_list),
        getters=_ACL_FILTERS,
        key="NetworkAcls",
    )


@EC2.operation()
def create_network_acl(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    raise CloudError(
        "UnsupportedOperation",
        "Mallee supports only each VPC's default network ACL (allow all); use security groups.",
    )
