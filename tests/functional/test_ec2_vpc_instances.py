"""Instances in VPCs through boto3: where RunInstances puts them (default subnet, a chosen subnet,
groups, private and public addresses), their interfaces, elastic IPs, and what termination gives
back — with AWS's error codes and no address ever held twice."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functional.test_ec2_instances import register_tiny_image, wait_state
from support.cloud import Cloud, Keys

PUBLIC = ipaddress.ip_network("198.51.100.0/24")


def code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return str(err.value.response["Error"]["Code"])


@pytest.fixture
def ec2(cloud: Cloud, account: Keys) -> Any:
    return cloud.client("ec2", account)


@pytest.fixture
def ami(cloud: Cloud, account: Keys) -> str:
    return register_tiny_image(cloud, account)


def _run(ec2: Any, ami: str, **kwargs: Any) -> dict[str, Any]:
    instance: dict[str, Any] = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, **kwargs)["Instances"][
        0
    ]
    return instance


def test_an_instance_lands_in_the_default_subnet_with_a_public_address(ec2: Any, ami: str) -> None:
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": ["mallee-1a"]}])[
        "Subnets"
    ][0]
    default_group = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
    instance = _run(ec2, ami)
    assert (instance["VpcId"], instance["SubnetId"]) == (vpc, subnet["SubnetId"])
    assert ipaddress.ip_address(instance["PrivateIpAddress"]) in ipaddress.ip_network(subnet["CidrBlock"])
    assert instance["SecurityGroups"] == [{"GroupName": "default", "GroupId": default_group}]
    public = instance["PublicIpAddress"]
    assert ipaddress.ip_address(public) in PUBLIC and instance["PublicDnsName"].startswith("ec2-")
    [eni] = instance["NetworkInterfaces"]
    assert eni["MacAddress"] and eni["Association"]["PublicIp"] == public
    running = wait_state(ec2, [instance["InstanceId"]], "running")[0]
    assert running["PublicIpAddress"] == public
    reservation = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]
    by_reservation = ec2.describe_instances(
        Filters=[{"Name": "reservation-id", "Values": [reservation["ReservationId"]]}]
    )["Reservations"]
    assert [i["InstanceId"] for r in by_reservation for i in r["Instances"]] == [instance["InstanceId"]]
    found = ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance["InstanceId"]]}]
    )["NetworkInterfaces"]
    assert [n["NetworkInterfaceId"] for n in found] == [eni["NetworkInterfaceId"]]
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    wait_state(ec2, [instance["InstanceId"]], "terminated")
    # Its interface and public address went back.
    left = ec2.describe_network_interfaces()["NetworkInterfaces"]
    assert eni["NetworkInterfaceId"] not in [n["NetworkInterfaceId"] for n in left]
    gone = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert "PublicIpAddress" not in gone


def test_a_chosen_subnet_groups_and_address(ec2: Any, ami: str) -> None:
    vpc = ec2.create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.60.1.0/24")["Subnet"]["SubnetId"]
    web = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    instance = _run(ec2, ami, SubnetId=subnet, SecurityGroupIds=[web], PrivateIpAddress="10.60.1.50")
    assert (instance["VpcId"], instance["SubnetId"], instance["PrivateIpAddress"]) == (
        vpc,
        subnet,
        "10.60.1.50",
    )
    assert "PublicIpAddress" not in instance  # the subnet maps none
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [web]
    for kwargs, expected in [
        ({"SubnetId": subnet, "PrivateIpAddress": "10.60.1.50"}, "InvalidIPAddress.InUse"),
        ({"SubnetId": subnet, "PrivateIpAddress": "10.60.1.2"}, "InvalidParameterValue"),  # reserved
        ({"SubnetId": "subnet-0123456789abcdef0"}, "InvalidSubnetID.NotFound"),
        ({"SubnetId": subnet, "SecurityGroups": ["web"]}, "InvalidParameterCombination"),
    ]:
        with pytest.raises(ClientError) as err:
            _run(ec2, ami, **kwargs)
        assert code(err) == expected, kwargs
    default_group = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
    with pytest.raises(ClientError) as err:  # a group of another VPC
        _run(ec2, ami, SubnetId=subnet, SecurityGroupIds=[default_group])
    assert code(err) == "InvalidParameter"
    # A public address on request, through NetworkInterfaces.
    asked = _run(
        ec2,
        ami,
        NetworkInterfaces=[
            {"DeviceIndex": 0, "SubnetId": subnet, "AssociatePublicIpAddress": True, "Groups": [web]}
        ],
    )
    assert ipaddress.ip_address(asked["PublicIpAddress"]) in PUBLIC
    # The groups of a running instance change.
    app = ec2.create_security_group(GroupName="app", Description="app", VpcId=vpc)["GroupId"]
    ec2.modify_instance_attribute(InstanceId=instance["InstanceId"], Groups=[web, app])
    again = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert sorted(g["GroupId"] for g in again["SecurityGroups"]) == sorted([web, app])
    with pytest.raises(ClientError) as err:
        ec2.delete_security_group(GroupId=app)
    assert code(err) == "DependencyViolation"
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"], asked["InstanceId"]])


def test_elastic_ips_allocate_move_and_release(ec2: Any, ami: str) -> None:
    a = _run(ec2, ami)
    b = _run(ec2, ami)
    auto_a = a["PublicIpAddress"]
    allocation = ec2.allocate_address(Domain="vpc")
    eip, allocation_id = allocation["PublicIp"], allocation["AllocationId"]
    assert ipaddress.ip_address(eip) in PUBLIC and allocation_id.startswith("eipalloc-")
    assert eip not in (auto_a, b["PublicIpAddress"])
    association = ec2.associate_address(AllocationId=allocation_id, InstanceId=a["InstanceId"])[
        "AssociationId"
    ]
    view = ec2.describe_instances(InstanceIds=[a["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert view["PublicIpAddress"] == eip  # it replaced the automatic address
    described = ec2.describe_addresses(AllocationIds=[allocation_id])["Addresses"][0]
    assert (described["InstanceId"], described["AssociationId"]) == (a["InstanceId"], association)
    with pytest.raises(ClientError) as err:
        ec2.associate_address(
            AllocationId=allocation_id, InstanceId=b["InstanceId"], AllowReassociation=False
        )
    assert code(err) == "Resource.AlreadyAssociated"
    with pytest.raises(ClientError) as err:
        ec2.release_address(AllocationId=allocation_id)
    assert code(err) == "InvalidIPAddress.InUse"
    ec2.associate_address(AllocationId=allocation_id, InstanceId=b["InstanceId"], AllowReassociation=True)
    by_instance = ec2.describe_addresses(Filters=[{"Name": "instance-id", "Values": [b["InstanceId"]]}])
    assert [x["PublicIp"] for x in by_instance["Addresses"]] == [eip]
    ec2.disassociate_address(PublicIp=eip)
    ec2.release_address(AllocationId=allocation_id)
    with pytest.raises(ClientError) as err:
        ec2.describe_addresses(AllocationIds=[allocation_id])
    assert code(err) == "InvalidAllocationID.NotFound"
    ec2.terminate_instances(InstanceIds=[a["InstanceId"], b["InstanceId"]])


def test_elastic_ip_quota_gateway_and_isolation(cloud: Cloud, ec2: Any, ami: str) -> None:
    made = [ec2.allocate_address(Domain="vpc")["AllocationId"] for _ in range(5)]
    with pytest.raises(ClientError) as err:
        ec2.allocate_address(Domain="vpc")
    assert code(err) == "AddressLimitExceeded"
    with pytest.raises(ClientError) as err:
        ec2.allocate_address(Domain="standard")
    assert code(err) == "UnsupportedOperation"
    other = cloud.client("ec2", cloud.new_account())
    with pytest.raises(ClientError) as err:
        other.release_address(AllocationId=made[0])
    assert code(err) == "InvalidAllocationID.NotFound"
    assert other.describe_addresses()["Addresses"] == []
    # An instance whose VPC has no internet gateway cannot take one.
    vpc = ec2.create_vpc(CidrBlock="10.70.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.70.0.0/24")["Subnet"]["SubnetId"]
    lonely = _run(ec2, ami, SubnetId=subnet)
    with pytest.raises(ClientError) as err:
        ec2.associate_address(AllocationId=made[0], InstanceId=lonely["InstanceId"])
    assert code(err) == "Gateway.NotAttached"
    for allocation_id in made:
        ec2.release_address(AllocationId=allocation_id)
    ec2.terminate_instances(InstanceIds=[lonely["InstanceId"]])
