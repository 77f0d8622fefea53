"""VPC security groups as pure functions: what AWS admits (the fake answers with it; the e2e tests
compare real packets against it), and a group's rules folded into disjoint set elements for nftables
(the kernel's concatenated interval sets refuse overlapping elements)."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from mallee.drivers.network.vpc_contract import Interface, Rule, SecurityGroup, Vpc
from mallee.drivers.network.vpc_model import icmp_ranges, port_range

Range = tuple[int, int]
Net = ipaddress.IPv4Network
ALL = Net("0.0.0.0/0")


@functools.lru_cache(maxsize=1 << 16)
def _network(cidr: str) -> Net:
    return Net(cidr)


def rule_covers(rule: Rule, protocol: str, port: int, code: int = -1) -> bool:
    """Does `rule` cover a packet of `protocol` to `port` (icmp: type `port`, code `code`)?"""
    if rule.protocol == "-1":
        return True
    if rule.protocol != protocol:
        return False
    if protocol == "icmp":
        (tlo, thi), (clo, chi) = icmp_ranges(rule)
        return tlo <= port <= thi and (clo <= code <= chi or (clo, chi) == (0, 255))
    low, high = port_range(rule)
    return low <= port <= high


def _peer_matches(rule: Rule, peer: str, groups: dict[str, SecurityGroup]) -> bool:
    if rule.cidr is not None:
        return ipaddress.IPv4Address(peer) in Net(rule.cidr)
    named = groups.get(rule.group_id or "")
    return named is not None and peer in named.members


def allowed(
    vpc: Vpc, iface: Interface, direction: str, peer: str, protocol: str, port: int, code: int = -1
) -> bool:
    """Is a NEW flow admitted by `iface`'s groups: ingress from `peer`, or egress to `peer`?"""
    groups = {g.group_id: g for g in vpc.groups}
    for group_id in iface.group_ids:
        group = groups[group_id]
        rules = group.ingress if direction == "ingress" else group.egress
        for rule in rules:
            if rule_covers(rule, protocol, port, code) and _peer_matches(rule, peer, groups):
                return True
    return False


@dataclass(frozen=True)
class Elements:
    """One direction of one group, as nftables set elements (each list disjoint)."""

    ports: tuple[tuple[Net, str, Range], ...] = ()  # address block . tcp/udp . port range
    icmp: tuple[tuple[Net, Range, Range], ...] = ()  # address block . type range . code range
    any: tuple[Net, ...] = ()  # address block, every protocol


def elements(rules: Sequence[Rule], members: Mapping[str, Sequence[str]] | None = None) -> Elements:
    """Fold `rules` into disjoint elements; a rule naming a group counts as one rule per member
    address of that group (`members`: group id -> addresses), so a group is one lookup per kind."""
    expanded = []
    for rule in rules:
        if rule.cidr is not None:
            expanded.append(rule)
        else:
            for ip in (members or {}).get(rule.group_id or "", ()):
                expanded.append(replace(rule, cidr=f"{ip}/32", group_id=None))
    return Elements(
        ports=tuple(_ports(expanded)),
        icmp=tuple(_icmp(expanded)),
        any=tuple(
            ipaddress.collapse_addresses(_network(r.cidr or "") for r in expanded if r.protocol == "-1")
        ),
    )


def _ports(rules: Sequence[Rule]) -> list[tuple[Net, str, Range]]:
    out = []
    for proto in ("tcp", "udp"):
        boxes = [((port_range(r),), _network(r.cidr or "")) for r in rules if r.protocol == proto]
        out += [(net, proto, ranges[0]) for ranges, nets in disjoint(boxes) for net in nets]
    return out


def _icmp(rules: Sequence[Rule]) -> list[tuple[Net, Range, Range]]:
    boxes = [(icmp_ranges(r), _network(r.cidr or "")) for r in rules if r.protocol == "icmp"]
    return [(net, ranges[0], ranges[1]) for ranges, nets in disjoint(boxes) for net in nets]


def disjoint(boxes: Sequence[tuple[tuple[Range, ...], Net]]) -> list[tuple[tuple[Range, ...], list[Net]]]:
    """Fold boxes (ranges in each dimension × an address block) into disjoint ones covering the same
    points: each dimension is cut at every box edge, the address blocks of a cell are collapsed, and
    neighbouring cells with the same content are merged again."""
    if not boxes:
        return []
    if not boxes[0][0]:
        nets = [net for _, net in boxes]
        return [((), nets if len(nets) == 1 else list(ipaddress.collapse_addresses(nets)))]
    ordered = sorted(boxes, key=lambda box: box[0][0])
    if all(a[0][0][1] < b[0][0][0] for a, b in zip(ordered, ordered[1:], strict=False)):
        # the common case: no two rules share a port (or type): each box is its own cell
        return [
            ((ranges[0], *rest), nets)
            for ranges, net in ordered
            for rest, nets in disjoint([(ranges[1:], net)])
        ]
    firsts = [ranges[0] for ranges, _ in boxes]
    cuts = sorted({low for low, _ in firsts} | {high + 1 for _, high in firsts})
    cells: list[tuple[Range, list[tuple[tuple[Range, ...], list[Net]]]]] = []
    for low, next_low in zip(cuts, cuts[1:], strict=False):
        inside = [
            (ranges[1:], net) for ranges, net in boxes if ranges[0][0] <= low and next_low - 1 <= ranges[0][1]
        ]
        if not inside:
            continue
        rest = disjoint(inside)
        if cells and cells[-1][0][1] + 1 == low and cells[-1][1] == rest:
            cells[-1] = ((cells[-1][0][0], next_low - 1), rest)
        else:
            cells.append(((low, next_low - 1), rest))
    return [((span, *ranges), nets) for span, rest in cells for ranges, nets in rest]
