"""What the fake network driver simulates: DHCP, anti-spoofing and security-group decisions."""

from __future__ import annotations

from mallee.drivers.network.base import GroupRule, HostNetwork, InstanceInterface
from mallee.drivers.network.fake import FakeNetworkDriver
from mallee.drivers.network.groups import ingress_allowed, rule_matches

HOST = HostNetwork("br0", "10.0.0.1", 24, "10.0.0.1", 8775)
A = InstanceInterface("i-a", "02:00:00:00:00:0a", "10.0.0.10", "host-a", "tap-a")
B = InstanceInterface("i-b", "02:00:00:00:00:0b", "10.0.0.11", "host-b", "tap-b")


def test_dhcp_and_spoofing() -> None:
    fake = FakeNetworkDriver()
    fake.setup(HOST)
    fake.add_instance(A)
    assert fake.dhcp_request(A.mac) == A.ip
    assert fake.dhcp_request("02:00:00:00:00:99") is None
    assert [lease.ip for lease in fake.leases()] == [A.ip]
    assert fake.may_send("tap-a", A.mac, A.ip)
    assert not fake.may_send("tap-a", A.mac, "10.0.0.99")
    assert not fake.may_send("tap-a", "02:00:00:00:00:99", A.ip)
    assert not fake.may_send("tap-b", A.mac, A.ip)
    fake.remove_instance(A.instance_id)
    assert fake.leases() == []


def test_applies_count_only_changes() -> None:
    fake = FakeNetworkDriver()
    fake.setup(HOST)
    fake.setup(HOST)
    fake.add_instance(A)
    fake.add_instance(A)
    fake.apply_security_groups([], {"sg-1": [A.ip]})
    fake.apply_security_groups([], {"sg-1": [A.ip]})
    assert fake.applies == 3


def test_group_semantics_like_ec2() -> None:
    rules = [
        GroupRule("sg-web", "tcp", 22, 22, cidr="0.0.0.0/0"),
        GroupRule("sg-web", "tcp", 8000, 8100, cidr="10.0.0.0/24"),
        GroupRule("sg-default", "-1", source_group="sg-default"),
        GroupRule("sg-ping", "icmp", 8, -1, cidr="0.0.0.0/0"),
    ]
    members = {"sg-web": [B.ip], "sg-default": [A.ip, B.ip], "sg-ping": [A.ip]}
    assert ingress_allowed(rules, members, "192.0.2.9", B.ip, "tcp", 22)
    assert not ingress_allowed(rules, members, "192.0.2.9", B.ip, "tcp", 80)
    assert ingress_allowed(rules, members, "10.0.0.50", B.ip, "tcp", 8050)
    assert not ingress_allowed(rules, members, "10.0.1.50", B.ip, "tcp", 8050)
    assert ingress_allowed(rules, members, A.ip, B.ip, "udp", 53)  # same default group: everything
    assert not ingress_allowed(rules, members, "10.0.0.50", B.ip, "udp", 53)
    assert ingress_allowed(rules, members, "192.0.2.9", A.ip, "icmp", 8, 0)
    assert not ingress_allowed(rules, members, "192.0.2.9", A.ip, "icmp", 13, 0)
    assert not ingress_allowed(rules, {}, A.ip, B.ip, "tcp", 22)  # not a member of any group


def test_rule_matching_edges() -> None:
    assert rule_matches(GroupRule("g", "tcp", -1, -1, cidr="0.0.0.0/0"), "tcp", 5)
    assert not rule_matches(GroupRule("g", "tcp", 1, 10, cidr="0.0.0.0/0"), "udp", 5)
    assert rule_matches(GroupRule("g", "icmp", 3, 4, cidr="0.0.0.0/0"), "icmp", 3, 4)
    assert not rule_matches(GroupRule("g", "icmp", 3, 4, cidr="0.0.0.0/0"), "icmp", 3, 1)
