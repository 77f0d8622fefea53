"""Every VPC, security-group and address action of issue 13 through the `aws` CLI, typed as a user
types them (shorthand syntax included), with filters and the error codes the CLI prints. The same
actions through boto3, with their edge cases, are in test_ec2_vpcs.py, test_ec2_security_groups.py
and test_ec2_vpc_instances.py; the CLI serialises some members differently (shorthand lists and
structures, booleans as flags), which is what these tests add."""

from __future__ import annotations

from typing import Any

import pytest

from functional.test_ec2_instances import register_tiny_image
from support.cloud import Cloud, Keys, aws, aws_refusal


def refused(cloud: Cloud, keys: Keys, *args: str) -> str:
    """The AWS error code the CLI prints for an EC2 call that must fail."""
    return aws_refusal(cloud, "ec2", *args, keys=keys)[0]


@pytest.fixture
def ec2(cloud: Cloud, account: Keys) -> Any:
    def call(*args: str) -> Any:
        return aws(cloud, "ec2", *args, keys=account)

    return call


def test_a_custom_vpc_built_and_taken_apart_with_the_cli(cloud: Cloud, account: Keys, ec2: Any) -> None:
    vpc = ec2("create-vpc", "--cidr-block", "10.30.0.0/16",
              "--tag-specifications", "ResourceType=vpc,Tags=[{Key=Name,Value=cli}]")["Vpc"]  # fmt: skip
    vpc_id = vpc["VpcId"]
    assert ec2("describe-vpcs", "--filters", "Name=tag:Name,Values=cli")["Vpcs"][0]["VpcId"] == vpc_id
    ec2("modify-vpc-attribute", "--vpc-id", vpc_id, "--enable-dns-hostnames", '{"Value":true}')
    hostnames = ec2("describe-vpc-attribute", "--vpc-id", vpc_id, "--attribute", "enableDnsHostnames")
    assert hostnames["EnableDnsHostnames"] == {"Value": True}
    a = ec2("create-subnet", "--vpc-id", vpc_id, "--cidr-block", "10.30.1.0/24")["Subnet"]["SubnetId"]
    b = ec2("create-subnet", "--vpc-id", vpc_id, "--cidr-block", "10.30.2.0/24")["Subnet"]["SubnetId"]
    ec2("modify-subnet-attribute", "--subnet-id", a, "--map-public-ip-on-launch")
    mapped = ec2(
        "describe-subnets",
        "--filters",
        f"Name=vpc-id,Values={vpc_id}",
        "Name=map-public-ip-on-launch,Values=true",
    )
    assert [s["SubnetId"] for s in mapped["Subnets"]] == [a]
    assert refused(cloud, account, "create-subnet", "--vpc-id", vpc_id, "--cidr-block", "10.30.1.128/25") == (
        "InvalidSubnet.Conflict"
    )
    igw = ec2("create-internet-gateway")["InternetGateway"]["InternetGatewayId"]
    ec2("attach-internet-gateway", "--internet-gateway-id", igw, "--vpc-id", vpc_id)
    attached = ec2("describe-internet-gateways", "--filters", f"Name=attachment.vpc-id,Values={vpc_id}")
    assert [g["InternetGatewayId"] for g in attached["InternetGateways"]] == [igw]
    rtb = ec2("create-route-table", "--vpc-id", vpc_id)["RouteTable"]["RouteTableId"]
    ec2("create-route", "--route-table-id", rtb, "--destination-cidr-block", "0.0.0.0/0", "--gateway-id", igw)
    again = ("--route-table-id", rtb, "--destination-cidr-block", "0.0.0.0/0", "--gateway-id", igw)
    assert refused(cloud, account, "create-route", *again) == "RouteAlreadyExists"
    # ReplaceRoute replaces an existing route only (targets: an internet gateway, as CreateRoute).
    ec2(
        "replace-route", "--route-table-id", rtb, "--destination-cidr-block", "0.0.0.0/0", "--gateway-id", igw
    )
    missing = ("--route-table-id", rtb, "--destination-cidr-block", "10.99.0.0/16", "--gateway-id", igw)
    assert refused(cloud, account, "replace-route", *missing) == "InvalidRoute.NotFound"
    association = ec2("associate-route-table", "--route-table-id", rtb, "--subnet-id", a)["AssociationId"]
    tables = ec2("describe-route-tables", "--filters", f"Name=association.subnet-id,Values={a}")[
        "RouteTables"
    ]
    assert [t["RouteTableId"] for t in tables] == [rtb]
    assert {(r["DestinationCidrBlock"], r["GatewayId"]) for r in tables[0]["Routes"]} == {
        ("10.30.0.0/16", "local"),
        ("0.0.0.0/0", igw),
    }
    acls = ec2("describe-network-acls", "--filters", f"Name=vpc-id,Values={vpc_id}")["NetworkAcls"]
    assert len(acls) == 1 and acls[0]["IsDefault"]
    assert refused(cloud, account, "delete-vpc", "--vpc-id", vpc_id) == "DependencyViolation"
    ec2("disassociate-route-table", "--association-id", association)
    ec2("delete-route", "--route-table-id", rtb, "--destination-cidr-block", "0.0.0.0/0")
    ec2("delete-route-table", "--route-table-id", rtb)
    ec2("detach-internet-gateway", "--internet-gateway-id", igw, "--vpc-id", vpc_id)
    ec2("delete-internet-gateway", "--internet-gateway-id", igw)
    for subnet in (a, b):
        ec2("delete-subnet", "--subnet-id", subnet)
    ec2("delete-vpc", "--vpc-id", vpc_id)
    assert refused(cloud, account, "describe-vpcs", "--vpc-ids", vpc_id) == "InvalidVpcID.NotFound"


