"""Each node's network from the CLC's records (services/clc/network_state.py), on SQLite and
PostgreSQL: what a node gets of its VPCs, groups, members, remote interfaces and peers, and when
the publisher sends it again."""

from __future__ import annotations

import datetime as _dt
import json
import time
from typing import Any

from mallee.db.session import Database
from mallee.rpc import cluster, node
from mallee.rpc.contract import Ok
from mallee.services.clc.network_state import Publisher, documents
from mallee.services.clc.network_tables import (
    NetworkInterface,
    PublicAddress,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
    Vpc,
)
from mallee.services.clc.tables import Account, Instance

NOW = _dt.datetime(2026, 12, 1, tzinfo=_dt.UTC)
A, B = "10.0.0.1:8775", "10.0.0.2:8775"
UNDERLAYS = {A: "10.0.0.1:4789", B: "10.0.0.2:4789"}


def _cloud(db: Database) -> None:
    """Two VPCs of one account: vpc-a with web and app groups on two nodes, vpc-b on node A."""
    with db.session() as s:
        s.add(Account(id="123456789012", name="acme", created=NOW))
        s.flush()
        for vpc_id, vni in (("vpc-a", 1), ("vpc-b", 2)):
            s.add(Vpc(id=vpc_id, account_id="123456789012", cidr="172.31.0.0/16", vni=vni, created=NOW))
            s.flush()
            s.add(
                Subnet(
                    id=f"subnet-{vpc_id}",
                    account_id="123456789012",
                    vpc_id=vpc_id,
                    zone="z",
                    cidr="172.31.0.0/20",
                )
            )
            s.add(
                SecurityGroup(
                    id=f"sg-{vpc_id}",
                    account_id="123456789012",
                    vpc_id=vpc_id,
                    name="default",
                    description="d",
                )
            )
        s.add(
            SecurityGroup(id="sg-app", account_id="123456789012", vpc_id="vpc-a", name="app", description="d")
        )
        s.flush()
        rules = [
            ("sgr-1", "sg-vpc-a", False, "tcp", 22, 22, "0.0.0.0/0", None),
            ("sgr-2", "sg-app", False, "tcp", 8080, 8080, None, "sg-vpc-a"),
            ("sgr-3", "sg-app", True, "-1", -1, -1, "0.0.0.0/0", None),
        ]
        for rid, gid, egress, proto, low, high, cidr, ref in rules:
            s.add(
                SecurityGroupRule(
                    id=rid,
                    group_id=gid,
                    is_egress=egress,
                    protocol=proto,
                    from_port=low,
                    to_port=high,
                    cidr=cidr,
                    referenced_group_id=ref,
                )
            )
        placed = [
            ("i-1", "vpc-a", A, "172.31.0.5", ["sg-vpc-a"], "running"),
            ("i-2", "vpc-a", B, "172.31.0.6", ["sg-app"], "running"),
            ("i-3", "vpc-b", A, "172.31.0.5", ["sg-vpc-b"], "pending"),
            ("i-4", "vpc-a", A, "172.31.0.7", ["sg-vpc-a"], "terminated"),  # gone: no network
            ("i-5", "vpc-a", "", "172.31.0.8", ["sg-vpc-a"], "pending"),  # not placed yet
        ]
        for iid, vpc_id, where, ip, groups, state in placed:
            s.add(
                Instance(
                    id=iid,
                    reservation_id="r-1",
                    account_id="123456789012",
                    image_id="ami-1",
                    instance_type="t1.micro",
                    zone="z",
                    state=state,
                    desired="running",
                    node=where,
                    private_ip=ip,
                    mac=f"d0:0d:00:00:00:0{iid[-1]}",
                    launch_time=NOW,
                    vpc_id=vpc_id,
                    subnet_id=f"subnet-{vpc_id}",
                )
            )
            s.add(
                NetworkInterface(
                    id=f"eni-{iid[-1]}",
                    account_id="123456789012",
                    vpc_id=vpc_id,
                    subnet_id=f"subnet-{vpc_id}",
                    instance_id=iid,
                    mac=f"d0:0d:00:00:00:0{iid[-1]}",
                    private_ip=ip,
                    group_ids=json.dumps(groups),
                )
            )
        s.flush()
        s.add(
            PublicAddress(
                public_ip="198.51.100.20", account_id="123456789012", interface_id="eni-1", created=NOW
            )
        )


