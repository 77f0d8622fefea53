"""VPCs, subnets, internet gateways, route tables and network ACLs through boto3 and the aws CLI:
what a new account finds, what it may build, AWS's error codes, and that accounts never see,
use or delete each other's networks."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from support.cloud import Cloud, Keys, aws

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL


def code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return str(err.value.response["Error"]["Code"])


@pytest.fixture
def ec2(cloud: Cloud, account: Keys) -> Any:
    return cloud.client("ec2", account)


def test_a_new_account_has_a_default_vpc_as_on_aws(ec2: Any) -> None:
    vpcs = ec2.describe_vpcs()["Vpcs"]
    assert len(vpcs) == 1
    vpc = vpcs[0]
    assert vpc["IsDefault"] and vpc["CidrBlock"] == "172.31.0.0/16" and vpc["State"] == "available"
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    assert sorted(s["AvailabilityZone"] for s in subnets) == sorted(zones)
    for subnet in subnets:
        assert subnet["DefaultForAz"] and subnet["MapPublicIpOnLaunch"]
        assert ipaddress.ip_network(subnet["CidrBlock"]).prefixlen == 20
        assert subnet["AvailableIpAddressCount"] == 4096 - 5
    gateways = ec2.describe_internet_gateways()["InternetGateways"]
    assert [a["VpcId"] for g in gateways for a in g["Attachments"]] == [vpc["VpcId"]]
    tables = ec2.describe_route_tables(Filters=[{"Name": "association.main", "Values": ["true"]}])[
        "RouteTables"
    ]
    routes = {r["DestinationCidrBlock"]: r["GatewayId"] for r in tables[0]["Routes"]}
    assert routes == {"172.31.0.0/16": "local", "0.0.0.0/0": gateways[0]["InternetGatewayId"]}
    groups = ec2.describe_security_groups()["SecurityGroups"]
    assert [(g["GroupName"], g["VpcId"]) for g in groups] == [("default", vpc["VpcId"])]
    acls = ec2.describe_network_acls()["NetworkAcls"]
    assert len(acls) == 1 and acls[0]["IsDefault"] and acls[0]["VpcId"] == vpc["VpcId"]
    assert {e["RuleAction"] for e in acls[0]["Entries"]} == {"allow", "deny"}


def test_a_custom_vpc_with_two_subnets_a_gateway_and_a_route_table(ec2: Any) -> None:
    vpc = ec2.create_vpc(
        CidrBlock="10.20.0.0/16",
        TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "lab"}]}],
    )["Vpc"]
    vpc_id = vpc["VpcId"]
    assert not vpc["IsDefault"] and vpc["Tags"] == [{"Key": "Name", "Value": "lab"}]
    assert ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["lab"]}])["Vpcs"][0]["VpcId"] == vpc_id
    a = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.20.1.0/24")["Subnet"]
    b = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.20.2.0/24")["Subnet"]
    assert not a["MapPublicIpOnLaunch"] and a["AvailableIpAddressCount"] == 251
    ec2.modify_subnet_attribute(SubnetId=a["SubnetId"], MapPublicIpOnLaunch={"Value": True})
    assert ec2.describe_subnets(SubnetIds=[a["SubnetId"]])["Subnets"][0]["MapPublicIpOnLaunch"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    table = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]
    assert [(r["DestinationCidrBlock"], r["GatewayId"]) for r in table["Routes"]] == [
        ("10.20.0.0/16", "local")
    ]
    rtb = table["RouteTableId"]
    ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    with pytest.raises(ClientError) as err:
        ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    assert code(err) == "RouteAlreadyExists"
    ec2.replace_route(RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    for destination, expected in (
        ("10.20.0.0/16", "InvalidParameterValue"),
        ("10.9.0.0/16", "InvalidRoute.NotFound"),
    ):
        with pytest.raises(ClientError) as err:
            ec2.replace_route(RouteTableId=rtb, DestinationCidrBlock=destination, GatewayId=igw)
        assert code(err) == expected, destination
    association = ec2.associate_route_table(RouteTableId=rtb, SubnetId=a["SubnetId"])["AssociationId"]
    found = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [a["SubnetId"]]}])
    assert [t["RouteTableId"] for t in found["RouteTables"]] == [rtb]
    # In use: nothing of it can go yet.
    for call, kwargs, expected in [
        (ec2.delete_vpc, {"VpcId": vpc_id}, "DependencyViolation"),
        (ec2.delete_internet_gateway, {"InternetGatewayId": igw}, "DependencyViolation"),
        (ec2.delete_route_table, {"RouteTableId": rtb}, "DependencyViolation"),
        (ec2.create_subnet, {"VpcId": vpc_id, "CidrBlock": "10.20.1.128/25"}, "InvalidSubnet.Conflict"),
        (ec2.create_subnet, {"VpcId": vpc_id, "CidrBlock": "10.99.0.0/24"}, "InvalidSubnet.Range"),
        (
            ec2.delete_route,
            {"RouteTableId": rtb, "DestinationCidrBlock": "10.20.0.0/16"},
            "InvalidParameterValue",
        ),
    ]:
        with pytest.raises(ClientError) as err:
            call(**kwargs)
        assert code(err) == expected, (call, kwargs)
    # Taken apart in AWS's order, it goes.
    ec2.disassociate_route_table(AssociationId=association)
    ec2.delete_route(RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0")
    ec2.delete_route_table(RouteTableId=rtb)
    ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    ec2.delete_internet_gateway(InternetGatewayId=igw)
    ec2.delete_subnet(SubnetId=a["SubnetId"])
    ec2.delete_subnet(SubnetId=b["SubnetId"])
    ec2.delete_vpc(VpcId=vpc_id)
    with pytest.raises(ClientError) as err:
        ec2.describe_vpcs(VpcIds=[vpc_id])
    assert code(err) == "InvalidVpcID.NotFound"


@pytest.mark.parametrize(
    ("cidr", "expected"),
    [
        ("10.0.0.0/8", "InvalidVpc.Range"),
        ("10.0.0.0/29", "InvalidVpc.Range"),
        ("169.254.0.0/16", "InvalidVpc.Range"),
        ("10.0.0.1/16", "InvalidParameterValue"),
        ("not-a-cidr", "InvalidParameterValue"),
    ],
)
def test_vpc_cidrs_aws_refuses(ec2: Any, cidr: str, expected: str) -> None:
    with pytest.raises(ClientError) as err:
        ec2.create_vpc(CidrBlock=cidr)
    assert code(err) == expected


def test_unsupported_members_are_refused_by_name(ec2: Any) -> None:
    with pytest.raises(ClientError) as err:
        ec2.create_vpc(CidrBlock="10.1.0.0/16", AmazonProvidedIpv6CidrBlock=True)
    assert code(err) == "UnsupportedOperation" and "AmazonProvidedIpv6CidrBlock" in str(err.value)


def test_the_vpc_quota_and_vpc_attributes(ec2: Any) -> None:
    made = [ec2.create_vpc(CidrBlock=f"10.{n}.0.0/16")["Vpc"]["VpcId"] for n in range(4)]  # + the default: 5
    with pytest.raises(ClientError) as err:
        ec2.create_vpc(CidrBlock="10.9.0.0/16")
    assert code(err) == "VpcLimitExceeded"
    vpc_id = made[0]
    attr = ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute="enableDnsHostnames")
    assert attr["EnableDnsHostnames"]["Value"] is False
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    assert ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute="enableDnsHostnames")["EnableDnsHostnames"][
        "Value"
    ]


def test_the_default_vpc_can_be_deleted_and_made_again(ec2: Any) -> None:
    default = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    with pytest.raises(ClientError) as err:
        ec2.create_default_vpc()
    assert code(err) == "DefaultVpcAlreadyExists"
    for subnet in ec2.describe_subnets()["Subnets"]:
        ec2.delete_subnet(SubnetId=subnet["SubnetId"])
    igw = ec2.describe_internet_gateways()["InternetGateways"][0]["InternetGatewayId"]
    ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=default)
    ec2.delete_internet_gateway(InternetGatewayId=igw)
    ec2.delete_vpc(VpcId=default)
    assert ec2.describe_vpcs()["Vpcs"] == []  # not made again behind the user's back
    attrs = ec2.describe_account_attributes(AttributeNames=["default-vpc"])["AccountAttributes"]
    assert attrs[0]["AttributeValues"] == [{"AttributeValue": "none"}]
    again = ec2.create_default_vpc()["Vpc"]
    assert again["IsDefault"] and again["VpcId"] != default
    assert ec2.describe_subnets()["Subnets"]


def test_accounts_never_see_or_touch_each_others_networks(cloud: Cloud, ec2: Any) -> None:
    other = cloud.client("ec2", cloud.new_account())
    mine = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=mine, CidrBlock="10.30.0.0/24")["Subnet"]["SubnetId"]
    theirs = other.describe_vpcs()["Vpcs"]
    assert mine not in [v["VpcId"] for v in theirs] and len(theirs) == 1
    assert subnet not in [s["SubnetId"] for s in other.describe_subnets()["Subnets"]]
    for call, kwargs, expected in [
        (other.describe_vpcs, {"VpcIds": [mine]}, "InvalidVpcID.NotFound"),
        (other.delete_vpc, {"VpcId": mine}, "InvalidVpcID.NotFound"),
        (other.create_subnet, {"VpcId": mine, "CidrBlock": "10.30.1.0/24"}, "InvalidVpcID.NotFound"),
        (other.delete_subnet, {"SubnetId": subnet}, "InvalidSubnetID.NotFound"),
        (
            other.create_security_group,
            {"GroupName": "x", "Description": "x", "VpcId": mine},
            "InvalidVpcID.NotFound",
        ),
        (
            other.create_tags,
            {"Resources": [mine], "Tags": [{"Key": "k", "Value": "v"}]},
            "InvalidVpcID.NotFound",
        ),
    ]:
        with pytest.raises(ClientError) as err:
            call(**kwargs)
        assert code(err) == expected, (call, kwargs)


def test_the_aws_cli_session_of_the_issue(cloud: Cloud, account: Keys) -> None:
    attrs = aws(cloud, "ec2", "describe-account-attributes", keys=account)["AccountAttributes"]
    values = {a["AttributeName"]: a["AttributeValues"][0]["AttributeValue"] for a in attrs}
    assert values["supported-platforms"] == "VPC" and values["default-vpc"].startswith("vpc-")
    vpcs = aws(cloud, "ec2", "describe-vpcs", keys=account)["Vpcs"]
    assert [v["VpcId"] for v in vpcs] == [values["default-vpc"]]
    subnets = aws(cloud, "ec2", "describe-subnets", keys=account)["Subnets"]
    assert subnets and all(s["VpcId"] == values["default-vpc"] for s in subnets)


def test_dry_run_says_whether_it_would_succeed_and_does_nothing(ec2: Any) -> None:
    before = ec2.describe_vpcs()["Vpcs"]
    with pytest.raises(ClientError) as err:
        ec2.create_vpc(CidrBlock="10.50.0.0/16", DryRun=True)
    assert code(err) == "DryRunOperation"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert ec2.describe_vpcs()["Vpcs"] == before
