"""The VPC driver's pure parts: security-group semantics, rules folded into disjoint set elements,
the rendered nftables tables and the incremental scripts between two renderings."""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess
from dataclasses import replace

import pytest

from mallee.drivers.network import vpc_model, vpc_nft
from mallee.drivers.network.vpc_contract import (
    Interface,
    NodeNetwork,
    NodeUnderlay,
    Rule,
    SecurityGroup,
    Subnet,
    Vpc,
    VpcNetworkError,
)
from mallee.drivers.network.vpc_fake import FakeVpcDriver
from mallee.drivers.network.vpc_groups import Elements, allowed, disjoint, elements, rule_covers

PREFIX = "m0"


def _iface(n: int, *groups: str, public: str | None = None) -> Interface:
    return Interface(
        f"eni-{n}", f"i-{n}", "subnet-a", f"02:00:00:00:00:{n:02x}", f"172.31.0.{n + 10}", f"tap{n}", f"h{n}",
        groups, public,
    )  # fmt: skip


def _vpc(groups: tuple[SecurityGroup, ...], *ifaces: Interface, vni: int = 12, **more: object) -> Vpc:
    subnets = (Subnet("subnet-a", "172.31.0.0/24"), Subnet("subnet-b", "172.31.1.0/24"))
    return replace(Vpc("vpc-1", vni, "172.31.0.0/16", subnets, ifaces, groups), **more)


WEB = SecurityGroup(
    "sg-web",
    ingress=(
        Rule("tcp", 22, 22, cidr="0.0.0.0/0"),
        Rule("tcp", 20, 30, cidr="10.0.0.0/8"),
        Rule("tcp", 80, 80, group_id="sg-lb"),
        Rule("icmp", 8, -1, cidr="192.0.2.0/24"),
    ),
    egress=(Rule("-1", cidr="0.0.0.0/0"),),
    members=("172.31.0.11",),
)
LB = SecurityGroup("sg-lb", members=("172.31.0.12",), egress=(Rule("tcp", 80, 80, group_id="sg-web"),))


# -- security-group semantics (what the fake answers) -----------------------------------------------


def test_ingress_follows_cidr_group_and_port_rules() -> None:
    vpc = _vpc((WEB, LB), _iface(1, "sg-web"), _iface(2, "sg-lb"))
    web = vpc.interfaces[0]
    assert allowed(vpc, web, "ingress", "203.0.113.5", "tcp", 22)
    assert allowed(vpc, web, "ingress", "10.1.2.3", "tcp", 25)
    assert not allowed(vpc, web, "ingress", "11.1.2.3", "tcp", 25)
    assert allowed(vpc, web, "ingress", "172.31.0.12", "tcp", 80)  # a member of sg-lb
    assert not allowed(vpc, web, "ingress", "172.31.0.13", "tcp", 80)
    assert allowed(vpc, web, "ingress", "192.0.2.9", "icmp", 8, 0)
    assert not allowed(vpc, web, "ingress", "192.0.2.9", "icmp", 0, 0)
    assert not allowed(vpc, web, "ingress", "192.0.2.9", "udp", 22)


def test_egress_and_a_group_without_rules() -> None:
    vpc = _vpc((WEB, LB), _iface(1, "sg-web"), _iface(2, "sg-lb"))
    web, lb = vpc.interfaces
    assert allowed(vpc, web, "egress", "8.8.8.8", "udp", 53)
    assert allowed(vpc, lb, "egress", "172.31.0.11", "tcp", 80)
    assert not allowed(vpc, lb, "egress", "172.31.0.11", "tcp", 81)
    assert not allowed(vpc, lb, "ingress", "172.31.0.11", "tcp", 80)  # sg-lb admits nothing


def test_the_fake_answers_from_the_applied_state() -> None:
    fake = FakeVpcDriver()
    under = NodeUnderlay(PREFIX, "10.0.0.1", "m0pub", "198.51.100.0/24")
    fake.apply(
        NodeNetwork(under, (_vpc((WEB, LB), _iface(1, "sg-web"), _iface(2, "sg-lb", public="198.51.100.7")),))
    )
    assert fake.dhcp_request("vpc-1", "02:00:00:00:00:01") == ("172.31.0.11", "172.31.0.1")
    assert fake.dhcp_request("vpc-1", "02:00:00:00:00:99") is None
    assert fake.may_send("tap1", "02:00:00:00:00:01", "172.31.0.11")
    assert not fake.may_send("tap1", "02:00:00:00:00:01", "172.31.0.12")
    assert fake.reaches("vpc-1", "172.31.0.12", "172.31.0.11", "tcp", 80)
    assert not fake.reaches("vpc-1", "172.31.0.11", "172.31.0.12", "tcp", 80)
    assert fake.public_address_of("172.31.0.12", "vpc-1") == "198.51.100.7"
    with pytest.raises(VpcNetworkError):
        fake.ingress_allowed("vpc-2", "1.2.3.4", "172.31.0.11", "tcp", 22)


