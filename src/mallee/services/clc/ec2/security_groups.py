"""Security groups, as AWS's VPC groups: Create/Delete/DescribeSecurityGroups, Authorize/Revoke
ingress and egress (by IpPermissions or by rule ids), DescribeSecurityGroupRules,
ModifySecurityGroupRules, UpdateSecurityGroupRuleDescriptions{Ingress,Egress}.

A group belongs to one VPC; a group name alone means the caller's default VPC (as EC2 does). Every
VPC's `default` group cannot be deleted (`CannotDelete`). A new group allows all egress and no
ingress. Rules live in security_group_rules.py; nodes enforce them from these rows.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import func, select

from mallee.core import ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import resources, tags, vpcs
from mallee.services.clc.ec2 import security_group_rules as rules
from mallee.services.clc.network_tables import NetworkInterface, SecurityGroup, SecurityGroupRule

NOT_FOUND = "InvalidGroup.NotFound"
MAX_GROUPS_PER_VPC = 2500
MAX_RULES = 60  # per direction, AWS's default quota
# AWS's characters for VPC group names and descriptions.
_TEXT = re.compile(r"^[A-Za-z0-9 ._\-:/()#,@\[\]+=&;{}!$*]*$")


def _check_text(value: str, what: str) -> None:
    if not value or len(value) > 255 or not _TEXT.match(value):
        raise CloudError(
            "InvalidParameterValue",
            f"Invalid {what} '{value}': 1-255 of a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{{}}!$*",
        )


def by_id(ctx: RequestContext, group_id: str) -> SecurityGroup:
    if not ids.is_resource_id(group_id, "sg"):
        raise CloudError("InvalidGroupId.Malformed", f'Invalid id: "{group_id}" (expecting "sg-...")')
    group: SecurityGroup | None = ctx.session.get(SecurityGroup, group_id)
    if group is None or group.account_id != ctx.account_id:
        raise CloudError(NOT_FOUND, f"The security group '{group_id}' does not exist")
    return group


def by_name(ctx: RequestContext, name: str) -> SecurityGroup:
    """A group named in the caller's default VPC (EC2's meaning of a bare group name)."""
    vpc = vpcs.ensure_default(ctx)
    group: SecurityGroup | None = None
    if vpc is not None:
        group = ctx.session.scalar(
            select(SecurityGroup).where(SecurityGroup.vpc_id == vpc.id, SecurityGroup.name == name)
        )
    if group is None:
        raise CloudError(NOT_FOUND, f"The security group '{name}' does not exist in default VPC")
    return group


def target(ctx: RequestContext, p: dict[str, Any]) -> SecurityGroup:
    if p.get("GroupId"):
        return by_id(ctx, p["GroupId"])
    if p.get("GroupName"):
        return by_name(ctx, p["GroupName"])
    raise CloudError("MissingParameter", "The request must contain the parameter groupName or groupId")


def view(
    ctx: RequestContext,
    group: SecurityGroup,
    group_rules: list[SecurityGroupRule],
    tag_list: list[dict[str, str]],
) -> dict[str, Any]:
    s = ctx.session
    return {
        "GroupId": group.id,
        "GroupName": group.name,
        "Description": group.description,
        "VpcId": group.vpc_id,
        "OwnerId": group.account_id,
        "SecurityGroupArn": f"arn:aws:ec2:{ctx.region}:{group.account_id}:security-group/{group.id}",
        "IpPermissions": rules.permissions(s, [r for r in group_rules if not r.is_egress], group.account_id),
        "IpPermissionsEgress": rules.permissions(
            s, [r for r in group_rules if r.is_egress], group.account_id
        ),
        "Tags": tag_list,
    }


def _permission_getter(egress: bool, field: str) -> Any:
    def get(v: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for perm in v["IpPermissionsEgress" if egress else "IpPermissions"]:
            if field == "cidr":
                out += [r["CidrIp"] for r in perm["IpRanges"]]
            elif field == "group-id":
                out += [g["GroupId"] for g in perm["UserIdGroupPairs"]]
            elif field == "protocol":
                out.append(perm["IpProtocol"])
            elif field in ("from-port", "to-port"):
                out.append(perm.get("FromPort" if field == "from-port" else "ToPort", -1))
        return out

    return get


_FILTERS: dict[str, Any] = {
    "group-id": lambda v: v["GroupId"],
    "group-name": lambda v: v["GroupName"],
    "description": lambda v: v["Description"],
    "vpc-id": lambda v: v["VpcId"],
    "owner-id": lambda v: v["OwnerId"],
    **{
        f"ip-permission.{f}": _permission_getter(False, f)
        for f in ("cidr", "group-id", "protocol", "from-port", "to-port")
    },
    **{
        f"egress.ip-permission.{f}": _permission_getter(True, f)
        for f in ("cidr", "group-id", "protocol", "from-port", "to-port")
    },
}


@EC2.operation()
def create_security_group(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    assert ctx.account_id is not None
    s = ctx.session
    name, description = p["GroupName"], p["Description"]
    _check_text(name, "group name")
    _check_text(description, "description")
    if name.lower().startswith("sg-"):
        raise CloudError("InvalidParameterValue", "Group names may not be in the format sg-*.")
    if name == "default":
        raise CloudError("InvalidGroup.Reserved", "The security group 'default' is reserved.")
    if p.get("VpcId"):
        vpc = vpcs.owned(ctx, p["VpcId"])
    else:
        default = vpcs.ensure_default(ctx)
        if default is None:
            raise CloudError(
                "VPCIdNotSpecified",
                "No default VPC for this user. GroupName is only supported for EC2-Classic and default VPC.",
            )
        vpc = default
    if s.scalar(select(SecurityGroup.id).where(SecurityGroup.vpc_id == vpc.id, SecurityGroup.name == name)):
        raise CloudError(
            "InvalidGroup.Duplicate", f"The security group '{name}' already exists for VPC '{vpc.id}'"
        )
    count = (
        s.scalar(select(func.count()).select_from(SecurityGroup).where(SecurityGroup.vpc_id == vpc.id)) or 0
    )
    if count >= MAX_GROUPS_PER_VPC:
        raise CloudError(
            "SecurityGroupLimitExceeded", f"A VPC has at most {MAX_GROUPS_PER_VPC} security groups."
        )
    group = SecurityGroup(
        id=ids.resource_id("sg"), account_id=ctx.account_id, vpc_id=vpc.id, name=name, description=description
    )
    s.add(group)
    s.flush()
    s.add(vpcs.default_egress_rule(group.id))
    tags.from_specifications(s, ctx.account_id, group.id, "security-group", p.get("TagSpecifications"))
    return {
        "GroupId": group.id,
        "SecurityGroupArn": f"arn:aws:ec2:{ctx.region}:{ctx.account_id}:security-group/{group.id}",
        "Tags": tags.tags_of(s, [group.id])[group.id],
    }


@EC2.operation()
def delete_security_group(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s = ctx.session
    group = target(ctx, p)
    if group.name == "default":
        raise CloudError(
            "CannotDelete", f'the specified group: "{group.id}" name: "default" cannot be deleted by a user'
        )
    referrer = s.scalar(
        select(SecurityGroupRule.group_id)
        .where(SecurityGroupRule.referenced_group_id == group.id, SecurityGroupRule.group_id != group.id)
        .limit(1)
    )
    in_use = s.scalar(
        select(NetworkInterface.id).where(NetworkInterface.group_ids.contains(f'"{group.id}"')).limit(1)
    )
    if referrer is not None or in_use is not None:
        what = f"referenced by group {referrer}" if referrer else f"used by {in_use}"
        raise CloudError("DependencyViolation", f"resource {group.id} has a dependent object ({what})")
    tags.remove_all(s, group.id)
    s.delete(group)
    return {"Return": True, "GroupId": group.id}


@EC2.operation()
def describe_security_groups(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s = ctx.session
    vpcs.ensure_default(ctx)
    wanted = [by_id(ctx, g).id for g in p.get("GroupIds") or []]
    wanted += [by_name(ctx, n).id for n in p.get("GroupNames") or []]
    q = (
        select(SecurityGroup)
        .where(SecurityGroup.account_id == ctx.account_id)
        .order_by(SecurityGroup.vpc_id, SecurityGroup.name)
    )
    if wanted:
        q = q.where(SecurityGroup.id.in_(wanted))
    groups = list(s.scalars(q))
    group_rules = rules.rules_of(s, [g.id for g in groups])
    tag_map = tags.tags_of(s, [g.id for g in groups])
    views = [view(ctx, g, group_rules[g.id], tag_map[g.id]) for g in groups]
    return resources.one_page(p, tags.with_tag_filters(views, p.get("Filters"), _FILTERS), "SecurityGroups")


def _authorize(ctx: RequestContext, p: dict[str, Any], *, egress: bool) -> dict[str, Any]:
    assert ctx.account_id is not None
    s = ctx.session
    group = target(ctx, p) if not egress else by_id(ctx, p["GroupId"])
    specs = rules.specs_from(ctx, group, p, egress=egress)
    existing = {
        rules.row_key(r)
        for r in s.scalars(
            select(SecurityGroupRule).where(
                SecurityGroupRule.group_id == group.id, SecurityGroupRule.is_egress.is_(egress)
            )
        )
    }
    seen: set[tuple[Any, ...]] = set()
    for spec in specs:
        if spec.key() in existing or spec.key() in seen:
            raise CloudError(
                "InvalidPermission.Duplicate", f'the specified rule "{spec.describe()}" already exists'
            )
        seen.add(spec.key())
    if len(existing) + len(specs) > MAX_RULES:
        raise CloudError(
            "RulesPerSecurityGroupLimitExceeded",
            f"A security group has at most {MAX_RULES} rules per direction.",
        )
    added = []
    for spec in specs:
        row = SecurityGroupRule(
            id=ids.resource_id("sgr"),
            group_id=group.id,
            is_egress=egress,
            protocol=spec.protocol,
            from_port=spec.from_port,
            to_port=spec.to_port,
            cidr=spec.cidr,
            referenced_group_id=spec.group_id,
            description=spec.description,
        )
        s.add(row)
        added.append(row)
    s.flush()
    for row in added:
        tags.from_specifications(s, ctx.account_id, row.id, "security-group-rule", p.get("TagSpecifications"))
    tag_map = tags.tags_of(s, [r.id for r in added])
    return {
        "Return": True,
        "SecurityGroupRules": [rules.rule_view(r, ctx.account_id, tag_map[r.id]) for r in added],
    }


def _revoke(ctx: RequestContext, p: dict[str, Any], *, egress: bool) -> dict[str, Any]:
    assert ctx.account_id is not None
    s = ctx.session
    group = target(ctx, p) if not egress else by_id(ctx, p["GroupId"])
    current = list(
        s.scalars(
            select(SecurityGroupRule).where(
                SecurityGroupRule.group_id == group.id, SecurityGroupRule.is_egress.is_(egress)
            )
        )
    )
    gone: list[SecurityGroupRule] = []
    unknown: list[rules.Spec] = []
    if p.get("SecurityGroupRuleIds"):
        if p.get("IpPermissions"):
            raise CloudError(
                "InvalidParameterCombination", "Give SecurityGroupRuleIds or IpPermissions, not both."
            )
        by_rule_id = {r.id: r for r in current}
        for rule_id in p["SecurityGroupRuleIds"]:
            if rule_id not in by_rule_id:
                raise CloudError(
                    "InvalidSecurityGroupRuleId.NotFound",
                    f"The security group rule ID '{rule_id}' does not exist",
                )
            gone.append(by_rule_id[rule_id])
    else:
        by_key = {rules.row_key(r): r for r in current}
        for spec in rules.specs_from(ctx, group, p, egress=egress):
            if spec.key() in by_key:
                gone.append(by_key[spec.key()])
            else:
                unknown.append(spec)
        if not gone:
            raise CloudError(
                "InvalidPermission.NotFound", "The specified rule does not exist in this security group."
            )
    views = [rules.rule_view(r, ctx.account_id, []) for r in gone]
    for rule in gone:
        tags.remove_all(s, rule.id)
        s.delete(rule)
    out: dict[str, Any] = {"Return": True, "RevokedSecurityGroupRules": views}
    if unknown:
        out["UnknownIpPermissions"] = [
            {
                "IpProtocol": u.protocol,
                "FromPort": u.from_port,
                "ToPort": u.to_port,
                "IpRanges": [{"CidrIp": u.cidr}] if u.cidr else [],
                "UserIdGroupPairs": [{"GroupId": u.group_id}] if u.group_id else [],
            }
            for u in unknown
        ]
    return out


@EC2.operation()
def authorize_security_group_ingress(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    return _authorize(ctx, p, egress=False)


@EC2.operation()
def authorize_security_group_egress(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    return _authorize(ctx, p, egress=True)


@EC2.operation()
def revoke_security_group_ingress(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    return _revoke(ctx, p, egress=False)


@EC2.operation()
def revoke_security_group_egress(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    return _revoke(ctx, p, egress=True)


_RULE_FILTERS: dict[str, Any] = {
    "group-id": lambda v: v["GroupId"],
    "security-group-rule-id": lambda v: v["SecurityGroupRuleId"],
}


@EC2.operation()
def describe_security_group_rules(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    assert ctx.account_id is not None
    s = ctx.session
    q = (
        select(SecurityGroupRule)
        .join(SecurityGroup, SecurityGroup.id == SecurityGroupRule.group_id)
        .where(SecurityGroup.account_id == ctx.account_id)
        .order_by(SecurityGroupRule.group_id, SecurityGroupRule.id)
    )
    wanted = p.get("SecurityGroupRuleIds")
    if wanted:
        q = q.where(SecurityGroupRule.id.in_(wanted))
    found = list(s.scalars(q))
    missing = set(wanted or []) - {r.id for r in found}
    if missing:
        raise CloudError(
            "InvalidSecurityGroupRuleId.NotFound",
            f"The security group rule ID '{sorted(missing)[0]}' does not exist",
        )
    tag_map = tags.tags_of(s, [r.id for r in found])
    views = [rules.rule_view(r, ctx.account_id, tag_map[r.id]) for r in found]
    return resources.one_page(
        p, tags.with_tag_filters(views, p.get("Filters"), _RULE_FILTERS), "SecurityGroupRules"
    )


def _rules_by_id(
    ctx: RequestContext, group: SecurityGroup, rule_ids: list[str]
) -> dict[str, SecurityGroupRule]:
    found = {
        r.id: r
        for r in ctx.session.scalars(
            select(SecurityGroupRule).where(
                SecurityGroupRule.group_id == group.id, SecurityGroupRule.id.in_(rule_ids)
            )
        )
    }
    for rule_id in rule_ids:
        if rule_id not in found:
            raise CloudError(
                "InvalidSecurityGroupRuleId.NotFound",
                f"The security group rule ID '{rule_id}' does not exist",
            )
    return found


@EC2.operation()
def modify_security_group_rules(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    group = by_id(ctx, p["GroupId"])
    updates = p["SecurityGroupRules"]
    found = _rules_by_id(ctx, group, [u["SecurityGroupRuleId"] for u in updates])
    for update in updates:
        rule = found[update["SecurityGroupRuleId"]]
        spec = rules.spec_from_request(ctx, group, update.get("SecurityGroupRule") or {})
        clash = ctx.session.scalar(
            select(SecurityGroupRule.id).where(
                SecurityGroupRule.group_id == group.id,
                SecurityGroupRule.is_egress.is_(rule.is_egress),
                SecurityGroupRule.id != rule.id,
                SecurityGroupRule.protocol == spec.protocol,
                SecurityGroupRule.from_port == spec.from_port,
                SecurityGroupRule.to_port == spec.to_port,
                SecurityGroupRule.cidr == spec.cidr
                if spec.cidr is not None
                else SecurityGroupRule.referenced_group_id == spec.group_id,
            )
        )
        if clash is not None:
            raise CloudError(
                "InvalidPermission.Duplicate", f'the specified rule "{spec.describe()}" already exists'
            )
        rule.protocol, rule.from_port, rule.to_port = spec.protocol, spec.from_port, spec.to_port
        rule.cidr, rule.referenced_group_id, rule.description = spec.cidr, spec.group_id, spec.description
    return {"Return": True}


def _update_descriptions(ctx: RequestContext, p: dict[str, Any], *, egress: bool) -> dict[str, Any]:
    group = target(ctx, p)
    if p.get("SecurityGroupRuleDescriptions"):
        items = p["SecurityGroupRuleDescriptions"]
        found = _rules_by_id(ctx, group, [i["SecurityGroupRuleId"] for i in items])
        for item in items:
            found[item["SecurityGroupRuleId"]].description = item.get("Description") or ""
        return {"Return": True}
    current = {
        rules.row_key(r): r
        for r in ctx.session.scalars(
            select(SecurityGroupRule).where(
                SecurityGroupRule.group_id == group.id, SecurityGroupRule.is_egress.is_(egress)
            )
        )
    }
    for spec in rules.specs_from(ctx, group, p, egress=egress):
        rule = current.get(spec.key())
        if rule is None:
            raise CloudError(
                "InvalidPermission.NotFound", "The specified rule does not exist in this security group."
            )
        rule.description = spec.description
    return {"Return": True}


@EC2.operation()
def update_security_group_rule_descriptions_ingress(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    return _update_descriptions(ctx, p, egress=False)


@EC2.operation()
def update_security_group_rule_descriptions_egress(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    return _update_descriptions(ctx, p, egress=True)


def group_ids_of(interface: NetworkInterface) -> list[str]:
    return list(json.loads(interface.group_ids or "[]"))
