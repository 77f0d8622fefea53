"""The VPC data plane's nftables rulesets, rendered as text, and the incremental scripts between two
renderings (one `nft -f` transaction each: a packet sees the old or the new rules, never a mix).

Three kinds of table:
- `table inet mallee_vpc_<prefix>` (host namespace): conntrack zone per VPC bridge (raw prerouting),
  the guard (nothing between a VPC bridge or the public bridge and any other interface; nothing from
  a VPC bridge to the host itself), and stateful security groups in the forward hook, where bridged
  IPv4 passes with iif = oif = the bridge (br_netfilter). Egress (priority 0) and ingress (priority
  10) are two base chains: an `accept` ends only its own chain, so a packet between two interfaces
  passes the sender's egress and then the receiver's ingress. Lookups per packet: bridge -> VPC
  chain (vmap), interface address -> chain of its group combination (vmap), then per group of the
  interface one concatenated interval set (address . protocol . ports; rules naming a group count as
  rules for each member address): independent of the number of rules, CIDRs and members.
- `table bridge mallee_vpc_<prefix>_as`: stateless anti-spoofing per tap (MAC, IP, ARP; IPv6 and
  anything else dropped) and the VXLAN fence: no frame for the gateway MAC, no ARP from or for a
  gateway address and no DHCP crosses a VXLAN port; IPv4 the router routes to a remote interface
  leaves with this node's own router MAC instead of the shared gateway MAC (as a distributed router).
- `table ip mallee_router` inside each router namespace: 1:1 NAT on the public leg, what may be
  forwarded there, and what the router itself answers (DHCP, metadata, ping).
Each object (set, map, chain) is compared with the last rendering: only changed ones are flushed and
refilled, so a one-rule change rewrites one group's chain.
"""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mallee.drivers.network import vpc_model as names
from mallee.drivers.network.vpc_contract import METADATA_IP, Interface, Rule, Vpc, VpcNetworkError
from mallee.drivers.network.vpc_groups import ALL, Net, Range, elements

NFT = "nft"
KINDS = ("set", "map", "chain")


@dataclass(frozen=True)
class NftObject:
    kind: str  # set, map or chain
    name: str
    level: int  # created in ascending, deleted in descending level (what refers to what)
    head: tuple[str, ...] = ()  # set/map: type and flags; base chain: its hook statement
    body: tuple[str, ...] = ()  # set/map: elements; chain: rules


@dataclass(frozen=True)
class Table:
    family: str
    name: str
    objects: dict[str, NftObject] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.family} {self.name}"

    def add(self, obj: NftObject) -> None:
        self.objects[f"{obj.kind} {obj.name}"] = obj


def host_table_name(prefix: str) -> str:
    return f"mallee_vpc_{prefix}"


def antispoof_table_name(prefix: str) -> str:
    return f"mallee_vpc_{prefix}_as"


ROUTER_TABLE = "mallee_router"


