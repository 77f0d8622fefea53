"""Elastic IPs: AllocateAddress, AssociateAddress, DisassociateAddress, ReleaseAddress,
DescribeAddresses, DescribeAddressesAttribute — VPC addresses (`eipalloc-`) from the cloud's public
pool (Config.public_ips, Eucalyptus' PUBLIC_IPS), at most `max-elastic-ips` per account.

An elastic IP associated with an interface replaces that interface's automatic public address (which
goes back to the pool, as on AWS); nodes map it 1:1 to the private address. The instance's VPC must
have an internet gateway attached.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from mallee.core import clock, ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc import peers
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import interfaces, resources, tags
from mallee.services.clc.ec2.instance_views import public_dns
from mallee.services.clc.network_tables import InternetGateway, NetworkInterface, PublicAddress
from mallee.services.clc.tables import Instance

MAX_ADDRESSES = 5  # describe-account-attributes' max-elastic-ips


def _allocated(ctx: RequestContext, p: dict[str, Any]) -> PublicAddress:
    """The caller's elastic IP named by AllocationId or PublicIp."""
    s = ctx.session
    address: PublicAddress | None
    if p.get("AllocationId"):
        resources.check_id(p["AllocationId"], "eipalloc", "InvalidAllocationID.Malformed")
        address = s.scalar(select(PublicAddress).where(PublicAddress.allocation_id == p["AllocationId"]))
        if address is None or address.account_id != ctx.account_id:
            raise CloudError(
                "InvalidAllocationID.NotFound", f"The allocation ID '{p['AllocationId']}' does not exist"
            )
        return address
    if p.get("PublicIp"):
        address = s.get(PublicAddress, p["PublicIp"])
        if address is None or address.account_id != ctx.account_id or address.allocation_id is None:
            raise CloudError("InvalidAddress.NotFound", f"Address {p['PublicIp']} not found.")
        return address
    raise CloudError("MissingParameter", "Either public IP or allocation id must be specified")


def view(address: PublicAddress, tag_list: list[dict[str, str]], s: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "PublicIp": address.public_ip,
        "AllocationId": address.allocation_id,
        "Domain": "vpc",
        "PublicIpv4Pool": "mallee",
        "NetworkBorderGroup": "",
        "Tags": tag_list,
    }
    if address.interface_id:
        eni = s.get(NetworkInterface, address.interface_id)
        out["AssociationId"] = address.association_id
        out["NetworkInterfaceId"] = address.interface_id
        out["NetworkInterfaceOwnerId"] = address.account_id
        out["PrivateIpAddress"] = address.private_ip
        if eni is not None:
            out["SubnetId"] = eni.subnet_id
            if eni.instance_id:
                out["InstanceId"] = eni.instance_id
    return out


_FILTERS: dict[str, Any] = {
    "allocation-id": lambda v: v["AllocationId"],
    "association-id": lambda v: v.get("AssociationId"),
    "domain": lambda v: v["Domain"],
    "instance-id": lambda v: v.get("InstanceId"),
    "network-interface-id": lambda v: v.get("NetworkInterfaceId"),
    "network-interface-owner-id": lambda v: v.get("NetworkInterfaceOwnerId"),
    "private-ip-address": lambda v: v.get("PrivateIpAddress"),
    "public-ip": lambda v: v["PublicIp"],
}


