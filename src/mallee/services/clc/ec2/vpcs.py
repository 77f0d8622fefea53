"""VPCs: CreateVpc, DeleteVpc, DescribeVpcs, CreateDefaultVpc, Describe/ModifyVpcAttribute, and
every account's default VPC.

A VPC is born with its main route table (the `local` route), its default network ACL (allow all)
and its default security group (members reach each other; all egress). The default VPC is
172.31.0.0/16, as on AWS, with an internet gateway, a default /20 subnet per zone that maps public
addresses on launch, and 0.0.0.0/0 to the gateway in its main table. It is made the first time an
account uses EC2's network (`ensure_default`), once: an account that deletes it gets a new one
only from CreateDefaultVpc. Zones that register later get their default subnet the same way.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mallee.core import clock, ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.db.session import hold_write_lock
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import resources, tags
from mallee.services.clc.network_tables import (
    InternetGateway,
    NetworkAcl,
    NetworkInterface,
    Route,
    RouteTable,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
    Vpc,
)
from mallee.services.clc.tables import Account, Cluster

DEFAULT_CIDR = "172.31.0.0/16"
DEFAULT_SUBNET_PREFIX = 20
MAX_VPCS = 5  # AWS's default quota per region
MAX_VNI = 2**24 - 1
# Ranges a VPC cannot use: the metadata service's, loopback, multicast and reserved space.
_FORBIDDEN = [ipaddress.ip_network(n) for n in ("169.254.0.0/16", "127.0.0.0/8", "224.0.0.0/3", "0.0.0.0/8")]


def check_cidr(
    cidr: str, *, smallest: int = 28, largest: int = 16, what: str = "VPC"
) -> ipaddress.IPv4Network:
    """A CIDR block AWS accepts for a VPC or subnet: a network address, /16 to /28."""
    try:
        network = ipaddress.IPv4Network(cidr)
    except ValueError:
        raise CloudError(
            "InvalidParameterValue",
            f"Value ({cidr}) for parameter cidrBlock is invalid. This is not a valid CIDR block.",
        ) from None
    if not largest <= network.prefixlen <= smallest:
        code = "InvalidVpc.Range" if what == "VPC" else "InvalidSubnet.Range"
        raise CloudError(code, f"The CIDR '{cidr}' is invalid: a {what} is a /{largest} to a /{smallest}.")
    if any(network.overlaps(bad) for bad in _FORBIDDEN):
        raise CloudError("InvalidVpc.Range", f"The CIDR '{cidr}' is in a range no VPC may use.")
    return network


def owned(ctx: RequestContext, vpc_id: str) -> Vpc:
    vpc: Vpc = resources.owned(ctx, Vpc, vpc_id, "vpc", "InvalidVpcID.NotFound")
    return vpc


# -- building --------------------------------------------------------------------------------


def _next_vni(s: Session) -> int:
    hold_write_lock(s, ["vpc-vni"])
    highest = s.scalar(select(func.max(Vpc.vni))) or 0
    if highest >= MAX_VNI:
        raise CloudError("VpcLimitExceeded", "This cloud has no VXLAN network identifiers left.")
    return int(highest) + 1


def create(
    s: Session, account_id: str, cidr: str, *, is_default: bool = False, tenancy: str = "default"
) -> Vpc:
    """A VPC with its main route table, default network ACL and default security group."""
    vpc = Vpc(
        id=ids.resource_id("vpc"),
        account_id=account_id,
        cidr=cidr,
        is_default=is_default,
        vni=_next_vni(s),
        enable_dns_support=True,
        enable_dns_hostnames=is_default,
        tenancy=tenancy,
        created=clock.now(),
    )
    s.add(vpc)
    s.flush()
    table = RouteTable(id=ids.resource_id("rtb"), account_id=account_id, vpc_id=vpc.id, is_main=True)
    s.add(table)
    s.flush()
    s.add(Route(route_table_id=table.id, destination=cidr, gateway_id="local", origin="CreateRouteTable"))
    s.add(NetworkAcl(id=ids.resource_id("acl"), account_id=account_id, vpc_id=vpc.id))
    group = SecurityGroup(
        id=ids.resource_id("sg"),
        account_id=account_id,
        vpc_id=vpc.id,
        name="default",
        description="default VPC security group",
    )
    s.add(group)
    s.flush()
    s.add(_rule(group.id, egress=False, referenced=group.id))
    s.add(_rule(group.id, egress=True, cidr="0.0.0.0/0"))
    s.flush()
    return vpc


def _rule(
    group_id: str, *, egress: bool, cidr: str | None = None, referenced: str | None = None
) -> SecurityGroupRule:
    return SecurityGroupRule(
        id=ids.resource_id("sgr"),
        group_id=group_id,
        is_egress=egress,
        protocol="-1",
        from_port=-1,
        to_port=-1,
        cidr=cidr,
        referenced_group_id=referenced,
        description="",
    )


def default_egress_rule(group_id: str) -> SecurityGroupRule:
    """What every new security group starts with: all traffic out."""
    return _rule(group_id, egress=True, cidr="0.0.0.0/0")


def _create_default(s: Session, account_id: str) -> Vpc:
    vpc = create(s, account_id, DEFAULT_CIDR, is_default=True)
    gateway = InternetGateway(id=ids.resource_id("igw"), account_id=account_id, vpc_id=vpc.id)
    s.add(gateway)
    main = s.scalar(select(RouteTable).where(RouteTable.vpc_id == vpc.id, RouteTable.is_main.is_(True)))
    assert main is not None
    s.add(Route(route_table_id=main.id, destination="0.0.0.0/0", gateway_id=gateway.id, origin="CreateRoute"))
    s.flush()
    return vpc


def _add_default_subnets(s: Session, vpc: Vpc, *, newer_than: _dt.datetime | None = None) -> None:
    """A default subnet in each zone (registered after `newer_than`, if given) that has none yet,
    taking the VPC's /20s in order."""
    q = select(Cluster.zone).order_by(Cluster.zone)
    if newer_than is not None:
        q = q.where(Cluster.created > newer_than)
    zones = list(s.scalars(q))
    subnets = list(s.scalars(select(Subnet).where(Subnet.vpc_id == vpc.id)))
    covered = {n.zone for n in subnets if n.default_for_az}
    taken = [ipaddress.IPv4Network(n.cidr) for n in subnets]
    free = (
        block
        for block in ipaddress.IPv4Network(vpc.cidr).subnets(new_prefix=DEFAULT_SUBNET_PREFIX)
        if not any(block.overlaps(t) for t in taken)
    )
    for zone in zones:
        if zone in covered:
            continue
        block = next(free, None)
        if block is None:
            return
        s.add(
            Subnet(
                id=ids.resource_id("subnet"),
                account_id=vpc.account_id,
                vpc_id=vpc.id,
                zone=zone,
                cidr=str(block),
                default_for_az=True,
                map_public_ip_on_launch=True,
            )
        )
    s.flush()


