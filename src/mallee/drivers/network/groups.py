"""Security-group semantics as a pure function: the fake driver answers with it, and tests compare
the real driver's packets against it."""

from __future__ import annotations

import ipaddress

from mallee.drivers.network.base import GroupRule


def rule_matches(rule: GroupRule, protocol: str, port: int, code: int = -1) -> bool:
    """Does `rule` cover a packet of `protocol` to `port` (for icmp: type `port`, code `code`)?"""
    if rule.protocol == "-1":
        return True
    if rule.protocol != protocol:
        return False
    if protocol == "icmp":
        return rule.from_port in (-1, port) and rule.to_port in (-1, code)
    if rule.from_port == -1:
        return True
    return rule.from_port <= port <= rule.to_port


def ingress_allowed(
    rules: list[GroupRule],
    members: dict[str, list[str]],
    src: str,
    dst: str,
    protocol: str,
    port: int,
    code: int = -1,
) -> bool:
    """Is a new flow from `src` to instance `dst` admitted (established flows always are)?"""
    source = ipaddress.IPv4Address(src)
    for rule in rules:
        if dst not in members.get(rule.group_id, []):
            continue
        if not rule_matches(rule, protocol, port, code):
            continue
        if rule.cidr is not None and source in ipaddress.IPv4Network(rule.cidr, strict=False):
            return True
        if rule.source_group is not None and src in members.get(rule.source_group, []):
            return True
    return False
