"""DescribeRegions, DescribeAvailabilityZones, DescribeInstanceTypes, DescribeAccountAttributes."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from support.cloud import Cloud, Keys


def test_describe_regions_names_this_region_and_endpoint(cloud: Cloud) -> None:
    regions = cloud.client("ec2").describe_regions()["Regions"]
    assert regions == [
        {"RegionName": "mallee-1", "Endpoint": cloud.endpoint, "OptInStatus": "opt-in-not-required"}
    ]


def test_describe_regions_unknown_region_is_invalid_parameter(cloud: Cloud) -> None:
    with pytest.raises(ClientError) as err:
        cloud.client("ec2").describe_regions(RegionNames=["us-east-1"])
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_describe_regions_filter_by_name(cloud: Cloud) -> None:
    ec2 = cloud.client("ec2")
    assert ec2.describe_regions(Filters=[{"Name": "region-name", "Values": ["mallee-*"]}])["Regions"]
    assert ec2.describe_regions(Filters=[{"Name": "region-name", "Values": ["us-*"]}])["Regions"] == []


def test_availability_zones_are_the_registered_clusters(cloud: Cloud) -> None:
    zones = cloud.client("ec2").describe_availability_zones()["AvailabilityZones"]
    assert [(z["ZoneName"], z["State"], z["RegionName"]) for z in zones] == [
        ("mallee-1a", "available", "mallee-1")
    ]


def test_availability_zones_verbose_lists_capacity_per_type(cloud: Cloud) -> None:
    zones = cloud.client("ec2").describe_availability_zones(ZoneNames=["verbose"])["AvailabilityZones"]
    names = [z["ZoneName"] for z in zones]
    assert names[0] == "mallee-1a"
    assert "|- m1.small" in names and "|- hs1.8xlarge" in names
    rows = {z["ZoneName"]: z["State"].split() for z in zones}
    free, _, most, cpus, ram, disk = rows["|- m1.small"]
    # The test cloud's node has 16 cores, 16 GiB, 200 GiB, and the cloud the default overcommit
    # (4 vCPUs per core, memory 1.0): it offers 64 vCPUs, 16 GiB, 200 GiB. m1.small (1 CPU,
    # 256 MiB, 5 GiB) fits 40 times when empty, limited by disk; m3.xlarge (4 CPUs, 2 GiB, 15 GiB)
    # 8 times, limited by memory (4 without CPU overcommit).
    assert (most, cpus, ram, disk) == ("0040", "1", "256", "5")
    assert 0 <= int(free) <= 40
    assert rows["|- m3.xlarge"][2:] == ["0008", "4", "2048", "15"]


def test_unknown_zone_is_refused(cloud: Cloud) -> None:
    with pytest.raises(ClientError) as err:
        cloud.client("ec2").describe_availability_zones(ZoneNames=["nowhere-1z"])
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_eighteen_eucalyptus_instance_types(cloud: Cloud) -> None:
    types = cloud.client("ec2").describe_instance_types()["InstanceTypes"]
    assert len(types) == 18
    by_name = {t["InstanceType"]: t for t in types}
    assert by_name["t1.micro"]["VCpuInfo"]["DefaultVCpus"] == 1
    assert by_name["m1.small"]["InstanceStorageInfo"]["TotalSizeInGB"] == 5
    assert by_name["hs1.8xlarge"]["VCpuInfo"]["DefaultVCpus"] == 48
    assert by_name["hs1.8xlarge"]["MemoryInfo"]["SizeInMiB"] == 119808


def test_instance_types_filter_and_pagination(cloud: Cloud) -> None:
    ec2 = cloud.client("ec2")
    two_cpus = ec2.describe_instance_types(Filters=[{"Name": "vcpu-info.default-vcpus", "Values": ["2"]}])
    assert {t["VCpuInfo"]["DefaultVCpus"] for t in two_cpus["InstanceTypes"]} == {2}
    paginator = ec2.get_paginator("describe_instance_types")
    pages = list(paginator.paginate(PaginationConfig={"PageSize": 5}))
    assert len(pages) == 4
    assert sum(len(p["InstanceTypes"]) for p in pages) == 18


def test_unknown_instance_type_is_refused(cloud: Cloud) -> None:
    with pytest.raises(ClientError) as err:
        cloud.client("ec2").describe_instance_types(InstanceTypes=["m9.huge"])
    assert err.value.response["Error"]["Code"] == "InvalidInstanceType"


def test_unknown_filter_is_invalid_parameter(cloud: Cloud) -> None:
    with pytest.raises(ClientError) as err:
        cloud.client("ec2").describe_instance_types(Filters=[{"Name": "no-such-filter", "Values": ["1"]}])
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_account_attributes_say_vpc_and_name_the_default_vpc(cloud: Cloud) -> None:
    attrs = cloud.client("ec2").describe_account_attributes()["AccountAttributes"]
    values = {a["AttributeName"]: [v["AttributeValue"] for v in a["AttributeValues"]] for a in attrs}
    assert values["supported-platforms"] == ["VPC"]
    default = cloud.client("ec2").describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    assert values["default-vpc"] == [default[0]["VpcId"]]
    one = cloud.client("ec2").describe_account_attributes(AttributeNames=["max-instances"])[
        "AccountAttributes"
    ]
    assert [a["AttributeName"] for a in one] == ["max-instances"]


def test_new_account_sees_the_same_zones_and_types(cloud: Cloud, account: Keys) -> None:
    ec2 = cloud.client("ec2", account)
    assert ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"] == "mallee-1a"
    assert len(ec2.describe_instance_types()["InstanceTypes"]) == 18


def test_known_but_unimplemented_action_is_not_implemented(cloud: Cloud) -> None:
    with pytest.raises(ClientError) as err:
        cloud.client("ec2").describe_nat_gateways()
    assert err.value.response["Error"]["Code"] == "NotImplemented"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501


def test_every_answer_carries_a_request_id(cloud: Cloud) -> None:
    meta = cloud.client("ec2").describe_regions()["ResponseMetadata"]
    assert len(meta["RequestId"]) == 36


def test_aws_cli_describe_availability_zones_with_the_written_profile(cloud: Cloud) -> None:
    result = cloud.run("aws", "--profile", "mallee", "ec2", "describe-availability-zones", "--output", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["AvailabilityZones"][0]["ZoneName"] == "mallee-1a"


def test_aws_cli_at_eucalyptus_service_path(cloud: Cloud) -> None:
    result = cloud.run(
        "aws",
        "--profile",
        "mallee",
        "--endpoint-url",
        cloud.endpoint + "/services/compute",
        "ec2",
        "describe-regions",
        "--output",
        "json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["Regions"][0]["RegionName"] == "mallee-1"