def test_the_default_vpc_goes_and_comes_back_with_the_cli(cloud: Cloud, account: Keys, ec2: Any) -> None:
    assert refused(cloud, account, "create-default-vpc") == "DefaultVpcAlreadyExists"
    default = ec2("describe-vpcs", "--filters", "Name=is-default,Values=true")["Vpcs"][0]["VpcId"]
    for subnet in ec2("describe-subnets", "--filters", f"Name=vpc-id,Values={default}")["Subnets"]:
        ec2("delete-subnet", "--subnet-id", subnet["SubnetId"])
    for gateway in ec2("describe-internet-gateways", "--filters", f"Name=attachment.vpc-id,Values={default}")[
        "InternetGateways"
    ]:
        ec2(
            "detach-internet-gateway",
            "--internet-gateway-id",
            gateway["InternetGatewayId"],
            "--vpc-id",
            default,
        )
        ec2("delete-internet-gateway", "--internet-gateway-id", gateway["InternetGatewayId"])
    ec2("delete-vpc", "--vpc-id", default)
    made = ec2("create-default-vpc")["Vpc"]
    assert made["IsDefault"] and made["CidrBlock"] == "172.31.0.0/16"


def test_security_group_rules_with_the_cli(cloud: Cloud, account: Keys, ec2: Any) -> None:
    web = ec2("create-security-group", "--group-name", "web", "--description", "web")["GroupId"]
    app = ec2("create-security-group", "--group-name", "app", "--description", "app")["GroupId"]
    ec2("authorize-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "80-81",
        "--cidr", "0.0.0.0/0")  # fmt: skip
    ec2("authorize-security-group-ingress", "--group-id", app, "--ip-permissions",
        f"IpProtocol=tcp,FromPort=8080,ToPort=8080,UserIdGroupPairs=[{{GroupId={web}}}]")  # fmt: skip
    ec2("authorize-security-group-egress", "--group-id", app, "--ip-permissions",
        "IpProtocol=udp,FromPort=53,ToPort=53,IpRanges=[{CidrIp=10.0.0.0/8,Description=dns}]")  # fmt: skip
    assert refused(cloud, account, "authorize-security-group-ingress", "--group-id", web, "--protocol", "tcp",
                   "--port", "80-81", "--cidr", "0.0.0.0/0") == "InvalidPermission.Duplicate"  # fmt: skip
    rules = ec2("describe-security-group-rules", "--filters", f"Name=group-id,Values={app}")[
        "SecurityGroupRules"
    ]
    by_kind = {(r["IsEgress"], r["IpProtocol"], r["FromPort"]): r for r in rules}
    assert by_kind[(False, "tcp", 8080)]["ReferencedGroupInfo"]["GroupId"] == web
    dns = by_kind[(True, "udp", 53)]
    assert dns["CidrIpv4"] == "10.0.0.0/8" and dns["Description"] == "dns"
    ec2("modify-security-group-rules", "--group-id", app, "--security-group-rules",
        f"SecurityGroupRuleId={dns['SecurityGroupRuleId']},SecurityGroupRule={{IpProtocol=udp,FromPort=53,"
        "ToPort=53,CidrIpv4=10.1.0.0/16,Description=dns2}")  # fmt: skip
    changed = ec2("describe-security-group-rules", "--security-group-rule-ids", dns["SecurityGroupRuleId"])
    assert changed["SecurityGroupRules"][0]["CidrIpv4"] == "10.1.0.0/16"
    ec2(
        "revoke-security-group-egress",
        "--group-id",
        app,
        "--security-group-rule-ids",
        dns["SecurityGroupRuleId"],
    )
    ec2(
        "revoke-security-group-egress",
        "--group-id",
        app,
        "--ip-permissions",
        "IpProtocol=-1,IpRanges=[{CidrIp=0.0.0.0/0}]",
    )
    left = ec2("describe-security-groups", "--group-ids", app)["SecurityGroups"][0]
    assert left["IpPermissionsEgress"] == []
    assert (
        refused(cloud, account, "delete-security-group", "--group-id", web) == "DependencyViolation"
    )  # app names it
    ec2("revoke-security-group-ingress", "--group-id", app, "--ip-permissions",
        f"IpProtocol=tcp,FromPort=8080,ToPort=8080,UserIdGroupPairs=[{{GroupId={web}}}]")  # fmt: skip
    ec2("delete-security-group", "--group-id", web)
    ec2("delete-security-group", "--group-name", "app")
    assert refused(cloud, account, "describe-security-groups", "--group-ids", app) == "InvalidGroup.NotFound"


