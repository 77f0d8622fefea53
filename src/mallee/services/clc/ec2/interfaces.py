"""Instances' network interfaces: where RunInstances puts an instance (subnet, groups, addresses)
and what its termination gives back.

An instance has one primary interface (eni-…) in one subnet: a private address of that subnet
(AWS reserves its first four and its last), a MAC, up to five security groups of the VPC, and a
public address from the cloud's pool when its subnet maps one on launch or the caller asks. All of
it is recorded with the instance before anyone is asked (record, then ask), under a lock per
subnet and one for the public pool, so a crash or a retry never hands an address out twice.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core import clock, ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.db.session import hold_write_lock
from mallee.services.clc.ec2 import resources, security_groups, subnets, vpcs, zones
from mallee.services.clc.network_tables import NetworkInterface, PublicAddress, SecurityGroup, Subnet, Vpc
from mallee.services.clc.tables import Instance

MAX_GROUPS = 5  # per interface, AWS's default quota


@dataclass(frozen=True)
class Placement:
    """Where a RunInstances call puts its instances."""

    vpc: Vpc
    subnet: Subnet
    groups: list[SecurityGroup]
    public: bool  # each gets a public address from the pool
    private_ip: str | None  # asked for (MaxCount 1 only)


def _spec(p: dict[str, Any]) -> dict[str, Any]:
    """RunInstances' network members, from the flat form or its NetworkInterfaces[0]."""
    resources.unsupported(p, "Ipv6Addresses", "Ipv6AddressCount")
    given = p.get("NetworkInterfaces") or []
    if not given:
        return {
            "SubnetId": p.get("SubnetId"),
            "GroupIds": p.get("SecurityGroupIds") or [],
            "GroupNames": p.get("SecurityGroups") or [],
            "PrivateIpAddress": p.get("PrivateIpAddress"),
            "AssociatePublicIpAddress": None,
        }
    if len(given) > 1 or given[0].get("DeviceIndex", 0) != 0:
        raise CloudError("UnsupportedOperation", "Mallee gives an instance one network interface (device 0).")
    nic = given[0]
    resources.unsupported(
        nic, "NetworkInterfaceId", "SecondaryPrivateIpAddressCount", "PrivateIpAddresses", "Ipv6Addresses"
    )
    if p.get("SubnetId") or p.get("SecurityGroupIds") or p.get("PrivateIpAddress"):
        raise CloudError(
            "InvalidParameterCombination",
            "Network interfaces and an instance-level subnet, security groups or private address "
            "cannot be specified on the same request",
        )
    return {
        "SubnetId": nic.get("SubnetId"),
        "GroupIds": nic.get("Groups") or [],
        "GroupNames": p.get("SecurityGroups") or [],
        "PrivateIpAddress": nic.get("PrivateIpAddress"),
        "AssociatePublicIpAddress": nic.get("AssociatePublicIpAddress"),
    }


