"""Each node's whole network, from the CLC's records: the VPCs that have an interface on the node,
with their subnets, the node's interfaces, every group those interfaces use or their rules name
(rules and member addresses from every node), the VPC's interfaces on other nodes and those nodes'
underlays (rpc/node.py NodeNetwork; the node builds it with drivers/network/vpc_contract.py).

`Publisher.publish` runs after each reconciliation pass and at once after an EC2 change. A pass
reads the records once and builds each VPC's parts once (`Networks`): every interface entry, remote
entry and group is made one time, whatever the number of nodes. Each node's document is fingerprinted
from digests of those parts; it is assembled and sent only when its fingerprint differs from the one
last sent there, or when the node reports an older generation than was sent (the message was lost,
or the node restarted without it). Nothing here holds a transaction while it calls anyone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import compress

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.db.session import Database
from mallee.rpc import cluster, node
from mallee.rpc.transport import Client, RpcError
from mallee.services.clc.network_tables import (
    NetworkInterface,
    PublicAddress,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
    Vpc,
)
from mallee.services.clc.tables import Instance

log = logging.getLogger(__name__)

# What a node's document is compared by: per VPC on the node, its id and the digests of the parts
# the document takes from it (see `Networks.fingerprint`).
Fingerprint = tuple[tuple[str, bytes, bytes, tuple[bytes, ...]], ...]


def documents(s: Session, underlays: dict[str, str]) -> dict[str, list[node.NetVpc]]:
    """Node (host:port) -> the VPCs it should have, for every node with a live interface.
    `underlays`: node -> its VXLAN endpoint, as nodes report it (a node not reported yet has none)."""
    networks = Networks.read(s, underlays)
    return {name: networks.document(name) for name in networks.nodes()}


class Publisher:
    """Sends each node its network through its zone's cluster controller when it changed."""

    def __init__(self, db: Database, clusters: Mapping[str, Client]) -> None:
        self.db = db
        self.clusters = clusters
        # node -> (the fingerprint of what was sent, its generation). Kept in memory only: a new
        # Publisher (a restarted CLC) sends every node its network once.
        self.sent: dict[str, tuple[Fingerprint, int]] = {}

    def publish(self, reports: dict[str, cluster.ClusterReport]) -> None:
        """`reports`: zone -> its cluster's last report (nodes, their underlays and generations)."""
        zone_of = {n.name: zone for zone, report in reports.items() for n in report.nodes}
        underlays = {n.name: n.underlay for report in reports.values() for n in report.nodes if n.underlay}
        applied = {n.name: n.network_generation for report in reports.values() for n in report.nodes}
        with self.db.session() as s:
            networks = Networks.read(s, underlays)
        for name, zone in zone_of.items():  # a node with no interfaces left gets an empty network
            if zone not in self.clusters:
                continue
            fingerprint = networks.fingerprint(name)
            last = self.sent.get(name)
            if last is not None and last[0] == fingerprint and applied.get(name, 0) >= last[1]:
                continue
            # Above anything sent or applied before, even if the clock stepped back: a node never
            # applies an older generation over a newer one.
            generation = max(time.time_ns() // 1000, (last[1] if last else 0) + 1, applied.get(name, 0) + 1)
            try:
                self.clusters[zone].call(
                    cluster.APPLY_NETWORK,
                    cluster.ApplyNetwork(
                        node=name,
                        network=node.NodeNetwork(generation=generation, vpcs=networks.document(name)),
                    ),
                )
            except (OSError, RpcError) as exc:
                log.info("network of node %s not sent (will retry): %s", name, exc)
                continue
            self.sent[name] = (fingerprint, generation)


@dataclass
class _VpcParts:
    """One VPC's share of its nodes' documents, each entry built once per pass."""

    vpc_id: str
    vni: int
    cidr: str
    subnets: list[node.NetSubnet]
    interfaces: dict[str, list[node.NetInterface]] = field(default_factory=dict)  # by node, in id order
    # Every interface as the VPC's other nodes list it, in id order (none of a node without an
    # underlay yet), and by node the positions of its own in that list.
    remote: list[node.NetRemote] = field(default_factory=list)
    remote_at: dict[str, list[int]] = field(default_factory=dict)
    used: dict[str, set[str]] = field(default_factory=dict)  # by node: the groups its interfaces use
    shared: bytes = b""  # digest of what every node of the VPC gets alike (all but interfaces, groups)
    local: dict[str, bytes] = field(default_factory=dict)  # by node: digest of its interfaces


class Networks:
    """Every node's network for one pass, built from the records in O(interfaces + groups' rules);
    a node's document is assembled from the shared parts only when it is asked for."""

    def __init__(
        self,
        vpcs: list[_VpcParts],
        rules: dict[str, list[tuple[bool, node.NetRule]]],
        members: dict[str, list[str]],
        underlays: dict[str, str],
    ) -> None:
        self.vpcs = vpcs
        self.rules = rules
        self.members = members
        self.underlays = underlays
        self.of_node: dict[str, list[_VpcParts]] = defaultdict(list)  # in the order of `vpcs`
        for vpc in vpcs:
            for name in vpc.interfaces:
                self.of_node[name].append(vpc)
        self._groups: dict[str, tuple[node.NetGroup, bytes]] = {}
        self._named: dict[str, set[str]] = {}

    @classmethod
    def read(cls, s: Session, underlays: dict[str, str]) -> Networks:
        """The records' networks: every live interface on a node, with its VPC, subnets and groups."""
        rows = s.execute(
            select(
                NetworkInterface.id,
                NetworkInterface.vpc_id,
                NetworkInterface.instance_id,
                NetworkInterface.subnet_id,
                NetworkInterface.mac,
                NetworkInterface.private_ip,
                NetworkInterface.group_ids,
                Instance.node,
            )
            .join(Instance, Instance.id == NetworkInterface.instance_id)
            .where(Instance.state != "terminated", Instance.node != "")
            .order_by(NetworkInterface.id)
        ).all()
        if not rows:
            return cls([], {}, {}, underlays)
        public = {
            interface_id: public_ip
            for interface_id, public_ip in s.execute(
                select(PublicAddress.interface_id, PublicAddress.public_ip).where(
                    PublicAddress.interface_id.is_not(None)
                )
            )
        }
        vpc_ids = list(dict.fromkeys(row.vpc_id for row in rows))  # in the order of their first interface
        subnets: dict[str, list[node.NetSubnet]] = defaultdict(list)
        for subnet in s.scalars(select(Subnet).where(Subnet.vpc_id.in_(vpc_ids)).order_by(Subnet.cidr)):
            subnets[subnet.vpc_id].append(node.NetSubnet(subnet_id=subnet.id, cidr=subnet.cidr))
        vpcs: dict[str, _VpcParts] = {}
        for v in s.scalars(select(Vpc).where(Vpc.id.in_(vpc_ids))):
            vpcs[v.id] = _VpcParts(v.id, v.vni, v.cidr, subnets[v.id])
        groups = list(s.scalars(select(SecurityGroup.id).where(SecurityGroup.vpc_id.in_(vpc_ids))))
        rules: dict[str, list[tuple[bool, node.NetRule]]] = defaultdict(list)  # group -> (egress?, rule)
        # In a fixed order, so that an unchanged group digests the same on every pass.
        by_id = (
            select(SecurityGroupRule)
            .where(SecurityGroupRule.group_id.in_(groups))
            .order_by(SecurityGroupRule.id)
        )
        for rule in s.scalars(by_id):
            rules[rule.group_id].append((rule.is_egress, _rule(rule)))

        members: dict[str, list[str]] = defaultdict(list)
        parsed: dict[str, list[str]] = {}  # most interfaces share a few group lists: parse each once
        for eni_id, vpc_id, instance_id, subnet_id, mac, private_ip, group_json, where in rows:
            group_ids = parsed.get(group_json)
            if group_ids is None:
                group_ids = parsed[group_json] = json.loads(group_json or "[]")
            for group_id in group_ids:
                members[group_id].append(private_ip)
            vpc = vpcs[vpc_id]
            interfaces = vpc.interfaces.get(where)
            if interfaces is None:
                interfaces = vpc.interfaces[where] = []
                vpc.remote_at[where] = []
                vpc.used[where] = set()
            interfaces.append(
                node.NetInterface(
                    interface_id=eni_id,
                    instance_id=instance_id or "",
                    subnet_id=subnet_id,
                    mac=mac,
                    private_ip=private_ip,
                    group_ids=group_ids,
                    public_ip=public.get(eni_id),
                )
            )
            vpc.used[where].update(group_ids)
            underlay = underlays.get(where)
            if underlay:
                vpc.remote_at[where].append(len(vpc.remote))
                vpc.remote.append(node.NetRemote(mac=mac, private_ip=private_ip, node=underlay))
        ordered = [vpcs[vpc_id] for vpc_id in vpc_ids]
        for vpc in ordered:
            nodes = sorted(vpc.interfaces)
            vpc.shared = _digest(
                (
                    vpc.vpc_id,
                    vpc.vni,
                    vpc.cidr,
                    vpc.subnets,
                    vpc.remote,
                    [(name, underlays.get(name, "")) for name in nodes],
                )
            )
            vpc.local = {name: _digest(vpc.interfaces[name]) for name in nodes}
        return cls(ordered, rules, members, underlays)

    def nodes(self) -> list[str]:
        """The nodes with a live interface, in the order of their first VPC."""
        return list(self.of_node)

    def fingerprint(self, here: str) -> Fingerprint:
        """What `document(here)` is made of, as digests: equal fingerprints, equal documents. Costs
        O(the node's VPCs and groups), not O(the document)."""
        return tuple(
            (
                vpc.vpc_id,
                vpc.shared,
                vpc.local[here],
                tuple(self._group(g)[1] for g in self._wanted(vpc, here)),
            )
            for vpc in self.of_node.get(here, ())
        )

    def document(self, here: str) -> list[node.NetVpc]:
        """The VPCs node `here` should have (none: it has no live interface)."""
        out = []
        for vpc in self.of_node.get(here, ()):
            others = [name for name in sorted(vpc.interfaces) if name != here]
            out.append(
                node.NetVpc(
                    vpc_id=vpc.vpc_id,
                    vni=vpc.vni,
                    cidr=vpc.cidr,
                    subnets=vpc.subnets,
                    interfaces=vpc.interfaces[here],
                    groups=[self._group(g)[0] for g in self._wanted(vpc, here)],
                    remote=_without(vpc.remote, vpc.remote_at[here]),
                    peers=sorted({self.underlays[w] for w in others if self.underlays.get(w)}),
                )
            )
        return out

    def _wanted(self, vpc: _VpcParts, here: str) -> list[str]:
        """The groups node `here` needs in `vpc`: those its interfaces use and those their rules name."""
        used = vpc.used[here]
        return sorted(used.union(*(self._names(g) for g in used)))

    def _names(self, group_id: str) -> set[str]:
        named = self._named.get(group_id)
        if named is None:
            rules = self.rules.get(group_id, ())
            named = self._named[group_id] = {r.group_id for _, r in rules if r.group_id}
        return named

    def _group(self, group_id: str) -> tuple[node.NetGroup, bytes]:
        """The group as every node gets it (rules, members from all nodes), and its digest."""
        made = self._groups.get(group_id)
        if made is None:
            rules = self.rules.get(group_id, ())
            group = node.NetGroup(
                group_id=group_id,
                ingress=[r for egress, r in rules if not egress],
                egress=[r for egress, r in rules if egress],
                members=sorted(set(self.members.get(group_id, ()))),
            )
            made = self._groups[group_id] = (group, _digest(group))
        return made


def _without(entries: list[node.NetRemote], positions: list[int]) -> list[node.NetRemote]:
    """`entries` but those at `positions`, in order; the copy is made in C (itertools.compress)."""
    keep = bytearray(b"\x01") * len(entries)
    for i in positions:
        keep[i] = 0
    return list(compress(entries, keep))


_DIGEST_ENCODER = msgspec.msgpack.Encoder()


def _digest(value: object) -> bytes:
    return hashlib.blake2b(_DIGEST_ENCODER.encode(value), digest_size=16).digest()


def _rule(r: SecurityGroupRule) -> node.NetRule:
    return node.NetRule(
        protocol=r.protocol,
        from_port=r.from_port,
        to_port=r.to_port,
        cidr=r.cidr,
        group_id=r.referenced_group_id,
    )