def test_each_node_gets_the_vpcs_of_its_interfaces(database: Database) -> None:
    _cloud(database)
    with database.session() as s:
        docs = documents(s, UNDERLAYS)
    assert set(docs) == {A, B}
    on_a = {v.vpc_id: v for v in docs[A]}
    assert set(on_a) == {"vpc-a", "vpc-b"}  # the same addresses, two VPCs, one node
    a = on_a["vpc-a"]
    assert [i.instance_id for i in a.interfaces] == ["i-1"]  # not the terminated nor the unplaced
    assert a.interfaces[0].public_ip == "198.51.100.20"
    assert [(r.mac, r.private_ip, r.node) for r in a.remote] == [
        ("d0:0d:00:00:00:02", "172.31.0.6", "10.0.0.2:4789")
    ]
    assert a.peers == ["10.0.0.2:4789"]
    groups = {g.group_id: g for g in a.groups}
    assert set(groups) == {"sg-vpc-a"}
    assert groups["sg-vpc-a"].ingress == [
        node.NetRule(protocol="tcp", from_port=22, to_port=22, cidr="0.0.0.0/0")
    ]
    assert groups["sg-vpc-a"].members == ["172.31.0.5"]  # i-5 is not placed, i-4 terminated
    on_b = {v.vpc_id: v for v in docs[B]}
    b_groups = {g.group_id: g for g in on_b["vpc-a"].groups}
    # B's app group names the default group as source: B gets it, with its members on A.
    assert set(b_groups) == {"sg-app", "sg-vpc-a"}
    assert b_groups["sg-app"].ingress[0].group_id == "sg-vpc-a"
    assert b_groups["sg-vpc-a"].members == ["172.31.0.5"]
    assert on_a["vpc-b"].peers == [] and on_a["vpc-b"].remote == []


class FakeZone:
    def __init__(self) -> None:
        self.sent: list[cluster.ApplyNetwork] = []
        self.generations: dict[str, int] = {}

    def call(self, operation: Any, request: Any) -> Any:
        assert operation is cluster.APPLY_NETWORK
        self.sent.append(request)
        return Ok()

    def report(self) -> cluster.ClusterReport:
        nodes = [
            cluster.NodeSummary(
                name=n,
                state="ENABLED",
                hypervisor="fake",
                total=node.Resources(),
                free=node.Resources(),
                network_generation=self.generations.get(n, 0),
                underlay=UNDERLAYS[n],
            )
            for n in (A, B)
        ]
        return cluster.ClusterReport(ready=True, instances={}, nodes=nodes)


def test_the_publisher_sends_what_changed_and_what_was_lost(database: Database) -> None:
    _cloud(database)
    zone = FakeZone()
    publisher = Publisher(database, {"z": zone})  # type: ignore[dict-item]
    publisher.publish({"z": zone.report()})
    assert sorted(m.node for m in zone.sent) == [A, B]
    for m in zone.sent:  # both applied what they got
        zone.generations[m.node] = m.network.generation
    zone.sent.clear()
    publisher.publish({"z": zone.report()})
    assert zone.sent == []  # nothing changed: nothing sent
    with database.session() as s:  # a rule of the group on A changes
        s.add(
            SecurityGroupRule(
                id="sgr-9",
                group_id="sg-vpc-a",
                is_egress=False,
                protocol="udp",
                from_port=53,
                to_port=53,
                cidr="10.0.0.0/8",
            )
        )
    publisher.publish({"z": zone.report()})
    assert sorted(m.node for m in zone.sent) == [A, B]  # B holds the group too (app's rule names it)
    newer = {m.node: m.network.generation for m in zone.sent}
    assert all(newer[n] > zone.generations[n] for n in (A, B))
    zone.sent.clear()
    publisher.publish({"z": zone.report()})  # the nodes still report the older generation: lost
    assert sorted(m.node for m in zone.sent) == [A, B]