@EC2.operation()
def allocate_address(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    assert ctx.account_id is not None
    resources.unsupported(p, "PublicIpv4Pool", "NetworkBorderGroup", "CustomerOwnedIpv4Pool", "IpamPoolId")
    if (p.get("Domain") or "vpc") != "vpc":
        raise CloudError(
            "UnsupportedOperation", "EC2-Classic addresses (Domain standard) are retired; use vpc."
        )
    s = ctx.session
    count = s.scalar(
        select(func.count())
        .select_from(PublicAddress)
        .where(PublicAddress.account_id == ctx.account_id, PublicAddress.allocation_id.is_not(None))
    )
    if (count or 0) >= MAX_ADDRESSES:
        raise CloudError("AddressLimitExceeded", "The maximum number of addresses has been reached.")
    pool = peers.get().public_pool
    if p.get("Address"):
        if p["Address"] not in pool:
            raise CloudError(
                "InvalidParameterValue", f"The address {p['Address']} is not in the cloud's public pool."
            )
        interfaces.take_from_pool(s, [p["Address"]])
        ip = p["Address"]
    else:
        ip = interfaces.take_from_pool(s, pool)
    address = PublicAddress(
        public_ip=ip,
        account_id=ctx.account_id,
        allocation_id=ids.resource_id("eipalloc"),
        created=clock.now(),
    )
    s.add(address)
    s.flush()
    tags.from_specifications(
        s, ctx.account_id, str(address.allocation_id), "elastic-ip", p.get("TagSpecifications")
    )
    return {
        "PublicIp": ip,
        "AllocationId": address.allocation_id,
        "Domain": "vpc",
        "PublicIpv4Pool": "mallee",
        "NetworkBorderGroup": "",
    }


def _target(ctx: RequestContext, p: dict[str, Any]) -> NetworkInterface:
    s = ctx.session
    if p.get("NetworkInterfaceId"):
        eni: NetworkInterface = resources.owned(
            ctx, NetworkInterface, p["NetworkInterfaceId"], "eni", "InvalidNetworkInterfaceID.NotFound"
        )
        return eni
    if not p.get("InstanceId"):
        raise CloudError(
            "MissingParameter", "Either an instance ID or a network interface ID must be specified"
        )
    instance = s.get(Instance, p["InstanceId"])
    if instance is None or instance.account_id != ctx.account_id or instance.state == "terminated":
        raise CloudError("InvalidInstanceID.NotFound", f"The instance ID '{p['InstanceId']}' does not exist")
    found = interfaces.primary(s, [instance.id]).get(instance.id)
    if found is None:
        raise CloudError("InvalidInstanceID", f"The instance '{instance.id}' is not in a VPC.")
    return found[0]


@EC2.operation()
def associate_address(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s = ctx.session
    address = _allocated(ctx, p)
    eni = _target(ctx, p)
    if p.get("PrivateIpAddress") not in (None, eni.private_ip):
        raise CloudError(
            "InvalidParameterValue", f"The interface has no private address {p['PrivateIpAddress']}."
        )
    if s.scalar(select(InternetGateway.id).where(InternetGateway.vpc_id == eni.vpc_id)) is None:
        raise CloudError(
            "Gateway.NotAttached", f"Network {eni.vpc_id} is not attached to any internet gateway"
        )
    if address.interface_id == eni.id:
        return {"AssociationId": address.association_id}
    if address.interface_id is not None and not p.get("AllowReassociation"):
        raise CloudError(
            "Resource.AlreadyAssociated", f"resource {address.allocation_id} is already associated"
        )
    for other in s.scalars(select(PublicAddress).where(PublicAddress.interface_id == eni.id)):
        if other.allocation_id is None:
            s.delete(other)  # the automatic public address goes back to the pool
        else:
            other.interface_id = other.association_id = other.private_ip = None
    s.flush()
    address.interface_id, address.private_ip = eni.id, eni.private_ip
    address.association_id = ids.resource_id("eipassoc")
    return {"AssociationId": address.association_id}


@EC2.operation()
def disassociate_address(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s = ctx.session
    address: PublicAddress | None
    if p.get("AssociationId"):
        resources.check_id(p["AssociationId"], "eipassoc", "InvalidAssociationID.Malformed")
        address = s.scalar(select(PublicAddress).where(PublicAddress.association_id == p["AssociationId"]))
        if address is None or address.account_id != ctx.account_id:
            raise CloudError(
                "InvalidAssociationID.NotFound", f"The association ID '{p['AssociationId']}' does not exist"
            )
    else:
        address = _allocated(ctx, p)
        if address.interface_id is None:
            raise CloudError(
                "InvalidAssociationID.NotFound", f"The address {address.public_ip} is not associated"
            )
    address.interface_id = address.association_id = address.private_ip = None
    return {}


@EC2.operation()
def release_address(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    resources.unsupported(p, "NetworkBorderGroup")
    address = _allocated(ctx, p)
    if address.interface_id is not None:
        raise CloudError("InvalidIPAddress.InUse", f"Address {address.public_ip} is in use.")
    tags.remove_all(ctx.session, str(address.allocation_id))
    ctx.session.delete(address)
    return {}


@EC2.operation()
def describe_addresses(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s = ctx.session
    q = (
        select(PublicAddress)
        .where(PublicAddress.account_id == ctx.account_id, PublicAddress.allocation_id.is_not(None))
        .order_by(PublicAddress.public_ip)
    )
    rows = list(s.scalars(q))
    for allocation_id in p.get("AllocationIds") or []:
        if allocation_id not in {a.allocation_id for a in rows}:
            _allocated(ctx, {"AllocationId": allocation_id})  # the right NotFound or Malformed
    for public_ip in p.get("PublicIps") or []:
        if public_ip not in {a.public_ip for a in rows}:
            raise CloudError("InvalidAddress.NotFound", f"Address {public_ip} not found.")
    if p.get("AllocationIds"):
        rows = [a for a in rows if a.allocation_id in p["AllocationIds"]]
    if p.get("PublicIps"):
        rows = [a for a in rows if a.public_ip in p["PublicIps"]]
    tag_map = tags.tags_of(s, [str(a.allocation_id) for a in rows])
    views = [view(a, tag_map[str(a.allocation_id)], s) for a in rows]
    return {"Addresses": tags.with_tag_filters(views, p.get("Filters"), _FILTERS)}


@EC2.operation()
def describe_addresses_attribute(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    if p.get("Attribute") not in (None, "domain-name"):
        raise CloudError("InvalidParameterValue", f"Invalid attribute: {p.get('Attribute')}")
    found = [_allocated(ctx, {"AllocationId": a}) for a in p.get("AllocationIds") or []]
    if not found:
        found = list(
            ctx.session.scalars(
                select(PublicAddress).where(
                    PublicAddress.account_id == ctx.account_id, PublicAddress.allocation_id.is_not(None)
                )
            )
        )
    return resources.one_page(
        p,
        [
            {
                "PublicIp": a.public_ip,
                "AllocationId": a.allocation_id,
                "PtrRecord": public_dns(a.public_ip, ctx.region),
            }
            for a in found
        ],
        "Addresses",
    )
