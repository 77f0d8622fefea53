"""Subnets: CreateSubnet, DeleteSubnet, DescribeSubnets, ModifySubnetAttribute.

A subnet lies in one zone and inside its VPC's CIDR without overlapping a sibling. As on AWS its
first four addresses and its last are reserved (network, gateway, DNS, future use, broadcast), so
instances get addresses from the fifth on.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mallee.core import ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import resources, tags, vpcs, zones
from mallee.services.clc.network_tables import NetworkInterface, RouteTableAssociation, Subnet

MAX_SUBNETS = 200  # per VPC, AWS's default quota
RESERVED_AT_START = 4
RESERVED_AT_END = 1


def owned(ctx: RequestContext, subnet_id: str) -> Subnet:
    subnet: Subnet = resources.owned(ctx, Subnet, subnet_id, "subnet", "InvalidSubnetID.NotFound")
    return subnet


def usable_hosts(cidr: str) -> list[ipaddress.IPv4Address]:
    """The addresses instances may get, in order (AWS reserves the first four and the last)."""
    network = ipaddress.IPv4Network(cidr)
    first = int(network.network_address) + RESERVED_AT_START
    last = int(network.broadcast_address) - RESERVED_AT_END
    return [ipaddress.IPv4Address(n) for n in range(first, last + 1)]


def available_count(s: Session, subnet: Subnet) -> int:
    used = s.scalar(
        select(func.count()).select_from(NetworkInterface).where(NetworkInterface.subnet_id == subnet.id)
    )
    network = ipaddress.IPv4Network(subnet.cidr)
    return max(0, network.num_addresses - RESERVED_AT_START - RESERVED_AT_END - int(used or 0))


def view(
    s: Session, subnet: Subnet, tag_list: list[dict[str, str]], zone_ids: dict[str, str]
) -> dict[str, Any]:
    return {
        "SubnetId": subnet.id,
        "SubnetArn": f"arn:aws:ec2::{subnet.account_id}:subnet/{subnet.id}",
        "VpcId": subnet.vpc_id,
        "OwnerId": subnet.account_id,
        "State": "available",
        "CidrBlock": subnet.cidr,
        "AvailabilityZone": subnet.zone,
        "AvailabilityZoneId": zone_ids.get(subnet.zone, subnet.zone),
        "AvailableIpAddressCount": available_count(s, subnet),
        "DefaultForAz": subnet.default_for_az,
        "MapPublicIpOnLaunch": subnet.map_public_ip_on_launch,
        "AssignIpv6AddressOnCreation": False,
        "Ipv6CidrBlockAssociationSet": [],
        "Tags": tag_list,
    }


def zone_ids(ctx: RequestContext) -> dict[str, str]:
    """Zone name -> zone id, as DescribeAvailabilityZones numbers them."""
    return zones.zone_ids(ctx.session, ctx.region)


_FILTERS: dict[str, Any] = {
    "subnet-id": lambda v: v["SubnetId"],
    "vpc-id": lambda v: v["VpcId"],
    "cidr-block": lambda v: v["CidrBlock"],
    "cidr": lambda v: v["CidrBlock"],
    "cidrBlock": lambda v: v["CidrBlock"],
    "availability-zone": lambda v: v["AvailabilityZone"],
    "availabilityZone": lambda v: v["AvailabilityZone"],
    "availability-zone-id": lambda v: v["AvailabilityZoneId"],
    "available-ip-address-count": lambda v: v["AvailableIpAddressCount"],
    "default-for-az": lambda v: v["DefaultForAz"],
    "defaultForAz": lambda v: v["DefaultForAz"],
    "map-public-ip-on-launch": lambda v: v["MapPublicIpOnLaunch"],
    "owner-id": lambda v: v["OwnerId"],
    "state": lambda v: v["State"],
    "subnet-arn": lambda v: v["SubnetArn"],
}


@EC2.operation()
def create_subnet(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    resources.unsupported(
        p,
        "Ipv6CidrBlock",
        "Ipv6Native",
        "OutpostArn",
        "Ipv4IpamPoolId",
        "Ipv4NetmaskLength",
        "Ipv6IpamPoolId",
    )
    assert ctx.account_id is not None
    s = ctx.session
    vpc = vpcs.owned(ctx, p["VpcId"])
    if not p.get("CidrBlock"):
        raise CloudError("MissingParameter", "The request must contain the parameter CidrBlock")
    network = vpcs.check_cidr(p["CidrBlock"], what="subnet")
    if not network.subnet_of(ipaddress.IPv4Network(vpc.cidr)):
        raise CloudError("InvalidSubnet.Range", f"The CIDR '{network}' is invalid.")
    siblings = list(s.scalars(select(Subnet).where(Subnet.vpc_id == vpc.id)))
    if any(network.overlaps(ipaddress.IPv4Network(n.cidr)) for n in siblings):
        raise CloudError("InvalidSubnet.Conflict", f"The CIDR '{network}' conflicts with another subnet")
    if len(siblings) >= MAX_SUBNETS:
        raise CloudError("SubnetLimitExceeded", f"A VPC has at most {MAX_SUBNETS} subnets.")
    names = zone_ids(ctx)
    zone = p.get("AvailabilityZone")
    if zone is None and p.get("AvailabilityZoneId"):
        zone = next((name for name, zid in names.items() if zid == p["AvailabilityZoneId"]), None)
        if zone is None:
            raise CloudError(
                "InvalidParameterValue", f"Invalid availability zone id: [{p['AvailabilityZoneId']}]"
            )
    zone = zone or next(iter(names), None)
    if zone not in names:
        raise CloudError(
            "InvalidParameterValue", f"Value ({zone}) for parameter availabilityZone is invalid."
        )
    subnet = Subnet(
        id=ids.resource_id("subnet"),
        account_id=ctx.account_id,
        vpc_id=vpc.id,
        zone=zone,
        cidr=str(network),
        default_for_az=False,
        map_public_ip_on_launch=False,
    )
    s.add(subnet)
    s.flush()
    tags.from_specifications(s, ctx.account_id, subnet.id, "subnet", p.get("TagSpecifications"))
    return {"Subnet": view(s, subnet, tags.tags_of(s, [subnet.id])[subnet.id], names)}


@EC2.operation()
def describe_subnets(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    vpcs.ensure_default(ctx)
    names = zone_ids(ctx)
    return resources.describe(
        ctx,
        p,
        Subnet,
        ids_member="SubnetIds",
        prefix="subnet",
        not_found="InvalidSubnetID.NotFound",
        order=(Subnet.vpc_id, Subnet.cidr),
        view=lambda subnet, tag_list: view(ctx.session, subnet, tag_list, names),
        getters=_FILTERS,
        key="Subnets",
    )


@EC2.operation()
def delete_subnet(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    subnet = owned(ctx, p["SubnetId"])
    in_use = ctx.session.scalar(
        select(NetworkInterface.id).where(NetworkInterface.subnet_id == subnet.id).limit(1)
    )
    if in_use is not None:
        raise CloudError(
            "DependencyViolation", f"The subnet '{subnet.id}' has dependencies and cannot be deleted."
        )
    for association in ctx.session.scalars(
        select(RouteTableAssociation).where(RouteTableAssociation.subnet_id == subnet.id)
    ):
        ctx.session.delete(association)
    tags.remove_all(ctx.session, subnet.id)
    ctx.session.delete(subnet)
    return {}


@EC2.operation()
def modify_subnet_attribute(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    subnet = owned(ctx, p["SubnetId"])
    resources.unsupported(
        p,
        "AssignIpv6AddressOnCreation",
        "MapCustomerOwnedIpOnLaunch",
        "CustomerOwnedIpv4Pool",
        "EnableDns64",
        "PrivateDnsHostnameTypeOnLaunch",
        "EnableResourceNameDnsARecordOnLaunch",
        "EnableResourceNameDnsAAAARecordOnLaunch",
        "EnableLniAtDeviceIndex",
        "DisableLniAtDeviceIndex",
    )
    if p.get("MapPublicIpOnLaunch") is None:
        raise CloudError("MissingParameter", "The request must contain the parameter MapPublicIpOnLaunch")
    subnet.map_public_ip_on_launch = bool(p["MapPublicIpOnLaunch"].get("Value"))
    return {}