def ident(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", value)


# -- rendering scripts -----------------------------------------------------------------------------


def full_script(table: Table) -> str:
    """Create or replace `table` whole, in one transaction."""
    lines = [f"table {table.ref}", f"delete table {table.ref}", f"table {table.ref} {{"]
    for obj in sorted(table.objects.values(), key=lambda o: (o.level, o.kind, o.name)):
        lines.append(f"\t{obj.kind} {obj.name} {{")
        lines += [f"\t\t{h}" for h in obj.head]
        if obj.kind == "chain":
            lines += [f"\t\t{rule}" for rule in obj.body]
        elif obj.body:
            lines.append(f"\t\telements = {{ {', '.join(obj.body)} }}")
        lines.append("\t}")
    return "\n".join([*lines, "}"]) + "\n"


def diff_script(old: Table, new: Table) -> str | None:
    """Commands turning `old` into `new` ("" when equal), or None when only a full replacement can
    (an object changed its type or hook)."""
    out: list[str] = []
    for obj in sorted(new.objects.values(), key=lambda o: (o.level, o.kind, o.name)):
        before = old.objects.get(f"{obj.kind} {obj.name}")
        if before == obj:
            continue
        if before is not None and before.head != obj.head:
            return None
        if before is None:
            out.append(_create(new, obj))
        else:
            out.append(f"flush {obj.kind} {new.ref} {obj.name}")
        out += _fill(new, obj)
    gone = [o for k, o in old.objects.items() if k not in new.objects]
    for obj in sorted(gone, key=lambda o: (-o.level, o.kind, o.name)):
        out.append(f"delete {obj.kind} {new.ref} {obj.name}")
    return "\n".join(out) + "\n" if out else ""


def _create(table: Table, obj: NftObject) -> str:
    head = "; ".join(h.rstrip(";") for h in obj.head)
    return (
        f"add {obj.kind} {table.ref} {obj.name} {{ {head}; }}"
        if head
        else f"add chain {table.ref} {obj.name}"
    )


def _fill(table: Table, obj: NftObject) -> list[str]:
    if obj.kind == "chain":
        return [f"add rule {table.ref} {obj.name} {rule}" for rule in obj.body]
    if obj.body:
        return [f"add element {table.ref} {obj.name} {{ {', '.join(obj.body)} }}"]
    return []


def delete_script(family: str, name: str) -> str:
    """Remove a table; succeeds when it is missing."""
    return f"table {family} {name}\ndelete table {family} {name}\n"


def apply(script: str, namespace: str | None = None, nft: str = NFT) -> float:
    """Run `script` with one `nft -f -` (in `namespace` if given); returns the seconds it took."""
    argv = [nft, "-f", "-"] if namespace is None else ["ip", "netns", "exec", namespace, nft, "-f", "-"]
    started = time.monotonic()
    done = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise VpcNetworkError(f"nft failed: {done.stderr.strip()[:2000]}")
    return time.monotonic() - started


# -- the host table: zones, guard, security groups ---------------------------------------------------


@dataclass(frozen=True)
class VpcOnNode:
    vpc: Vpc
    zone: int


RenderCache = dict[int, tuple[Vpc, dict[str, NftObject]]]


def host_table(
    prefix: str, public_bridge: str, vpcs: Sequence[VpcOnNode], cache: RenderCache | None = None
) -> Table:
    """The node's table. `cache` (VNI -> the VPC last rendered and its objects), when given, is used
    and updated: a VPC equal to its last rendering is not rendered again."""
    table = Table("inet", host_table_name(prefix))
    bridges = [f'"{names.bridge(prefix, v.vpc.vni)}"' for v in vpcs]
    for item in vpcs:
        known = cache.get(item.vpc.vni) if cache is not None else None
        if known is not None and known[0] == item.vpc:
            table.objects.update(known[1])
            continue
        own = Table(table.family, table.name)
        _add_vpc(own, prefix, item.vpc)
        table.objects.update(own.objects)
        if cache is not None:
            cache[item.vpc.vni] = (item.vpc, own.objects)
    if cache is not None:
        for vni in set(cache) - {v.vpc.vni for v in vpcs}:
            del cache[vni]
    zones = [f'"{names.bridge(prefix, v.vpc.vni)}" : {v.zone}' for v in vpcs]
    table.add(NftObject("map", "zones", 5, ("typeof iifname : ct zone",), tuple(zones)))
    for direction in ("in", "eg"):
        jumps = [f'"{names.bridge(prefix, v.vpc.vni)}" : jump v{v.vpc.vni}_{direction}' for v in vpcs]
        table.add(NftObject("map", f"vpc_{direction}", 5, ("type ifname : verdict",), tuple(jumps)))
    table.add(NftObject("set", "bridges", 5, ("type ifname",), tuple(bridges)))
    pub = f'"{public_bridge}"'
    table.add(_base("raw", "filter hook prerouting priority raw", "ct zone set iifname map @zones"))
    table.add(
        _base(
            "egress",
            "filter hook forward priority filter",
            "iifname vmap @vpc_eg",
            'oifname @bridges counter drop comment "guard: into a VPC bridge from elsewhere"',
            f'iifname {pub} oifname != {pub} counter drop comment "guard: off the public bridge"',
            f'oifname {pub} iifname != {pub} counter drop comment "guard: onto the public bridge"',
        )
    )
    table.add(_base("ingress", "filter hook forward priority filter + 10", "iifname vmap @vpc_in"))
    table.add(
        _base(
            "input",
            "filter hook input priority filter",
            'iifname @bridges counter drop comment "guard: the host"',
        )
    )
    return table


def _base(name: str, hook: str, *rules: str) -> NftObject:
    return NftObject("chain", name, 6, (f"type {hook}; policy accept;",), rules)


def _add_vpc(table: Table, prefix: str, vpc: Vpc) -> None:
    v = vpc.vni
    br = f'"{names.bridge(prefix, v)}"'
    groups = {g.group_id: g for g in vpc.groups}
    for group_id in sorted({g for i in vpc.interfaces for g in i.group_ids}):
        group = groups[group_id]
        for direction, rules in (("in", group.ingress), ("eg", group.egress)):
            named = sorted({r.group_id for r in rules if r.group_id is not None})
            members = tuple((g, tuple(sorted(set(groups[g].members), key=_ip_key))) for g in named)
            body = group_rules(direction, tuple(rules), members)
            table.add(NftObject("chain", f"g{v}_{ident(group_id)}_{direction}", 1, (), body))
    combos = {tuple(sorted(set(i.group_ids))) for i in vpc.interfaces}
    for combo in combos:
        for direction in ("in", "eg"):
            jumps = [f"jump g{v}_{ident(g)}_{direction}" for g in combo]
            table.add(NftObject("chain", combo_chain(v, combo, direction), 2, (), (*jumps, "drop")))
    for direction in ("in", "eg"):
        entries = [
            f"{i.private_ip} : jump {combo_chain(v, tuple(sorted(set(i.group_ids))), direction)}"
            for i in sorted(vpc.interfaces, key=lambda i: _ip_key(i.private_ip))
        ]
        table.add(NftObject("map", f"v{v}_{direction}_if", 3, ("type ipv4_addr : verdict",), tuple(entries)))
    table.add(
        NftObject(
            "chain",
            f"v{v}_eg",
            4,
            (),
            (
                f"oifname != {br} counter drop",
                "ct state established,related accept",
                "ct state invalid drop",
                "udp sport 68 udp dport 67 accept",
                f"ip daddr {METADATA_IP} meta l4proto tcp accept",
                f"ip saddr vmap @v{v}_eg_if",
                "accept",
            ),
        )
    )
    table.add(
        NftObject(
            "chain",
            f"v{v}_in",
            4,
            (),
            (
                "ct state established,related accept",
                "udp sport 67 udp dport 68 accept",
                f"ip daddr vmap @v{v}_in_if",
                "accept",
            ),
        )
    )


def combo_chain(vni: int, combo: tuple[str, ...], direction: str) -> str:
    digest = hashlib.sha256("\0".join(combo).encode()).hexdigest()[:12]
    return f"c{vni}_{digest}_{direction}"


@functools.lru_cache(maxsize=1 << 16)
def group_rules(
    direction: str, rules: tuple[Rule, ...], members: tuple[tuple[str, tuple[str, ...]], ...]
) -> tuple[str, ...]:
    """One direction of a group as at most three rules (cached: an apply re-renders only groups
    whose rules or named members changed)."""
    elems = elements(rules, dict(members))
    peer = "ip saddr" if direction == "in" else "ip daddr"
    out = []
    if elems.ports:
        items = [f"{_net(n)} . {proto} . {_range(r)}" for n, proto, r in elems.ports]
        out.append(f"{peer} . meta l4proto . th dport {{ {', '.join(items)} }} accept")
    if elems.icmp:
        items = [f"{_net(n)} . {_range(t)} . {_range(c)}" for n, t, c in elems.icmp]
        out.append(f"{peer} . icmp type . icmp code {{ {', '.join(items)} }} accept")
    if elems.any == (ALL,):
        out.append("accept")
    elif elems.any:
        out.append(f"{peer} {{ {', '.join(_net(n) for n in elems.any)} }} accept")
    return tuple(out)


def _net(net: Net) -> str:
    return str(net.network_address) if net.prefixlen == 32 else str(net)


def _range(r: Range) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"


def _ip_key(ip: str) -> tuple[int, ...]:
    return tuple(int(p) for p in ip.split("."))


# -- anti-spoofing and the VXLAN fence (bridge family) ------------------------------------------------


def antispoof_table(
    prefix: str, vpcs: Sequence[Vpc], strangers: Iterable[str] = (), vxlans: Iterable[int] = ()
) -> Table:
    """`strangers`: ports on the VPC bridges that are no interface, router leg or VXLAN device (all
    their frames are dropped); `vxlans`: the VNIs whose VXLAN device exists."""
    ifaces: list[Interface] = sorted((i for v in vpcs for i in v.interfaces), key=lambda i: i.device)
    ports = sorted({f'"{i.device}"' for i in ifaces} | {f'"{s}"' for s in strangers})
    pinned = [f'"{i.device}" . {i.mac} . {i.private_ip}' for i in ifaces]
    pinned_mac = [f'"{i.device}" . {i.mac}' for i in ifaces]
    with_vx = [v for v in vpcs if v.vni in set(vxlans)]
    vx_names = [f'"{names.vxlan(prefix, v.vni)}"' for v in with_vx]
    gw_macs = [f'"{names.vxlan(prefix, v.vni)}" . {names.gateway_mac(v.vni)}' for v in with_vx]
    gw_ips = [f'"{names.vxlan(prefix, v.vni)}" . {s.gateway}' for v in with_vx for s in v.subnets]
    router_macs = [
        f'"{names.vxlan(prefix, v.vni)}" : {names.node_router_mac(prefix, v.vni)}' for v in with_vx
    ]
    table = Table("bridge", antispoof_table_name(prefix))
    for name, kind, body in (
        ("ports", "ifname", ports),
        ("pinned", "ifname . ether_addr . ipv4_addr", pinned),
        ("pinned_mac", "ifname . ether_addr", pinned_mac),
        ("vxlans", "ifname", vx_names),
        ("vx_gw_mac", "ifname . ether_addr", gw_macs),
        ("vx_gw_ip", "ifname . ipv4_addr", gw_ips),
    ):
        table.add(NftObject("set", name, 0, (f"type {kind}",), tuple(body)))
    table.add(NftObject("map", "vx_router_mac", 0, ("type ifname : ether_addr",), tuple(router_macs)))

    def chain(name: str, level: int, *rules: str) -> None:
        table.add(NftObject("chain", name, level, (), rules))

    chain(
        "arp_from_instance",
        1,
        "iifname . ether saddr . arp saddr ip @pinned "
        "iifname . arp saddr ether . arp saddr ip @pinned accept",
        "arp saddr ip 0.0.0.0 iifname . ether saddr @pinned_mac iifname . arp saddr ether @pinned_mac accept",
        "counter drop",
    )
    chain(
        "ip_from_instance",
        1,
        "iifname . ether saddr . ip saddr @pinned accept",
        "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 "
        "iifname . ether saddr @pinned_mac accept",
        "counter drop",
    )
    chain(
        "from_instance",
        2,
        "ether type arp jump arp_from_instance",
        "ether type ip jump ip_from_instance",
        "counter drop",
    )
    chain(
        "from_vxlan",
        2,
        "iifname . ether saddr @vx_gw_mac drop",
        "ether type arp iifname . arp daddr ip @vx_gw_ip drop",
        "ether type arp iifname . arp saddr ip @vx_gw_ip drop",
    )
    chain(
        "to_vxlan",
        2,
        "ether type arp oifname . ether saddr @vx_gw_mac drop",
        "oifname . ether daddr @vx_gw_mac drop",
        "ether type arp oifname . arp daddr ip @vx_gw_ip drop",
        "ether type arp oifname . arp saddr ip @vx_gw_ip drop",
        "udp dport { 67, 68 } drop",
        # routed to a remote interface: leaves with this node's router MAC, not the shared one
        "ether type ip oifname . ether saddr @vx_gw_mac ether saddr set oifname map @vx_router_mac",
        "oifname . ether saddr @vx_gw_mac drop",
    )
    table.add(
        NftObject(
            "chain",
            "prerouting",
            3,
            ("type filter hook prerouting priority -200; policy accept;",),
            ("iifname @ports jump from_instance", "iifname @vxlans jump from_vxlan"),
        )
    )
    table.add(
        NftObject(
            "chain",
            "forward",
            3,
            ("type filter hook forward priority -200; policy accept;",),
            ("oifname @vxlans jump to_vxlan",),
        )
    )
    return table


# -- the router namespace's table --------------------------------------------------------------------


def router_table(vpc: Vpc) -> Table:
    """1:1 NAT for the VPC's public addresses on this node, and the router's own filters."""
    public = sorted((i for i in vpc.interfaces if i.public_ip), key=lambda i: _ip_key(i.public_ip or ""))
    vpc_if, pub_if = f'"{names.ROUTER_VPC_IF}"', f'"{names.ROUTER_PUBLIC_IF}"'
    table = Table("ip", ROUTER_TABLE)
    table.add(
        NftObject(
            "map",
            "public_to_private",
            0,
            ("type ipv4_addr : ipv4_addr",),
            tuple(f"{i.public_ip} : {i.private_ip}" for i in public),
        )
    )
    table.add(
        NftObject(
            "map",
            "private_to_public",
            0,
            ("type ipv4_addr : ipv4_addr",),
            tuple(f"{i.private_ip} : {i.public_ip}" for i in public),
        )
    )
    table.add(NftObject("set", "natted", 0, ("type ipv4_addr",), tuple(i.private_ip for i in public)))
    table.add(
        NftObject(
            "chain",
            "prerouting",
            1,
            ("type nat hook prerouting priority dstnat; policy accept;",),
            (f"iifname {pub_if} dnat to ip daddr map @public_to_private",),
        )
    )
    table.add(
        NftObject(
            "chain",
            "postrouting",
            1,
            ("type nat hook postrouting priority srcnat; policy accept;",),
            (f"oifname {pub_if} snat to ip saddr map @private_to_public",),
        )
    )
    table.add(
        NftObject(
            "chain",
            "forward",
            1,
            ("type filter hook forward priority filter; policy drop;",),
            (
                "ct state established,related accept",
                f"iifname {vpc_if} oifname {vpc_if} accept",
                f"iifname {vpc_if} oifname {pub_if} ip saddr @natted accept",
                f"iifname {pub_if} oifname {vpc_if} ct status dnat accept",
            ),
        )
    )
    table.add(
        NftObject(
            "chain",
            "input",
            1,
            ("type filter hook input priority filter; policy drop;",),
            (
                'iifname "lo" accept',
                "ct state established,related accept",
                f"iifname {vpc_if} udp sport 68 udp dport 67 accept",
                f"iifname {vpc_if} ip daddr {METADATA_IP} meta l4proto tcp accept",
                f"iifname {vpc_if} icmp type echo-request accept",
            ),
        )
    )
    return table
