"""Security-group rules as EC2 speaks of them: IpPermissions in, one row per (protocol, ports,
peer) out, and the views (IpPermissions grouped back; SecurityGroupRule) that Describe calls give.

A peer is a CIDR or a group of the same VPC. Protocols are tcp, udp, icmp (by name or number) or -1
(all); other protocol numbers, IPv6 ranges and prefix lists are refused by name.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.network_tables import SecurityGroup, SecurityGroupRule

_PROTOCOLS = {
    "tcp": "tcp",
    "6": "tcp",
    "udp": "udp",
    "17": "udp",
    "icmp": "icmp",
    "1": "icmp",
    "-1": "-1",
    "all": "-1",
}


@dataclass(frozen=True)
class Spec:
    """One rule as the caller described it (before it has an id)."""

    protocol: str
    from_port: int
    to_port: int
    cidr: str | None
    group_id: str | None
    description: str = ""

    def key(self) -> tuple[str, int, int, str | None, str | None]:
        return (self.protocol, self.from_port, self.to_port, self.cidr, self.group_id)

    def describe(self) -> str:
        peer = self.cidr or self.group_id
        protocol = self.protocol.upper() if self.protocol != "-1" else "ALL"
        return f"peer: {peer}, {protocol}, from port: {self.from_port}, to port: {self.to_port}, ALLOW"


def row_key(rule: SecurityGroupRule) -> tuple[str, int, int, str | None, str | None]:
    return (rule.protocol, rule.from_port, rule.to_port, rule.cidr, rule.referenced_group_id)


def protocol_and_ports(raw: Any, from_port: Any, to_port: Any) -> tuple[str, int, int]:
    name = str(raw if raw is not None else "").lower()
    protocol = _PROTOCOLS.get(name)
    if protocol is None:
        if name.isdigit() and 0 <= int(name) <= 255:
            raise CloudError(
                "UnsupportedOperation", f"Mallee does not support rules for IP protocol {name} yet."
            )
        raise CloudError("InvalidParameterValue", f"Invalid value '{raw}' for IP protocol. Unknown protocol.")
    if protocol == "-1":
        return protocol, -1, -1
    low = -1 if from_port is None else int(from_port)
    high = -1 if to_port is None else int(to_port)
    if protocol == "icmp":
        if not (-1 <= low <= 255 and -1 <= high <= 255):
            raise CloudError("InvalidParameterValue", f"Invalid ICMP type/code: {low}/{high}")
        return protocol, low, high
    if from_port is None or to_port is None:
        raise CloudError(
            "InvalidParameterValue", "Invalid value 'Must specify both from and to ports with TCP/UDP.'"
        )
    if not (0 <= low <= 65535 and 0 <= high <= 65535) or low > high:
        raise CloudError("InvalidParameterValue", f"Invalid TCP/UDP port range {low}-{high}.")
    return protocol, low, high


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value))
    except ValueError:
        raise CloudError("InvalidParameterValue", f"CIDR block {value} is malformed") from None


def _peer_group(ctx: RequestContext, group: SecurityGroup, pair: dict[str, Any]) -> str:
    """A group named by a UserIdGroupPair: of the caller's account and of `group`'s VPC."""
    if pair.get("VpcPeeringConnectionId"):
        raise CloudError("UnsupportedOperation", "Mallee does not support VPC peering yet.")
    if pair.get("UserId") not in (None, "", ctx.account_id):
        raise CloudError(
            "UnsupportedOperation", "Mallee does not support rules naming another account's groups yet."
        )
    if pair.get("GroupId"):
        peer = ctx.session.get(SecurityGroup, pair["GroupId"])
        if peer is None or peer.account_id != ctx.account_id:
            raise CloudError(
                "InvalidGroup.NotFound", f"The security group '{pair['GroupId']}' does not exist"
            )
    elif pair.get("GroupName"):
        peer = ctx.session.scalar(
            select(SecurityGroup).where(
                SecurityGroup.vpc_id == group.vpc_id, SecurityGroup.name == pair["GroupName"]
            )
        )
        if peer is None:
            raise CloudError(
                "InvalidGroup.NotFound",
                f"The security group '{pair['GroupName']}' does not exist in {group.vpc_id}",
            )
    else:
        raise CloudError("MissingParameter", "A group pair needs GroupId or GroupName.")
    if peer.vpc_id != group.vpc_id:
        raise CloudError(
            "InvalidGroup.NotFound",
            f"You have specified two resources that belong to different networks ({peer.id}, {group.id}).",
        )
    return str(peer.id)


def specs_from(ctx: RequestContext, group: SecurityGroup, p: dict[str, Any], *, egress: bool) -> list[Spec]:
    """The rules an Authorize/Revoke call names: its IpPermissions, or the legacy flat members."""
    permissions = list(p.get("IpPermissions") or [])
    legacy = {k: p.get(k) for k in ("IpProtocol", "FromPort", "ToPort", "CidrIp", "SourceSecurityGroupName")}
    if any(v is not None for v in legacy.values()):
        if permissions:
            raise CloudError(
                "InvalidParameterCombination", "Give IpPermissions or the flat parameters, not both."
            )
        if legacy["SourceSecurityGroupName"] is not None:
            if egress or legacy["IpProtocol"] is not None:
                raise CloudError("InvalidParameterCombination", "SourceSecurityGroupName names a group only.")
            for protocol, low, high in (("tcp", 0, 65535), ("udp", 0, 65535), ("icmp", -1, -1)):
                permissions.append(
                    {
                        "IpProtocol": protocol,
                        "FromPort": low,
                        "ToPort": high,
                        "UserIdGroupPairs": [
                            {
                                "GroupName": legacy["SourceSecurityGroupName"],
                                "UserId": p.get("SourceSecurityGroupOwnerId"),
                            }
                        ],
                    }
                )
        else:
            permissions.append(
                {
                    "IpProtocol": legacy["IpProtocol"],
                    "FromPort": legacy["FromPort"],
                    "ToPort": legacy["ToPort"],
                    "IpRanges": [{"CidrIp": legacy["CidrIp"] or "0.0.0.0/0"}],
                }
            )
    if not permissions:
        raise CloudError("MissingParameter", "The request must contain the parameter ipPermissions")
    specs: list[Spec] = []
    for permission in permissions:
        if permission.get("Ipv6Ranges"):
            raise CloudError("UnsupportedOperation", "Mallee does not support IPv6 rules yet.")
        if permission.get("PrefixListIds"):
            raise CloudError("UnsupportedOperation", "Mallee does not support prefix lists yet.")
        protocol, low, high = protocol_and_ports(
            permission.get("IpProtocol"), permission.get("FromPort"), permission.get("ToPort")
        )
        peers = 0
        for item in permission.get("IpRanges") or []:
            specs.append(
                Spec(
                    protocol, low, high, _cidr(item.get("CidrIp") or ""), None, item.get("Description") or ""
                )
            )
            peers += 1
        for pair in permission.get("UserIdGroupPairs") or []:
            peer = _peer_group(ctx, group, pair)
            specs.append(Spec(protocol, low, high, None, peer, pair.get("Description") or ""))
            peers += 1
        if not peers:
            raise CloudError(
                "MissingParameter",
                "A permission needs a source or destination: IpRanges or UserIdGroupPairs.",
            )
    return specs


def spec_from_request(ctx: RequestContext, group: SecurityGroup, request: dict[str, Any]) -> Spec:
    """A SecurityGroupRuleRequest (ModifySecurityGroupRules)."""
    if request.get("CidrIpv6") or request.get("PrefixListId"):
        raise CloudError("UnsupportedOperation", "Mallee does not support IPv6 rules or prefix lists yet.")
    protocol, low, high = protocol_and_ports(
        request.get("IpProtocol"), request.get("FromPort"), request.get("ToPort")
    )
    cidr, peer = request.get("CidrIpv4"), request.get("ReferencedGroupId")
    if (cidr is None) == (peer is None):
        raise CloudError(
            "InvalidParameterCombination", "A rule needs exactly one of CidrIpv4 and ReferencedGroupId."
        )
    if peer is not None:
        return Spec(
            protocol,
            low,
            high,
            None,
            _peer_group(ctx, group, {"GroupId": peer}),
            request.get("Description") or "",
        )
    return Spec(protocol, low, high, _cidr(str(cidr)), None, request.get("Description") or "")


# -- views -----------------------------------------------------------------------------------


def rules_of(s: Session, group_ids: list[str]) -> dict[str, list[SecurityGroupRule]]:
    out: dict[str, list[SecurityGroupRule]] = {g: [] for g in group_ids}
    if group_ids:
        q = (
            select(SecurityGroupRule)
            .where(SecurityGroupRule.group_id.in_(group_ids))
            .order_by(SecurityGroupRule.id)
        )
        for rule in s.scalars(q):
            out[rule.group_id].append(rule)
    return out


def permissions(s: Session, rules: list[SecurityGroupRule], account_id: str) -> list[dict[str, Any]]:
    """Rows grouped into IpPermissions by (protocol, ports), as DescribeSecurityGroups answers."""
    grouped: dict[tuple[str, int, int], dict[str, Any]] = {}
    for rule in rules:
        key = (rule.protocol, rule.from_port, rule.to_port)
        entry = grouped.get(key)
        if entry is None:
            entry = {
                "IpProtocol": rule.protocol,
                "IpRanges": [],
                "Ipv6Ranges": [],
                "PrefixListIds": [],
                "UserIdGroupPairs": [],
            }
            if rule.protocol != "-1":
                entry["FromPort"], entry["ToPort"] = rule.from_port, rule.to_port
            grouped[key] = entry
        if rule.cidr is not None:
            entry["IpRanges"].append(
                {"CidrIp": rule.cidr, **({"Description": rule.description} if rule.description else {})}
            )
        else:
            peer = s.get(SecurityGroup, rule.referenced_group_id)
            pair = {"GroupId": rule.referenced_group_id, "UserId": account_id}
            if peer is not None:
                pair["VpcId"] = peer.vpc_id
            if rule.description:
                pair["Description"] = rule.description
            entry["UserIdGroupPairs"].append(pair)
    return list(grouped.values())


def rule_view(rule: SecurityGroupRule, account_id: str, tag_list: list[dict[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "SecurityGroupRuleId": rule.id,
        "SecurityGroupRuleArn": f"arn:aws:ec2::{account_id}:security-group-rule/{rule.id}",
        "GroupId": rule.group_id,
        "GroupOwnerId": account_id,
        "IsEgress": rule.is_egress,
        "IpProtocol": rule.protocol,
        "FromPort": rule.from_port,
        "ToPort": rule.to_port,
        "Tags": tag_list,
    }
    if rule.cidr is not None:
        out["CidrIpv4"] = rule.cidr
    else:
        out["ReferencedGroupInfo"] = {"GroupId": rule.referenced_group_id, "UserId": account_id}
    if rule.description:
        out["Description"] = rule.description
    return out