def ensure_default(ctx: RequestContext) -> Vpc | None:
    """The caller's default VPC, made on first use; None when the account deleted it."""
    s, account_id = ctx.session, ctx.account_id
    assert account_id is not None
    account = s.get(Account, account_id)
    if account is None:
        return None
    if not account.default_vpc_made:
        hold_write_lock(s, [f"default-vpc:{account_id}"])
        s.refresh(account)
        if not account.default_vpc_made:
            _add_default_subnets(s, _create_default(s, account_id))
            account.default_vpc_made = True
            s.flush()
    vpc: Vpc | None = s.scalar(select(Vpc).where(Vpc.account_id == account_id, Vpc.is_default.is_(True)))
    if vpc is not None:
        # A zone that registers later gets its default subnet too (one the user deleted does not).
        zones = set(s.scalars(select(Cluster.zone).where(Cluster.created > vpc.created)))
        covered = set(
            s.scalars(select(Subnet.zone).where(Subnet.vpc_id == vpc.id, Subnet.default_for_az.is_(True)))
        )
        if zones - covered:
            hold_write_lock(s, [f"default-vpc:{account_id}"])
            _add_default_subnets(s, vpc, newer_than=vpc.created)
    return vpc


# -- views -----------------------------------------------------------------------------------


def view(vpc: Vpc, tag_list: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "VpcId": vpc.id,
        "OwnerId": vpc.account_id,
        "State": "available",
        "CidrBlock": vpc.cidr,
        "CidrBlockAssociationSet": [
            {
                "AssociationId": "vpc-cidr-assoc-" + vpc.id.split("-", 1)[1],
                "CidrBlock": vpc.cidr,
                "CidrBlockState": {"State": "associated"},
            }
        ],
        "DhcpOptionsId": "default",
        "InstanceTenancy": vpc.tenancy,
        "IsDefault": vpc.is_default,
        "Tags": tag_list,
    }


_FILTERS: dict[str, Any] = {
    "vpc-id": lambda v: v["VpcId"],
    "cidr": lambda v: v["CidrBlock"],
    "cidr-block-association.cidr-block": lambda v: v["CidrBlock"],
    "dhcp-options-id": lambda v: v["DhcpOptionsId"],
    "is-default": lambda v: v["IsDefault"],
    "owner-id": lambda v: v["OwnerId"],
    "state": lambda v: v["State"],
}


# -- handlers --------------------------------------------------------------------------------