def test_addresses_and_interfaces_with_the_cli(cloud: Cloud, account: Keys, ec2: Any) -> None:
    ami = register_tiny_image(cloud, account)
    instance = ec2("run-instances", "--image-id", ami, "--count", "1")["Instances"][0]
    instance_id = instance["InstanceId"]
    interfaces = ec2(
        "describe-network-interfaces", "--filters", f"Name=attachment.instance-id,Values={instance_id}"
    )
    (eni,) = interfaces["NetworkInterfaces"]
    assert eni["PrivateIpAddress"] == instance["PrivateIpAddress"] and eni["Attachment"]["DeviceIndex"] == 0
    allocation = ec2("allocate-address", "--domain", "vpc")
    allocation_id = allocation["AllocationId"]
    association = ec2("associate-address", "--allocation-id", allocation_id, "--instance-id", instance_id)
    found = ec2("describe-addresses", "--filters", f"Name=instance-id,Values={instance_id}")["Addresses"]
    assert [(a["PublicIp"], a["AssociationId"]) for a in found] == [
        (allocation["PublicIp"], association["AssociationId"])
    ]
    attribute = ec2(
        "describe-addresses-attribute", "--allocation-ids", allocation_id, "--attribute", "domain-name"
    )
    assert attribute["Addresses"][0]["AllocationId"] == allocation_id
    assert (
        refused(cloud, account, "release-address", "--allocation-id", allocation_id)
        == "InvalidIPAddress.InUse"
    )
    ec2("disassociate-address", "--association-id", association["AssociationId"])
    ec2("release-address", "--allocation-id", allocation_id)
    assert refused(cloud, account, "describe-addresses", "--allocation-ids", allocation_id) == (
        "InvalidAllocationID.NotFound"
    )
    ec2("terminate-instances", "--instance-ids", instance_id)