def place(ctx: RequestContext, p: dict[str, Any], zone: str | None, count: int) -> Placement:
    """The subnet, groups and public-address choice of a RunInstances call (all checked)."""
    spec = _spec(p)
    if spec["SubnetId"]:
        subnet = subnets.owned(ctx, spec["SubnetId"])
        if zone and zone != subnet.zone:
            raise CloudError(
                "InvalidParameterValue", f"The subnet {subnet.id} is in {subnet.zone}, not in {zone}."
            )
        vpc = vpcs.owned(ctx, subnet.vpc_id)
    else:
        default = vpcs.ensure_default(ctx)
        if default is None:
            raise CloudError("VPCIdNotSpecified", "No default VPC for this user; give a SubnetId.")
        vpc = default
        known = zones.zone_ids(ctx.session, ctx.region)
        if zone and zone not in known:
            raise CloudError("InvalidParameterValue", f"Invalid availability zone: [{zone}]")
        found = ctx.session.scalars(
            select(Subnet).where(Subnet.vpc_id == vpc.id, Subnet.default_for_az.is_(True))
        ).all()
        # Without a zone, the first registered one's (the CLC's own), as before a second existed.
        rank = {name: index for index, name in enumerate(known)}
        found = sorted(found, key=lambda n: rank.get(n.zone, len(rank)))
        chosen = next((n for n in found if zone in (None, n.zone)), None)
        if chosen is None:
            raise CloudError("MissingInput", f"No default subnet for availability zone: '{zone}'.")
        subnet = chosen
    groups = [security_groups.by_id(ctx, g) for g in spec["GroupIds"]]
    for name in spec["GroupNames"]:
        if not vpc.is_default:
            raise CloudError(
                "InvalidParameterCombination",
                "The parameter groupName cannot be used with the parameter subnet",
            )
        groups.append(security_groups.by_name(ctx, name))
    if not groups:
        groups = [
            ctx.session.scalars(
                select(SecurityGroup).where(SecurityGroup.vpc_id == vpc.id, SecurityGroup.name == "default")
            ).one()
        ]
    for group in groups:
        if group.vpc_id != vpc.id:
            raise CloudError(
                "InvalidParameter",
                f"Security group {group.id} and subnet {subnet.id} belong to different networks.",
            )
    unique = list({g.id: g for g in groups}.values())
    if len(unique) > MAX_GROUPS:
        raise CloudError("SecurityGroupsPerInterfaceLimitExceeded", f"At most {MAX_GROUPS} security groups.")
    asked = spec["AssociatePublicIpAddress"]
    private_ip = spec["PrivateIpAddress"]
    if private_ip and count > 1:
        raise CloudError(
            "InvalidParameterCombination", "A private address can be given for one instance only."
        )
    public = subnet.map_public_ip_on_launch if asked is None else bool(asked)
    return Placement(vpc, subnet, unique, public, private_ip)


def _free_addresses(s: Session, subnet: Subnet) -> Iterator[str]:
    used = set(s.scalars(select(NetworkInterface.private_ip).where(NetworkInterface.subnet_id == subnet.id)))
    return (str(a) for a in subnets.usable_hosts(subnet.cidr) if str(a) not in used)


def attach(
    s: Session, placement: Placement, records: list[Instance], public_pool: list[str]
) -> dict[str, NetworkInterface]:
    """Give each of `records` (new, not yet added) its primary interface in the placement's
    subnet; an id whose MAC an interface has already is replaced by a new id. Instance id -> its
    interface."""
    subnet = placement.subnet
    hold_write_lock(s, [f"subnet-addresses:{subnet.id}"])
    if placement.private_ip:
        _check_private_ip(s, subnet, placement.private_ip)
        free: Iterator[str] = iter([placement.private_ip])
    else:
        free = _free_addresses(s, subnet)
    group_ids = json.dumps([g.id for g in placement.groups])
    made: dict[str, NetworkInterface] = {}
    for record in records:
        ip = next(free, None)
        if ip is None:
            raise CloudError(
                "InsufficientFreeAddressesInSubnet", f"The subnet {subnet.id} has no free addresses left."
            )
        while s.scalar(select(NetworkInterface.id).where(NetworkInterface.mac == ids.mac_for(record.id))):
            record.id = ids.resource_id("i")
        record.private_ip, record.mac = ip, ids.mac_for(record.id)
        record.vpc_id, record.subnet_id = placement.vpc.id, subnet.id
        record.security_groups = json.dumps([g.name for g in placement.groups])
        interface = NetworkInterface(
            id=ids.resource_id("eni"),
            account_id=record.account_id,
            vpc_id=placement.vpc.id,
            subnet_id=subnet.id,
            instance_id=record.id,
            device_index=0,
            mac=record.mac,
            private_ip=ip,
            description="Primary network interface",
            status="in-use",
            delete_on_termination=True,
            source_dest_check=True,
            group_ids=group_ids,
        )
        s.add(interface)
        made[record.id] = interface
        if placement.public:
            public_ip(s, record.account_id, interface, public_pool)
    s.flush()
    return made