# -- rules as disjoint set elements -----------------------------------------------------------------


def _contains(elems: Elements, src: str, protocol: str, port: int, code: int) -> bool:
    addr = ipaddress.IPv4Address(src)
    if any(addr in net for net in elems.any):
        return True
    if protocol in ("tcp", "udp"):
        return any(addr in n and p == protocol and lo <= port <= hi for n, p, (lo, hi) in elems.ports)
    if protocol == "icmp":
        return any(addr in n and t[0] <= port <= t[1] and c[0] <= code <= c[1] for n, t, c in elems.icmp)
    return False


def _overlap(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    def meet(x: object, y: object) -> bool:
        if isinstance(x, ipaddress.IPv4Network) and isinstance(y, ipaddress.IPv4Network):
            return x.overlaps(y)
        if isinstance(x, tuple) and isinstance(y, tuple):
            return bool(x[0] <= y[1] and y[0] <= x[1])
        return x == y

    return all(meet(x, y) for x, y in zip(a, b, strict=True))


def test_folded_elements_are_disjoint_and_match_what_the_rules_match() -> None:
    rng = random.Random(13)
    cidrs = ["0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "192.0.2.0/24"]
    for _ in range(30):
        rules = []
        for _ in range(rng.randint(1, 12)):
            proto = rng.choice(["tcp", "udp", "icmp", "-1", "tcp"])
            low = rng.choice([-1, 0, 20, 22, 25, 80, 443])
            high = (
                -1
                if low == -1
                else rng.choice([low, low + 5, 65535])
                if proto != "icmp"
                else rng.choice([-1, 0])
            )
            rules.append(Rule(proto, low, high, cidr=rng.choice(cidrs)))
        elems = elements(rules)
        for kind in (elems.ports, elems.icmp):
            items: list[tuple[object, ...]] = list(kind)
            for i, a in enumerate(items):
                assert not any(_overlap(a, b) for b in items[i + 1 :]), (a, rules)
        for _ in range(200):
            src = rng.choice(["10.1.2.3", "10.1.2.4", "10.2.0.1", "192.0.2.77", "8.8.8.8"])
            proto = rng.choice(["tcp", "udp", "icmp"])
            port, code = rng.choice([0, 20, 22, 23, 25, 30, 80, 443, 444, 8080]), rng.choice([0, 3])
            expected = any(
                ipaddress.IPv4Address(src) in ipaddress.IPv4Network(r.cidr or "")
                and _covers(r, proto, port, code)
                for r in rules
            )
            assert _contains(elems, src, proto, port, code) == expected, (src, proto, port, code, rules)


def _covers(rule: Rule, protocol: str, port: int, code: int) -> bool:
    return bool(rule_covers(rule, protocol, port, code))


def test_disjoint_cuts_overlaps_and_merges_neighbouring_cells_again() -> None:
    wide, narrow = ipaddress.IPv4Network("10.0.0.0/8"), ipaddress.IPv4Network("10.1.0.0/16")
    assert disjoint([(((20, 30),), wide), (((25, 40),), wide)]) == [(((20, 40),), [wide])]
    assert disjoint([(((20, 30),), wide), (((25, 40),), narrow)]) == [
        (((20, 30),), [wide]),
        (((31, 40),), [narrow]),
    ]


# -- the host table --------------------------------------------------------------------------------


def _host(*vpcs: Vpc) -> vpc_nft.Table:
    return vpc_nft.host_table(PREFIX, "m0pub", [vpc_nft.VpcOnNode(v, n + 1) for n, v in enumerate(vpcs)])


def test_a_group_is_one_chain_with_one_lookup_per_kind_whatever_its_rule_count() -> None:
    many = SecurityGroup(
        "sg-many", ingress=tuple(Rule("tcp", p, p, cidr=f"10.{p}.0.0/16") for p in range(1, 201))
    )
    table = _host(_vpc((many,), _iface(1, "sg-many")))
    chain = table.objects["chain g12_sg_many_in"]
    assert len(chain.body) == 1
    assert (
        chain.body[0].startswith("ip saddr . meta l4proto . th dport { ")
        and chain.body[0].count(" . tcp . ") == 200
    )


def test_the_host_table_keys_by_bridge_then_interface_address() -> None:
    script = vpc_nft.full_script(_host(_vpc((WEB, LB), _iface(1, "sg-web"), _iface(2, "sg-lb"))))
    assert '"m0v12" : jump v12_eg' in script and '"m0v12" : 1' in script  # vmap and conntrack zone
    assert "172.31.0.11 : jump c12_" in script
    # a rule naming a group: that group's member addresses in the same single lookup
    assert "ip saddr . meta l4proto . th dport { 10.0.0.0/8 . tcp . 20-21, 0.0.0.0/0 . tcp . 22, " in script
    assert "172.31.0.12 . tcp . 80 } accept" in script
    assert "ip daddr . meta l4proto . th dport { 172.31.0.11 . tcp . 80 } accept" in script
    assert 'iifname "m0pub" oifname != "m0pub" counter drop' in script
    assert "type filter hook forward priority filter + 10; policy accept;" in script


def test_an_unchanged_table_needs_no_script_and_a_rule_change_rewrites_one_chain() -> None:
    web = _vpc((WEB, LB), _iface(1, "sg-web"), _iface(2, "sg-lb"))
    other = _vpc((WEB, LB), _iface(3, "sg-web"), vni=13, vpc_id="vpc-2")
    old = _host(web, other)
    assert vpc_nft.diff_script(old, _host(web, other)) == ""
    changed = replace(WEB, ingress=(*WEB.ingress, Rule("udp", 53, 53, cidr="10.0.0.0/8")))
    script = vpc_nft.diff_script(old, _host(replace(web, groups=(changed, LB)), other))
    assert script is not None
    assert script.splitlines()[0] == "flush chain inet mallee_vpc_m0 g12_sg_web_in"
    assert all(
        line.startswith(("flush chain", "add rule")) and "g12_sg_web_in" in line
        for line in script.splitlines()
    )


def test_a_membership_change_rewrites_only_the_chains_of_groups_naming_it() -> None:
    web = _vpc((WEB, LB), _iface(1, "sg-web"), _iface(2, "sg-lb"))
    moved = replace(LB, members=("172.31.0.12", "172.31.1.40"))
    script = vpc_nft.diff_script(_host(web), _host(replace(web, groups=(WEB, moved))))
    assert script is not None
    assert {line.split()[4] for line in script.splitlines()} == {"g12_sg_web_in"}
    assert "172.31.1.40 . tcp . 80" in script


def test_a_removed_vpc_is_deleted_after_what_refers_to_it() -> None:
    web = _vpc((WEB, LB), _iface(1, "sg-web"), _iface(2, "sg-lb"))
    other = _vpc((WEB, LB), _iface(3, "sg-web"), vni=13, vpc_id="vpc-2")
    script = vpc_nft.diff_script(_host(web, other), _host(web))
    assert script is not None
    lines = script.splitlines()
    deletes = [ln for ln in lines if ln.startswith("delete")]
    assert deletes and lines.index(deletes[0]) > max(
        i for i, ln in enumerate(lines) if not ln.startswith("delete")
    )
    order = [ln.split()[1] + " " + ln.split()[-1] for ln in deletes]
    assert order.index("chain v13_in") < order.index("map v13_in_if") < order.index("chain g13_sg_web_in")


def test_a_changed_hook_needs_a_full_replacement() -> None:
    old = vpc_nft.Table("inet", "t")
    old.add(vpc_nft.NftObject("chain", "c", 0, ("type filter hook input priority 0; policy accept;",)))
    new = vpc_nft.Table("inet", "t")
    new.add(vpc_nft.NftObject("chain", "c", 0, ("type filter hook output priority 0; policy accept;",)))
    assert vpc_nft.diff_script(old, new) is None


# -- anti-spoofing and the router -------------------------------------------------------------------


def test_antispoof_pins_each_tap_and_fences_the_vxlan_port() -> None:
    vpc = _vpc((WEB,), _iface(1, "sg-web"), peers=("10.0.0.2",))
    script = vpc_nft.full_script(vpc_nft.antispoof_table(PREFIX, [vpc], ["stranger0"], [12]))
    assert '"tap1" . 02:00:00:00:00:01 . 172.31.0.11' in script
    assert '"stranger0"' in script and '"m0x12" . 172.31.1.1' in script
    assert f'"m0x12" . {vpc_model.gateway_mac(12)}' in script
    assert f'"m0x12" : {vpc_model.node_router_mac(PREFIX, 12)}' in script


def test_the_router_table_maps_public_and_private_addresses_both_ways() -> None:
    vpc = _vpc((WEB,), _iface(1, "sg-web", public="198.51.100.7"), _iface(2, "sg-web"))
    script = vpc_nft.full_script(vpc_nft.router_table(vpc))
    assert "198.51.100.7 : 172.31.0.11" in script and "172.31.0.11 : 198.51.100.7" in script
    assert 'iifname "pub0" dnat to ip daddr map @public_to_private' in script
    assert "172.31.0.12 :" not in script


def test_the_gateway_mac_is_the_same_on_every_node_and_the_router_mac_is_not() -> None:
    assert vpc_model.gateway_mac(0x123456) == "02:6d:6c:12:34:56"
    assert vpc_model.node_router_mac("m0", 7) != vpc_model.node_router_mac("m1", 7)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="nft -c needs root")
def test_rendered_tables_pass_nft_check() -> None:
    web = _vpc((WEB, LB), _iface(1, "sg-web", public="198.51.100.7"), _iface(2, "sg-lb"), peers=("10.0.0.2",))
    for table in (_host(web), vpc_nft.antispoof_table(PREFIX, [web], [], [12]), vpc_nft.router_table(web)):
        done = subprocess.run(
            ["nft", "-c", "-f", "-"], input=vpc_nft.full_script(table), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
