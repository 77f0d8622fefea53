"""What both VPC drivers agree on before touching anything: the names of a VPC's kernel objects on a
node, and the checks that refuse an inconsistent `NodeNetwork` as a whole (nothing is applied)."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping

from mallee.drivers.network.vpc_contract import (
    NodeNetwork,
    Rule,
    Vpc,
    VpcNetworkError,
    underlay_endpoint,
    vpc_bridge,
)

ROUTER_VPC_IF = "vpc0"  # the router's leg on the VPC bridge (inside its namespace)
ROUTER_PUBLIC_IF = "pub0"  # its leg on the public bridge
MAX_VNI = 16_777_215


def bridge(prefix: str, vni: int) -> str:
    return vpc_bridge(prefix, vni)


def router_leg(prefix: str, vni: int) -> str:
    """The host end of the router's veth on the VPC bridge."""
    return f"{prefix}r{vni}"


def public_leg(prefix: str, vni: int) -> str:
    """The host end of the router's veth on the public bridge."""
    return f"{prefix}p{vni}"


def vxlan(prefix: str, vni: int) -> str:
    return f"{prefix}x{vni}"


def namespace(prefix: str, vni: int) -> str:
    return f"mallee-{prefix}-{vni}"


def gateway_mac(vni: int) -> str:
    """The router's MAC on the VPC bridge: the same on every node (a distributed router)."""
    return f"02:6d:6c:{vni >> 16 & 255:02x}:{vni >> 8 & 255:02x}:{vni & 255:02x}"


def node_router_mac(prefix: str, vni: int) -> str:
    """The source MAC of frames the router sends across VXLAN (routed to a remote interface): the
    shared gateway MAC is rewritten to this one, distinct per node, as a distributed router must."""
    digest = hashlib.sha256(f"{prefix}/{vni}/vxlan".encode()).digest()
    return "02:72:" + ":".join(f"{b:02x}" for b in digest[:4])


def public_mac(prefix: str, vni: int) -> str:
    """The router's MAC on the public bridge: distinct per node and VPC, stable across restarts."""
    digest = hashlib.sha256(f"{prefix}/{vni}".encode()).digest()
    return "02:70:" + ":".join(f"{b:02x}" for b in digest[:4])


def port_range(rule: Rule) -> tuple[int, int]:
    """tcp/udp: the rule's port range; -1 means all ports."""
    if rule.from_port == -1 or rule.to_port == -1:
        return (0, 65535)
    return (rule.from_port, rule.to_port)


def icmp_ranges(rule: Rule) -> tuple[tuple[int, int], tuple[int, int]]:
    """icmp: (type range, code range); -1 means any."""
    kind = (0, 255) if rule.from_port == -1 else (rule.from_port, rule.from_port)
    code = (0, 255) if rule.to_port == -1 or rule.from_port == -1 else (rule.to_port, rule.to_port)
    return kind, code


def validate(state: NodeNetwork, valid: Mapping[int, Vpc] | None = None) -> None:
    """Raise VpcNetworkError when `state` cannot be applied as a whole. `valid`: VPCs (by VNI)
    checked before; a VPC equal to its entry skips the per-VPC checks (the node-wide ones run)."""
    try:
        _validate(state, valid or {})
    except ValueError as exc:
        raise VpcNetworkError(str(exc)) from exc


def _unique(values: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise VpcNetworkError(f"duplicate {what}: {value}")
        seen.add(value)


def _check_rule(rule: Rule, groups: set[str], where: str) -> None:
    if rule.group_id is not None and rule.group_id not in groups:
        raise VpcNetworkError(f"{where} names group {rule.group_id}, which the VPC does not define")
    ports = (rule.from_port, rule.to_port)
    if rule.protocol in ("tcp", "udp") and ports != (-1, -1) and not 0 <= ports[0] <= ports[1] <= 65535:
        raise VpcNetworkError(f"{where}: invalid port range {rule.from_port}..{rule.to_port}")
    if rule.protocol == "icmp" and not (-1 <= rule.from_port <= 255 and -1 <= rule.to_port <= 255):
        raise VpcNetworkError(f"{where}: invalid icmp type/code {rule.from_port}/{rule.to_port}")


def _validate(state: NodeNetwork, valid: Mapping[int, Vpc]) -> None:
    under = state.underlay
    public = ipaddress.IPv4Network(under.public_cidr)
    _unique((v.vpc_id for v in state.vpcs), "VPC id")
    _unique((str(v.vni) for v in state.vpcs), "VNI")
    everywhere = [i for v in state.vpcs for i in v.interfaces]
    _unique((i.mac for i in everywhere), "MAC on this node")
    _unique((i.device for i in everywhere), "device")
    _unique((i.interface_id for i in everywhere), "interface id")
    _unique((i.public_ip for i in everywhere if i.public_ip), "public IP")
    for vpc in state.vpcs:
        if valid.get(vpc.vni) == vpc:
            continue
        if not 1 <= vpc.vni <= MAX_VNI:
            raise VpcNetworkError(f"{vpc.vpc_id}: VNI {vpc.vni} out of range")
        cidr = ipaddress.IPv4Network(vpc.cidr)
        nets: dict[str, ipaddress.IPv4Network] = {}
        for subnet in vpc.subnets:
            net = ipaddress.IPv4Network(subnet.cidr)
            if not net.subnet_of(cidr) or net.prefixlen > 28:
                raise VpcNetworkError(f"{subnet.subnet_id}: {net} is not a /16../28 within {cidr}")
            if any(net.overlaps(other) for other in nets.values()) or subnet.subnet_id in nets:
                raise VpcNetworkError(f"{subnet.subnet_id}: overlaps another subnet of {vpc.vpc_id}")
            nets[subnet.subnet_id] = net
        groups = {g.group_id for g in vpc.groups}
        _unique((g.group_id for g in vpc.groups), f"group of {vpc.vpc_id}")
        for group in vpc.groups:
            for rule in (*group.ingress, *group.egress):
                _check_rule(rule, groups, group.group_id)
        _unique((i.private_ip for i in vpc.interfaces), f"private IP in {vpc.vpc_id}")
        for iface in vpc.interfaces:
            if iface.subnet_id not in nets:
                raise VpcNetworkError(f"{iface.interface_id}: unknown subnet {iface.subnet_id}")
            net = nets[iface.subnet_id]
            ip = ipaddress.IPv4Address(iface.private_ip)
            if ip not in net or ip in (net.network_address, net.broadcast_address, next(net.hosts())):
                raise VpcNetworkError(f"{iface.interface_id}: {ip} is not a host address of {net}")
            if iface.public_ip is not None and ipaddress.IPv4Address(iface.public_ip) not in public:
                raise VpcNetworkError(f"{iface.interface_id}: public IP {iface.public_ip} not in {public}")
            for group_id in iface.group_ids:
                if group_id not in groups:
                    raise VpcNetworkError(f"{iface.interface_id}: unknown group {group_id}")
        local_macs = {i.mac for i in vpc.interfaces}
        for remote in vpc.remote:
            if remote.mac in local_macs:
                raise VpcNetworkError(f"{remote.mac} is both local and remote in {vpc.vpc_id}")
        # Every remote entry's node is checked, each distinct one once (a VPC has many interfaces
        # on few nodes).
        for peer in {r.node for r in vpc.remote}.union(vpc.peers):
            underlay_endpoint(peer, under.vxlan_port)