def _check_private_ip(s: Session, subnet: Subnet, wanted: str) -> None:
    try:
        address = ipaddress.IPv4Address(wanted)
    except ValueError:
        raise CloudError("InvalidParameterValue", f"Invalid private address: {wanted}") from None
    if address not in subnets.usable_hosts(subnet.cidr):
        raise CloudError(
            "InvalidParameterValue", f"Address {wanted} does not fall within the subnet's usable range."
        )
    if s.scalar(
        select(NetworkInterface.id).where(
            NetworkInterface.subnet_id == subnet.id, NetworkInterface.private_ip == wanted
        )
    ):
        raise CloudError("InvalidIPAddress.InUse", f"Address {wanted} is in use.")


def public_ip(s: Session, account_id: str, interface: NetworkInterface, pool: list[str]) -> PublicAddress:
    """An automatic public address for `interface` (released with its instance)."""
    address = PublicAddress(
        public_ip=take_from_pool(s, pool),
        account_id=account_id,
        interface_id=interface.id,
        private_ip=interface.private_ip,
        created=clock.now(),
    )
    s.add(address)
    s.flush()
    return address


def take_from_pool(s: Session, pool: list[str]) -> str:
    """A free address of the cloud's public pool (held under the pool's lock until commit)."""
    hold_write_lock(s, ["public-addresses"])
    used = set(s.scalars(select(PublicAddress.public_ip)))
    address = next((a for a in pool if a not in used), None)
    if address is None:
        raise CloudError("InsufficientAddressCapacity", "The cloud's public address pool is exhausted.")
    return address


def release(s: Session, instance: Instance) -> None:
    """What an instance's termination gives back: its interfaces (those to delete with it), their
    automatic public addresses, and the association of any elastic address."""
    for interface in s.scalars(select(NetworkInterface).where(NetworkInterface.instance_id == instance.id)):
        for address in s.scalars(select(PublicAddress).where(PublicAddress.interface_id == interface.id)):
            if address.allocation_id is None:
                s.delete(address)
            else:
                address.interface_id = address.association_id = address.private_ip = None
        if interface.delete_on_termination:
            s.delete(interface)
        else:
            interface.instance_id, interface.status = None, "available"


def primary(s: Session, instance_ids: list[str]) -> dict[str, tuple[NetworkInterface, str | None]]:
    """Instance id -> (its primary interface, its public address) for the views."""
    if not instance_ids:
        return {}
    rows = s.execute(
        select(NetworkInterface, PublicAddress.public_ip)
        .outerjoin(PublicAddress, PublicAddress.interface_id == NetworkInterface.id)
        .where(NetworkInterface.instance_id.in_(instance_ids), NetworkInterface.device_index == 0)
    ).all()
    return {eni.instance_id: (eni, ip) for eni, ip in rows if eni.instance_id}


def set_groups(ctx: RequestContext, instance: Instance, group_ids: list[str]) -> None:
    """ModifyInstanceAttribute's groupSet: the primary interface's groups, all of its VPC."""
    found = primary(ctx.session, [instance.id]).get(instance.id)
    if found is None:
        raise CloudError("InvalidInstanceID", f"The instance '{instance.id}' is not in a VPC.")
    eni = found[0]
    if not group_ids:
        raise CloudError("MissingParameter", "The request must contain the parameter groupId")
    groups = [security_groups.by_id(ctx, g) for g in dict.fromkeys(group_ids)]
    if any(g.vpc_id != eni.vpc_id for g in groups):
        raise CloudError("InvalidGroup.NotFound", "A security group does not belong to the instance's VPC.")
    if len(groups) > MAX_GROUPS:
        raise CloudError("SecurityGroupsPerInterfaceLimitExceeded", f"At most {MAX_GROUPS} security groups.")
    eni.group_ids = json.dumps([g.id for g in groups])
    instance.security_groups = json.dumps([g.name for g in groups])