@EC2.operation()
def create_vpc(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    resources.unsupported(
        p,
        "AmazonProvidedIpv6CidrBlock",
        "Ipv6CidrBlock",
        "Ipv6Pool",
        "Ipv4IpamPoolId",
        "Ipv4NetmaskLength",
        "Ipv6IpamPoolId",
        "Ipv6NetmaskLength",
        "VpcEncryptionControl",
    )
    assert ctx.account_id is not None
    ensure_default(ctx)
    if not p.get("CidrBlock"):
        raise CloudError("MissingParameter", "The request must contain the parameter CidrBlock")
    network = check_cidr(p["CidrBlock"])
    tenancy = p.get("InstanceTenancy") or "default"
    if tenancy != "default":
        raise CloudError("UnsupportedOperation", f"Mallee does not support {tenancy} tenancy.")
    count = ctx.session.scalar(select(func.count()).select_from(Vpc).where(Vpc.account_id == ctx.account_id))
    if (count or 0) >= MAX_VPCS:
        raise CloudError("VpcLimitExceeded", f"The maximum number of VPCs ({MAX_VPCS}) has been reached.")
    vpc = create(ctx.session, ctx.account_id, str(network))
    tags.from_specifications(ctx.session, ctx.account_id, vpc.id, "vpc", p.get("TagSpecifications"))
    return {"Vpc": view(vpc, tags.tags_of(ctx.session, [vpc.id])[vpc.id])}


@EC2.operation()
def create_default_vpc(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    assert ctx.account_id is not None
    if ensure_default(ctx) is not None:
        raise CloudError("DefaultVpcAlreadyExists", "A default VPC already exists for this account.")
    vpc = _create_default(ctx.session, ctx.account_id)
    _add_default_subnets(ctx.session, vpc)
    return {"Vpc": view(vpc, [])}


@EC2.operation()
def describe_vpcs(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    ensure_default(ctx)
    return resources.describe(
        ctx,
        p,
        Vpc,
        ids_member="VpcIds",
        prefix="vpc",
        not_found="InvalidVpcID.NotFound",
        order=(Vpc.created, Vpc.id),
        view=view,
        getters=_FILTERS,
        key="Vpcs",
    )


def dependents(s: Session, vpc: Vpc) -> str | None:
    """What keeps a VPC from being deleted (AWS's DependencyViolation), or None."""
    checks: list[tuple[Any, str]] = [
        (select(Subnet.id).where(Subnet.vpc_id == vpc.id), "subnets"),
        (select(InternetGateway.id).where(InternetGateway.vpc_id == vpc.id), "an attached internet gateway"),
        (
            select(SecurityGroup.id).where(SecurityGroup.vpc_id == vpc.id, SecurityGroup.name != "default"),
            "security groups",
        ),
        (
            select(RouteTable.id).where(RouteTable.vpc_id == vpc.id, RouteTable.is_main.is_(False)),
            "route tables",
        ),
        (select(NetworkInterface.id).where(NetworkInterface.vpc_id == vpc.id), "network interfaces"),
    ]
    for query, what in checks:
        if s.scalar(query.limit(1)) is not None:
            return what
    return None


@EC2.operation()
def delete_vpc(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    vpc = owned(ctx, p["VpcId"])
    blocker = dependents(ctx.session, vpc)
    if blocker is not None:
        raise CloudError(
            "DependencyViolation", f"The vpc '{vpc.id}' has dependencies ({blocker}) and cannot be deleted."
        )
    for row_id in ctx.session.scalars(select(SecurityGroup.id).where(SecurityGroup.vpc_id == vpc.id)):
        tags.remove_all(ctx.session, row_id)
    tags.remove_all(ctx.session, vpc.id)
    ctx.session.delete(vpc)  # its main route table, network ACL and default group go with it
    return {}


@EC2.operation()
def describe_vpc_attribute(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    vpc = owned(ctx, p["VpcId"])
    attribute = p["Attribute"]
    values = {
        "enableDnsSupport": ("EnableDnsSupport", vpc.enable_dns_support),
        "enableDnsHostnames": ("EnableDnsHostnames", vpc.enable_dns_hostnames),
        "enableNetworkAddressUsageMetrics": ("EnableNetworkAddressUsageMetrics", False),
    }
    if attribute not in values:
        raise CloudError("InvalidParameterValue", f"Value ({attribute}) for parameter attribute is invalid.")
    key, value = values[attribute]
    return {"VpcId": vpc.id, key: {"Value": value}}


@EC2.operation()
def modify_vpc_attribute(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    vpc = owned(ctx, p["VpcId"])
    resources.unsupported(p, "EnableNetworkAddressUsageMetrics")
    given = [k for k in ("EnableDnsSupport", "EnableDnsHostnames") if p.get(k) is not None]
    if len(given) != 1:
        raise CloudError(
            "InvalidParameterCombination", "Exactly one of EnableDnsSupport and EnableDnsHostnames is needed."
        )
    value = bool((p[given[0]] or {}).get("Value"))
    if given[0] == "EnableDnsSupport":
        vpc.enable_dns_support = value
    else:
        vpc.enable_dns_hostnames = value
    return {}