def _published(publisher: Publisher, zone: FakeZone) -> list[str]:
    """One pass; the nodes sent a network, each applying what it got."""
    zone.sent.clear()
    publisher.publish({"z": zone.report()})
    for m in zone.sent:
        zone.generations[m.node] = m.network.generation
    return sorted(m.node for m in zone.sent)


def test_a_node_whose_network_did_not_change_is_not_sent_it_again(database: Database) -> None:
    _cloud(database)
    zone = FakeZone()
    publisher = Publisher(database, {"z": zone})  # type: ignore[dict-item]
    assert _published(publisher, zone) == [A, B]
    with database.session() as s:  # a public address for i-3, on A in vpc-b: only A's network has it
        s.add(
            PublicAddress(
                public_ip="198.51.100.21", account_id="123456789012", interface_id="eni-3", created=NOW
            )
        )
    assert _published(publisher, zone) == [A]
    assert _published(publisher, zone) == []


def test_a_node_whose_network_changed_is_sent_it_with_a_newer_generation(database: Database) -> None:
    _cloud(database)
    zone = FakeZone()
    publisher = Publisher(database, {"z": zone})  # type: ignore[dict-item]
    _published(publisher, zone)
    before = dict(zone.generations)
    with database.session() as s:  # i-5 is placed on B: a new interface there, remote and member on A
        s.get_one(Instance, "i-5").node = B
    assert _published(publisher, zone) == [A, B]
    assert all(zone.generations[n] > before[n] for n in (A, B))
    with database.session() as s:
        docs = documents(s, UNDERLAYS)
    sent = {m.node: m.network.vpcs for m in zone.sent}
    assert sent == docs  # what was sent is the whole network, as built from the records
    on_a = {v.vpc_id: v for v in sent[A]}["vpc-a"]
    assert sorted(r.private_ip for r in on_a.remote) == ["172.31.0.6", "172.31.0.8"]
    assert {g.group_id: g.members for g in on_a.groups}["sg-vpc-a"] == ["172.31.0.5", "172.31.0.8"]


def test_a_restarted_clc_sends_every_node_its_network_again(database: Database) -> None:
    _cloud(database)
    zone = FakeZone()
    _published(Publisher(database, {"z": zone}), zone)  # type: ignore[dict-item]
    applied = dict(zone.generations)
    restarted = Publisher(database, {"z": zone})  # type: ignore[dict-item]
    assert _published(restarted, zone) == [A, B]
    assert all(zone.generations[n] > applied[n] for n in (A, B))
    assert _published(restarted, zone) == []


def test_a_restarted_node_gets_its_network_again_only_if_it_lost_it(database: Database) -> None:
    _cloud(database)
    zone = FakeZone()
    publisher = Publisher(database, {"z": zone})  # type: ignore[dict-item]
    _published(publisher, zone)
    # A restarted and applied the network it kept on disk again: it reports the same generation.
    assert _published(publisher, zone) == []
    zone.generations[B] = 0  # B restarted without it (killed before it kept the document)
    assert _published(publisher, zone) == [B]
    assert _published(publisher, zone) == []


def test_a_new_generation_is_above_the_applied_one_even_if_the_clock_is_behind(database: Database) -> None:
    _cloud(database)
    zone = FakeZone()
    future = (time.time_ns() // 1000) + 3_600_000_000  # applied from a CLC whose clock was an hour ahead
    zone.generations = {A: future, B: future}
    assert _published(Publisher(database, {"z": zone}), zone) == [A, B]  # type: ignore[dict-item]
    assert all(g > future for g in zone.generations.values())
