"""Each node's whole network, from the CLC's records: the VPCs that have an interface on the node,
with their subnets, the node's interfaces, every group those interfaces use or their rules name
(rules and member addresses from every node), the VPC's interfaces on other nodes and those nodes'
underlays (rpc/node.py NodeNetwork; the node builds it with drivers/network/vpc_contract.py).

`Publisher.publish` runs after each reconciliation pass and at once after an EC2 change: it sends a
node its network when it differs from what was last sent there, or when the node reports an older
generation than was sent (the message was lost, or the node restarted without it). Nothing here
holds a transaction while it calls anyone.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.db.session import Database
from mallee.rpc import cluster, node
from mallee.rpc.contract import encode
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


def _rule(r: SecurityGroupRule) -> node.NetRule:
    return node.NetRule(
        protocol=r.protocol,
        from_port=r.from_port,
        to_port=r.to_port,
        cidr=r.cidr,
        group_id=r.referenced_group_id,
    )


def documents(s: Session, underlays: dict[str, str]) -> dict[str, list[node.NetVpc]]:
    """Node (host:port) -> the VPCs it should have, for every node with a live interface.
    `underlays`: node -> its VXLAN endpoint, as nodes report it (a node not reported yet has none)."""
    rows = s.execute(
        select(NetworkInterface, Instance.node)
        .join(Instance, Instance.id == NetworkInterface.instance_id)
        .where(Instance.state != "terminated", Instance.node != "")
        .order_by(NetworkInterface.id)
    ).all()
    if not rows:
        return {}
    public = {
        key: value
        for key, value in s.execute(
            select(PublicAddress.interface_id, PublicAddress.public_ip).where(
                PublicAddress.interface_id.is_not(None)
            )
        )
    }
    by_vpc: dict[str, list[tuple[NetworkInterface, str]]] = defaultdict(list)
    members: dict[str, list[str]] = defaultdict(list)
    for eni, where in rows:
        by_vpc[eni.vpc_id].append((eni, where))
        for group_id in json.loads(eni.group_ids or "[]"):
            members[group_id].append(eni.private_ip)
    vpc_rows = {v.id: v for v in s.scalars(select(Vpc).where(Vpc.id.in_(list(by_vpc))))}
    subnets: dict[str, list[node.NetSubnet]] = defaultdict(list)
    for subnet in s.scalars(select(Subnet).where(Subnet.vpc_id.in_(list(by_vpc))).order_by(Subnet.cidr)):
        subnets[subnet.vpc_id].append(node.NetSubnet(subnet_id=subnet.id, cidr=subnet.cidr))
    rules: dict[str, list[SecurityGroupRule]] = defaultdict(list)
    groups_of_vpc: dict[str, list[str]] = defaultdict(list)
    for group in s.scalars(select(SecurityGroup).where(SecurityGroup.vpc_id.in_(list(by_vpc)))):
        groups_of_vpc[group.vpc_id].append(group.id)
    all_groups = [g for ids_ in groups_of_vpc.values() for g in ids_]
    for rule in s.scalars(select(SecurityGroupRule).where(SecurityGroupRule.group_id.in_(all_groups))):
        rules[rule.group_id].append(rule)

    out: dict[str, list[node.NetVpc]] = defaultdict(list)
    for vpc_id, enis in by_vpc.items():
        vpc = vpc_rows[vpc_id]
        nodes = sorted({where for _, where in enis})
        for here in nodes:
            local = [e for e, where in enis if where == here]
            used = {g for e in local for g in json.loads(e.group_ids or "[]")}
            named = {r.referenced_group_id for g in used for r in rules[g] if r.referenced_group_id}
            wanted = sorted(used | named)
            out[here].append(
                node.NetVpc(
                    vpc_id=vpc.id,
                    vni=vpc.vni,
                    cidr=vpc.cidr,
                    subnets=subnets[vpc.id],
                    interfaces=[
                        node.NetInterface(
                            interface_id=e.id,
                            instance_id=e.instance_id or "",
                            subnet_id=e.subnet_id,
                            mac=e.mac,
                            private_ip=e.private_ip,
                            group_ids=json.loads(e.group_ids or "[]"),
                            public_ip=public.get(e.id),
                        )
                        for e in local
                    ],
                    groups=[
                        node.NetGroup(
                            group_id=g,
                            ingress=[_rule(r) for r in rules[g] if not r.is_egress],
                            egress=[_rule(r) for r in rules[g] if r.is_egress],
                            members=sorted(set(members[g])),
                        )
                        for g in wanted
                    ],
                    remote=[
                        node.NetRemote(mac=e.mac, private_ip=e.private_ip, node=underlays[where])
                        for e, where in enis
                        if where != here and underlays.get(where)
                    ],
                    peers=sorted({underlays[w] for w in nodes if w != here and underlays.get(w)}),
                )
            )
    return dict(out)


class Publisher:
    """Sends each node its network through its zone's cluster controller when it changed."""

    def __init__(self, db: Database, clusters: dict[str, Client]) -> None:
        self.db = db
        self.clusters = clusters
        self.sent: dict[str, tuple[bytes, int]] = {}  # node -> (what was sent, its generation)

    def publish(self, reports: dict[str, cluster.ClusterReport]) -> None:
        """`reports`: zone -> its cluster's last report (nodes, their underlays and generations)."""
        zone_of = {n.name: zone for zone, report in reports.items() for n in report.nodes}
        underlays = {n.name: n.underlay for report in reports.values() for n in report.nodes if n.underlay}
        applied = {n.name: n.network_generation for report in reports.values() for n in report.nodes}
        with self.db.session() as s:
            docs = documents(s, underlays)
        for name in zone_of:  # a node with no interfaces left gets an empty network
            docs.setdefault(name, [])
        for name, vpcs in docs.items():
            zone = zone_of.get(name)
            if zone is None or zone not in self.clusters:
                continue
            body = node.NodeNetwork(generation=0, vpcs=vpcs)
            content = _content(body)
            last = self.sent.get(name)
            if last is not None and last[0] == content and applied.get(name, 0) >= last[1]:
                continue
            generation = time.time_ns() // 1000
            try:
                self.clusters[zone].call(
                    cluster.APPLY_NETWORK,
                    cluster.ApplyNetwork(
                        node=name, network=node.NodeNetwork(generation=generation, vpcs=vpcs)
                    ),
                )
            except (OSError, RpcError) as exc:
                log.info("network of node %s not sent (will retry): %s", name, exc)
                continue
            self.sent[name] = (content, generation)


def _content(network: node.NodeNetwork) -> bytes:
    return encode(network)
