"""Security groups as AWS's VPC groups, through boto3 and the aws CLI: create, rules in both
directions by permissions and by rule ids, descriptions, filters, limits and AWS's error codes,
and isolation between accounts."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from support.cloud import Cloud, Keys, aws

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL

SSH = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}


def code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return str(err.value.response["Error"]["Code"])


@pytest.fixture
def ec2(cloud: Cloud, account: Keys) -> Any:
    return cloud.client("ec2", account)


def _group(ec2: Any, group_id: str) -> dict[str, Any]:
    groups: list[dict[str, Any]] = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    return groups[0]


def test_a_new_group_lives_in_the_default_vpc_and_allows_only_egress(ec2: Any) -> None:
    default_vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    made = ec2.create_security_group(GroupName="web", Description="web servers")
    group = _group(ec2, made["GroupId"])
    assert group["VpcId"] == default_vpc and group["GroupName"] == "web"
    assert group["IpPermissions"] == []
    assert group["IpPermissionsEgress"] == [
        {
            "IpProtocol": "-1",
            "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            "Ipv6Ranges": [],
            "PrefixListIds": [],
            "UserIdGroupPairs": [],
        }
    ]
    default = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]
    assert default["IpPermissions"][0]["UserIdGroupPairs"][0]["GroupId"] == default["GroupId"]
    for kwargs, expected in [
        ({"GroupName": "web", "Description": "again"}, "InvalidGroup.Duplicate"),
        ({"GroupName": "default", "Description": "x"}, "InvalidGroup.Reserved"),
        ({"GroupName": "sg-123", "Description": "x"}, "InvalidParameterValue"),
        ({"GroupName": "bad\u00e9name", "Description": "x"}, "InvalidParameterValue"),
        ({"GroupName": "x", "Description": "x", "VpcId": "vpc-00000000000000000"}, "InvalidVpcID.NotFound"),
    ]:
        with pytest.raises(ClientError) as err:
            ec2.create_security_group(**kwargs)
        assert code(err) == expected, kwargs
    with pytest.raises(ClientError) as err:
        ec2.delete_security_group(GroupId=default["GroupId"])
    assert code(err) == "CannotDelete"


def test_ingress_rules_by_permissions_by_ids_and_by_names(ec2: Any) -> None:
    web = ec2.create_security_group(GroupName="web", Description="web")["GroupId"]
    app = ec2.create_security_group(GroupName="app", Description="app")["GroupId"]
    added = ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=[SSH])["SecurityGroupRules"]
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"], r["CidrIpv4"], r["IsEgress"]) for r in added] == [
        ("tcp", 22, 22, "0.0.0.0/0", False)
    ]
    with pytest.raises(ClientError) as err:
        ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=[SSH])
    assert code(err) == "InvalidPermission.Duplicate"
    # The flat (legacy) form, by group name, and a group as the source.
    ec2.authorize_security_group_ingress(
        GroupName="web", IpProtocol="tcp", FromPort=80, ToPort=80, CidrIp="10.0.0.0/8"
    )
    ec2.authorize_security_group_ingress(
        GroupId=app,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 8080,
                "ToPort": 8080,
                "UserIdGroupPairs": [{"GroupId": web, "Description": "from web"}],
            }
        ],
    )
    ec2.authorize_security_group_ingress(
        GroupId=web,
        IpPermissions=[
            {"IpProtocol": "icmp", "FromPort": 8, "ToPort": -1, "IpRanges": [{"CidrIp": "10.1.0.0/16"}]}
        ],
    )
    group = _group(ec2, web)
    perms = {(p["IpProtocol"], p.get("FromPort")): p for p in group["IpPermissions"]}
    assert set(perms) == {("tcp", 22), ("tcp", 80), ("icmp", 8)}
    assert perms[("tcp", 80)]["IpRanges"] == [{"CidrIp": "10.0.0.0/8"}]
    pair = _group(ec2, app)["IpPermissions"][0]["UserIdGroupPairs"][0]
    assert pair["GroupId"] == web and pair["Description"] == "from web"
    # A group another rule names cannot go.
    with pytest.raises(ClientError) as err:
        ec2.delete_security_group(GroupId=web)
    assert code(err) == "DependencyViolation"
    # DescribeSecurityGroupRules, and revoking by rule id.
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [web]}])[
        "SecurityGroupRules"
    ]
    assert len(rules) == 4  # three ingress, one egress
    icmp = next(r for r in rules if r["IpProtocol"] == "icmp")
    revoked = ec2.revoke_security_group_ingress(
        GroupId=web, SecurityGroupRuleIds=[icmp["SecurityGroupRuleId"]]
    )
    assert [r["SecurityGroupRuleId"] for r in revoked["RevokedSecurityGroupRules"]] == [
        icmp["SecurityGroupRuleId"]
    ]
    with pytest.raises(ClientError) as err:
        ec2.revoke_security_group_ingress(GroupId=web, SecurityGroupRuleIds=[icmp["SecurityGroupRuleId"]])
    assert code(err) == "InvalidSecurityGroupRuleId.NotFound"
    # Revoking by permissions; one that does not exist is refused.
    ec2.revoke_security_group_ingress(GroupId=web, IpPermissions=[SSH])
    with pytest.raises(ClientError) as err:
        ec2.revoke_security_group_ingress(GroupId=web, IpPermissions=[SSH])
    assert code(err) == "InvalidPermission.NotFound"
    ec2.revoke_security_group_ingress(
        GroupId=app,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "UserIdGroupPairs": [{"GroupId": web}]}
        ],
    )
    ec2.delete_security_group(GroupId=app)
    ec2.delete_security_group(GroupId=web)


def test_egress_rules_and_rule_edits(ec2: Any) -> None:
    group = ec2.create_security_group(GroupName="locked", Description="no way out")["GroupId"]
    everything = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    ec2.revoke_security_group_egress(GroupId=group, IpPermissions=[everything])
    assert _group(ec2, group)["IpPermissionsEgress"] == []
    added = ec2.authorize_security_group_egress(
        GroupId=group,
        IpPermissions=[
            {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.0.0.2/32"}]}
        ],
    )["SecurityGroupRules"][0]
    assert added["IsEgress"] and added["IpProtocol"] == "udp"
    rule_id = added["SecurityGroupRuleId"]
    ec2.modify_security_group_rules(
        GroupId=group,
        SecurityGroupRules=[
            {
                "SecurityGroupRuleId": rule_id,
                "SecurityGroupRule": {
                    "IpProtocol": "tcp",
                    "FromPort": 443,
                    "ToPort": 443,
                    "CidrIpv4": "0.0.0.0/0",
                    "Description": "https",
                },
            }
        ],
    )
    ec2.update_security_group_rule_descriptions_egress(
        GroupId=group,
        SecurityGroupRuleDescriptions=[{"SecurityGroupRuleId": rule_id, "Description": "tls out"}],
    )
    rule = ec2.describe_security_group_rules(SecurityGroupRuleIds=[rule_id])["SecurityGroupRules"][0]
    assert (rule["IpProtocol"], rule["FromPort"], rule["CidrIpv4"], rule["Description"]) == (
        "tcp",
        443,
        "0.0.0.0/0",
        "tls out",
    )


@pytest.mark.parametrize(
    ("permission", "expected"),
    [
        (
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 21, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            "InvalidParameterValue",
        ),
        (
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 70000, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            "InvalidParameterValue",
        ),
        (
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "300.0.0.0/8"}]},
            "InvalidParameterValue",
        ),
        ({"IpProtocol": "gre", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, "InvalidParameterValue"),
        ({"IpProtocol": "47", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, "UnsupportedOperation"),
        (
            {"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
            "UnsupportedOperation",
        ),
        (
            {
                "IpProtocol": "tcp",
                "FromPort": 1,
                "ToPort": 2,
                "UserIdGroupPairs": [{"GroupId": "sg-00000000000000000"}],
            },
            "InvalidGroup.NotFound",
        ),
        ({"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2}, "MissingParameter"),
    ],
)
def test_rules_aws_refuses(ec2: Any, permission: dict[str, Any], expected: str) -> None:
    group = ec2.create_security_group(GroupName="g", Description="g")["GroupId"]
    with pytest.raises(ClientError) as err:
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[permission])
    assert code(err) == expected


def test_rules_per_group_are_limited(ec2: Any) -> None:
    group = ec2.create_security_group(GroupName="many", Description="many")["GroupId"]
    ranges = [{"CidrIp": f"10.0.{n}.0/24"} for n in range(60)]
    ec2.authorize_security_group_ingress(
        GroupId=group, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 1, "ToPort": 1, "IpRanges": ranges}]
    )
    with pytest.raises(ClientError) as err:
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[SSH])
    assert code(err) == "RulesPerSecurityGroupLimitExceeded"


def test_groups_of_other_vpcs_do_not_mix(ec2: Any) -> None:
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    inside = ec2.create_security_group(GroupName="web", Description="same name, other VPC", VpcId=vpc)[
        "GroupId"
    ]
    outside = ec2.create_security_group(GroupName="web", Description="default VPC")["GroupId"]
    with pytest.raises(ClientError) as err:
        ec2.authorize_security_group_ingress(
            GroupId=inside,
            IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 1, "ToPort": 1, "UserIdGroupPairs": [{"GroupId": outside}]}
            ],
        )
    assert code(err) == "InvalidGroup.NotFound"
    by_vpc = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]
    assert sorted(g["GroupName"] for g in by_vpc) == ["default", "web"]
    with pytest.raises(ClientError) as err:
        ec2.delete_vpc(VpcId=vpc)
    assert code(err) == "DependencyViolation"
    ec2.delete_security_group(GroupId=inside)
    ec2.delete_vpc(VpcId=vpc)  # its default group goes with it


def test_filters_on_permissions_and_tags(ec2: Any) -> None:
    group = ec2.create_security_group(
        GroupName="tagged",
        Description="d",
        TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": "team", "Value": "a"}]}],
    )["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[SSH])
    for name, values in [
        ("ip-permission.from-port", ["22"]),
        ("ip-permission.cidr", ["0.0.0.0/0"]),
        ("ip-permission.protocol", ["tcp"]),
        ("tag:team", ["a"]),
        ("group-name", ["tag*"]),
        ("description", ["d"]),
    ]:
        found = ec2.describe_security_groups(Filters=[{"Name": name, "Values": values}])["SecurityGroups"]
        assert [g["GroupId"] for g in found] == [group], name


def test_another_account_cannot_see_or_change_a_group(cloud: Cloud, ec2: Any) -> None:
    group = ec2.create_security_group(GroupName="private", Description="mine")["GroupId"]
    other = cloud.client("ec2", cloud.new_account())
    assert group not in [g["GroupId"] for g in other.describe_security_groups()["SecurityGroups"]]
    for call, kwargs in [
        (other.describe_security_groups, {"GroupIds": [group]}),
        (other.authorize_security_group_ingress, {"GroupId": group, "IpPermissions": [SSH]}),
        (other.delete_security_group, {"GroupId": group}),
    ]:
        with pytest.raises(ClientError) as err:
            call(**kwargs)
        assert code(err) == "InvalidGroup.NotFound"


def test_the_aws_cli_session_of_the_issue(cloud: Cloud, account: Keys) -> None:
    made = aws(
        cloud, "ec2", "create-security-group", "--group-name", "web", "--description", "web", keys=account
    )
    aws(
        cloud, "ec2", "authorize-security-group-ingress", "--group-name", "web",
        "--protocol", "tcp", "--port", "22", "--cidr", "0.0.0.0/0", keys=account,
    )  # fmt: skip
    groups = aws(cloud, "ec2", "describe-security-groups", "--group-ids", made["GroupId"], keys=account)
    perm = groups["SecurityGroups"][0]["IpPermissions"][0]
    assert (perm["IpProtocol"], perm["FromPort"], perm["IpRanges"][0]["CidrIp"]) == ("tcp", 22, "0.0.0.0/0")
    aws(
        cloud, "ec2", "revoke-security-group-ingress", "--group-name", "web",
        "--protocol", "tcp", "--port", "22", "--cidr", "0.0.0.0/0", keys=account,
    )  # fmt: skip
    groups = aws(cloud, "ec2", "describe-security-groups", "--group-ids", made["GroupId"], keys=account)
    assert groups["SecurityGroups"][0]["IpPermissions"] == []
