"""EBS volumes through boto3: what CreateVolume records and answers, the AWS rules it keeps (sizes,
IOPS and throughput per type, zones, quotas, client tokens), Describe calls with their filters and
pages, attachments, modifications, and accounts that never see each other's volumes.

The states the reconciler and the Storage Controller move (creating → available, attaching →
attached, detaching and deleting → gone) are waited for with `wait_for`; the tests that need none
of them run on any cloud."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from functional.test_ec2_instances import register_tiny_image, wait_state
from support.answers import code
from support.cloud import Cloud, Keys, start_cloud, stop_cloud, wait_for

ZONE = "mallee-1a"
SETTLE = 20  # seconds the reconciler gets to move a state


@pytest.fixture
def ec2(cloud: Cloud, account: Keys) -> Any:
    return cloud.client("ec2", account)


@pytest.fixture
def loose(cloud: Cloud, account: Keys) -> Any:
    """A client that sends what the model would refuse, to see the cloud refuse it."""
    return cloud.client(
        "ec2", account, config=BotoConfig(parameter_validation=False, retries={"max_attempts": 1})
    )


@pytest.fixture
def instance(cloud: Cloud, account: Keys, ec2: Any) -> Iterator[str]:
    """A running instance of the account (its image's root device is /dev/sda1)."""
    ami = register_tiny_image(cloud, account)
    instance_id = str(ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"])
    wait_state(ec2, [instance_id], "running")
    yield instance_id
    ec2.terminate_instances(InstanceIds=[instance_id])


def _create(ec2: Any, size: int = 8, **kwargs: Any) -> dict[str, Any]:
    volume: dict[str, Any] = ec2.create_volume(AvailabilityZone=ZONE, Size=size, **kwargs)
    return volume


def _volume(ec2: Any, volume_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    return found


def _available(ec2: Any, volume_id: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        f"{volume_id} available",
        lambda: (v := _volume(ec2, volume_id))["State"] == "available" and v,
        SETTLE,
        0.2,
    )
    return found


def _gone(ec2: Any, volume_id: str) -> bool:
    try:
        ec2.describe_volumes(VolumeIds=[volume_id])
    except ClientError as err:
        return err.response["Error"]["Code"] == "InvalidVolume.NotFound"
    return False


def _refused(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return code(err)


# -- create ----------------------------------------------------------------------------------------


def test_create_volume_answers_a_creating_gp2_volume(ec2: Any) -> None:
    made = _create(
        ec2, 10, TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "d"}]}]
    )
    assert made["VolumeId"].startswith("vol-") and made["State"] == "creating"
    assert (made["Size"], made["AvailabilityZone"], made["VolumeType"]) == (10, ZONE, "gp2")
    assert (made["Encrypted"], made["MultiAttachEnabled"], made["SnapshotId"]) == (False, False, "")
    assert made["Iops"] == 100 and "Throughput" not in made  # gp2: 3 IOPS per GiB, 100 at least
    assert made["Tags"] == [{"Key": "Name", "Value": "d"}] and made["Attachments"] == []
    shown = _volume(ec2, made["VolumeId"])
    assert shown["State"] in ("creating", "available") and shown["Size"] == 10
    assert abs(shown["CreateTime"] - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


def test_gp2_iops_are_three_per_gib_between_100_and_16000(ec2: Any) -> None:
    assert _create(ec2, 100)["Iops"] == 300
    assert _create(ec2, 16384)["Iops"] == 16000


def test_gp3_defaults_and_provisioned_settings_are_recorded(ec2: Any) -> None:
    plain = _create(ec2, 8, VolumeType="gp3")
    assert (plain["Iops"], plain["Throughput"]) == (3000, 125)
    fast = _create(ec2, 50, VolumeType="gp3", Iops=6000, Throughput=500)
    assert (_volume(ec2, fast["VolumeId"])["Iops"], _volume(ec2, fast["VolumeId"])["Throughput"]) == (
        6000,
        500,
    )
    io1 = _create(ec2, 20, VolumeType="io1", Iops=1000)
    assert io1["Iops"] == 1000 and "Throughput" not in io1
    st1 = _create(ec2, 125, VolumeType="st1")
    assert "Iops" not in st1 and st1["VolumeType"] == "st1"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"Size": 0}, "InvalidParameterValue"),
        ({"Size": 16385}, "InvalidParameterValue"),
        ({"Size": 16385, "VolumeType": "gp3"}, "InvalidParameterValue"),
        ({"Size": 3, "VolumeType": "io1", "Iops": 100}, "InvalidParameterValue"),
        ({"Size": 16385, "VolumeType": "io2", "Iops": 1000}, "InvalidParameterValue"),
        ({"Size": 124, "VolumeType": "st1"}, "InvalidParameterValue"),
        ({"Size": 124, "VolumeType": "sc1"}, "InvalidParameterValue"),
        ({"Size": 1025, "VolumeType": "standard"}, "InvalidParameterValue"),
        ({"Size": 10, "VolumeType": "io1"}, "MissingParameter"),
        ({"Size": 10, "VolumeType": "io1", "Iops": 1000}, "InvalidParameterValue"),  # over 50 per GiB
        ({"Size": 10, "VolumeType": "gp2", "Iops": 300}, "InvalidParameterCombination"),
        ({"Size": 200, "VolumeType": "st1", "Throughput": 200}, "InvalidParameterCombination"),
        ({"Size": 10, "VolumeType": "gp3", "Iops": 2000}, "InvalidParameterValue"),
        ({"Size": 100, "VolumeType": "gp3", "Iops": 16001}, "InvalidParameterValue"),
        ({"Size": 10, "VolumeType": "gp3", "Throughput": 1001}, "InvalidParameterValue"),
        ({"Size": 10, "VolumeType": "gp3", "Throughput": 1000}, "InvalidParameterValue"),  # > IOPS / 4
        ({"Size": 10, "VolumeType": "gp9"}, "InvalidParameterValue"),
        ({"Size": 10, "VolumeType": "gp3a"}, "UnsupportedOperation"),
        ({}, "MissingParameter"),
        ({"Size": 10, "Encrypted": True}, "UnsupportedOperation"),
        ({"Size": 10, "KmsKeyId": "alias/aws/ebs"}, "UnsupportedOperation"),
        ({"Size": 10, "VolumeType": "io2", "Iops": 1000, "MultiAttachEnabled": True}, "UnsupportedOperation"),
        (
            {"Size": 10, "OutpostArn": "arn:aws:outposts:mallee-1:123456789012:outpost/op-1"},
            "UnsupportedOperation",
        ),
        ({"SnapshotId": "snap-0123456789abcdef0"}, "InvalidSnapshot.NotFound"),
        ({"Size": 10, "AvailabilityZone": "mallee-1z"}, "InvalidZone.NotFound"),
        ({"Size": 10, "AvailabilityZone": None}, "MissingParameter"),
        (
            {"Size": 10, "TagSpecifications": [{"ResourceType": "instance", "Tags": []}]},
            "InvalidParameterValue",
        ),
    ],
)
def test_bad_create_volume_input(loose: Any, params: dict[str, Any], expected: str) -> None:
    request = {"AvailabilityZone": ZONE, **params}
    request = {k: v for k, v in request.items() if v is not None}
    assert _refused(loose.create_volume, **request) == expected
    assert loose.describe_volumes()["Volumes"] == []


def test_a_volume_in_the_zone_named_by_its_id(ec2: Any) -> None:
    zone_id = ec2.describe_availability_zones(ZoneNames=[ZONE])["AvailabilityZones"][0]["ZoneId"]
    made = ec2.create_volume(AvailabilityZoneId=zone_id, Size=1)
    assert made["AvailabilityZone"] == ZONE


def test_a_client_token_makes_create_volume_idempotent(ec2: Any) -> None:
    token = secrets.token_hex(8)
    first = _create(ec2, 8, ClientToken=token)
    again = _create(ec2, 8, ClientToken=token)
    assert again["VolumeId"] == first["VolumeId"]
    assert len(ec2.describe_volumes()["Volumes"]) == 1
    assert _refused(ec2.create_volume, AvailabilityZone=ZONE, Size=9, ClientToken=token) == (
        "IdempotentParameterMismatch"
    )
    assert _create(ec2, 8, ClientToken=secrets.token_hex(8))["VolumeId"] != first["VolumeId"]


def test_volumes_are_tagged_like_other_resources(ec2: Any) -> None:
    volume_id = _create(ec2)["VolumeId"]
    ec2.create_tags(Resources=[volume_id], Tags=[{"Key": "team", "Value": "db"}])
    assert _volume(ec2, volume_id)["Tags"] == [{"Key": "team", "Value": "db"}]
    described = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [volume_id]}])["Tags"]
    assert described[0]["ResourceType"] == "volume"
    ec2.delete_tags(Resources=[volume_id], Tags=[{"Key": "team"}])
    assert _volume(ec2, volume_id)["Tags"] == []
    assert _refused(
        ec2.create_tags, Resources=["vol-0123456789abcdef0"], Tags=[{"Key": "k", "Value": "v"}]
    ) == ("InvalidVolume.NotFound")


# -- quotas (a cloud of their own, with small ones) ------------------------------------------------


@pytest.fixture(scope="module")
def small_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    c = start_cloud(
        tmp_path_factory.mktemp("volquota"),
        {"MALLEE_MAX_VOLUMES_PER_ACCOUNT": "3", "MALLEE_MAX_VOLUME_GIB_PER_ACCOUNT": "20"},
    )
    try:
        yield c
    finally:
        stop_cloud(c)


def test_an_account_has_at_most_its_quota_of_volumes(small_cloud: Cloud) -> None:
    ec2 = small_cloud.client("ec2", small_cloud.new_account())
    for _ in range(3):
        _create(ec2, 1)
    assert _refused(ec2.create_volume, AvailabilityZone=ZONE, Size=1) == "VolumeLimitExceeded"


def test_an_account_has_at_most_its_quota_of_gib(small_cloud: Cloud) -> None:
    ec2 = small_cloud.client("ec2", small_cloud.new_account())
    _create(ec2, 15)
    assert _refused(ec2.create_volume, AvailabilityZone=ZONE, Size=6) == "VolumeLimitExceeded"
    _create(ec2, 5)  # exactly the quota


# -- describe --------------------------------------------------------------------------------------


def test_describe_volumes_names_the_volumes_it_cannot_find(ec2: Any) -> None:
    with pytest.raises(ClientError) as err:
        ec2.describe_volumes(VolumeIds=["vol-0123456789abcdef0"])
    assert code(err) == "InvalidVolume.NotFound" and "vol-0123456789abcdef0" in str(err.value)
    assert _refused(ec2.describe_volumes, VolumeIds=["vol-nothex"]) == "InvalidVolumeID.Malformed"
    assert _refused(ec2.delete_volume, VolumeId="volume-1") == "InvalidVolumeID.Malformed"
    assert _refused(ec2.delete_volume, VolumeId="vol-0123456789abcdef0") == "InvalidVolume.NotFound"
    assert (
        _refused(ec2.describe_volumes, Filters=[{"Name": "colour", "Values": ["x"]}])
        == "InvalidParameterValue"
    )


def test_describe_volumes_filters(ec2: Any) -> None:
    small = _create(
        ec2, 5, TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "tier", "Value": "a"}]}]
    )
    big = _create(ec2, 200, VolumeType="st1")

    def ids(*filters: tuple[str, list[str]]) -> set[str]:
        answer = ec2.describe_volumes(Filters=[{"Name": n, "Values": v} for n, v in filters])["Volumes"]
        return {v["VolumeId"] for v in answer}

    both = {small["VolumeId"], big["VolumeId"]}
    assert ids(("size", ["5"])) == {small["VolumeId"]}
    assert ids(("volume-type", ["st1"])) == {big["VolumeId"]}
    assert ids(("volume-id", [big["VolumeId"]])) == {big["VolumeId"]}
    assert ids(("availability-zone", [ZONE])) == both
    assert ids(("status", ["creating", "available"])) == both
    assert ids(("encrypted", ["false"])) == both and ids(("encrypted", ["true"])) == set()
    assert ids(("multi-attach-enabled", ["false"])) == both
    assert ids(("fast-restored", ["false"])) == both
    assert ids(("snapshot-id", ["snap-*"])) == set()
    minute = _volume(ec2, small["VolumeId"])["CreateTime"].strftime("%Y-%m-%dT%H:%M")
    assert small["VolumeId"] in ids(("create-time", [f"{minute}*", "1999-*"]))
    assert ids(("tag:tier", ["a"])) == {small["VolumeId"]} and ids(("tag-key", ["tier"])) == {
        small["VolumeId"]
    }
    assert ids(("attachment.instance-id", ["i-*"])) == set()
    assert ids(("attachment.status", ["attached"])) == set()
    assert ids(("size", ["5", "200"]), ("volume-type", ["gp2"])) == {small["VolumeId"]}


def test_describe_volumes_pages(ec2: Any) -> None:
    made = [_create(ec2, 1)["VolumeId"] for _ in range(7)]
    first = ec2.describe_volumes(MaxResults=5)
    second = ec2.describe_volumes(MaxResults=5, NextToken=first["NextToken"])
    assert len(first["Volumes"]) == 5 and "NextToken" not in second
    assert [v["VolumeId"] for v in first["Volumes"] + second["Volumes"]] == made
    assert len(ec2.describe_volumes(MaxResults=1000)["Volumes"]) == 7  # more than 500 answers 500 at most
    assert _refused(ec2.describe_volumes, MaxResults=4) == "InvalidParameterValue"
    assert _refused(ec2.describe_volumes, MaxResults=5, VolumeIds=made[:1]) == "InvalidParameterCombination"
    assert _refused(ec2.describe_volumes, NextToken="not a token!") == "InvalidNextToken"


def test_describe_volume_status(ec2: Any) -> None:
    volume_id = _create(ec2)["VolumeId"]
    [status] = ec2.describe_volume_status(VolumeIds=[volume_id])["VolumeStatuses"]
    assert status["AvailabilityZone"] == ZONE and status["Events"] == [] and status["Actions"] == []
    assert status["VolumeStatus"]["Status"] in ("insufficient-data", "ok")
    assert {d["Name"] for d in status["VolumeStatus"]["Details"]} == {"io-enabled", "io-performance"}

    def ids(name: str, values: list[str]) -> list[str]:
        found = ec2.describe_volume_status(Filters=[{"Name": name, "Values": values}])["VolumeStatuses"]
        return [s["VolumeId"] for s in found]

    assert ids("volume-status.status", ["insufficient-data", "ok"]) == [volume_id]
    assert ids("volume-status.status", ["impaired"]) == []
    assert ids("availability-zone", [ZONE]) == [volume_id]
    assert ids("volume-status.details-name", ["io-enabled"]) == [volume_id]
    assert ids("action.code", ["enable-volume-io"]) == [] and ids("event.event-type", ["*"]) == []
    assert _refused(ec2.describe_volume_status, Filters=[{"Name": "colour", "Values": ["x"]}]) == (
        "InvalidParameterValue"
    )
    for _ in range(5):
        _create(ec2, 1)
    page = ec2.describe_volume_status(MaxResults=5)
    rest = ec2.describe_volume_status(NextToken=page["NextToken"])["VolumeStatuses"]
    assert len(page["VolumeStatuses"]) == 5 and len(rest) == 1


def test_volume_attributes(ec2: Any) -> None:
    volume_id = _create(ec2)["VolumeId"]
    attribute = ec2.describe_volume_attribute(VolumeId=volume_id, Attribute="autoEnableIO")
    assert attribute["VolumeId"] == volume_id and attribute["AutoEnableIO"] == {"Value": False}
    ec2.modify_volume_attribute(VolumeId=volume_id, AutoEnableIO={"Value": True})
    assert ec2.describe_volume_attribute(VolumeId=volume_id, Attribute="autoEnableIO")["AutoEnableIO"] == {
        "Value": True
    }
    assert ec2.describe_volume_attribute(VolumeId=volume_id, Attribute="productCodes")["ProductCodes"] == []
    assert _refused(ec2.modify_volume_attribute, VolumeId=volume_id) == "MissingParameter"


# -- modifications (the ones refused before any state is looked at) --------------------------------


def test_a_volume_only_grows(ec2: Any) -> None:
    volume_id = _create(ec2, 10)["VolumeId"]
    assert _refused(ec2.modify_volume, VolumeId=volume_id, Size=9) == "InvalidParameterValue"
    assert _refused(ec2.modify_volume, VolumeId=volume_id, Size=16385) == "InvalidParameterValue"
    assert (
        _refused(ec2.modify_volume, VolumeId=volume_id, VolumeType="st1") == "InvalidParameterValue"
    )  # < 125
    assert _refused(ec2.modify_volume, VolumeId=volume_id, Iops=3000) == "InvalidParameterCombination"  # gp2
    assert _refused(ec2.modify_volume, VolumeId=volume_id, MultiAttachEnabled=True) == "UnsupportedOperation"
    assert _refused(ec2.modify_volume, VolumeId="vol-0123456789abcdef0", Size=20) == "InvalidVolume.NotFound"


def test_a_volume_never_modified_has_no_modification(ec2: Any) -> None:
    volume_id = _create(ec2)["VolumeId"]
    assert ec2.describe_volumes_modifications()["VolumesModifications"] == []
    assert _refused(ec2.describe_volumes_modifications, VolumeIds=[volume_id]) == (
        "InvalidVolumeModification.NotFound"
    )


# -- attachments (the ones refused before the volume's state is looked at) -------------------------


@pytest.mark.parametrize(
    "device", ["/dev/sdzz", "sdf", "/dev/vdb", "/dev/nvme1n1", "/dev/xvdzz", "f", "/dev/sdf16"]
)
def test_attach_volume_refuses_a_device_name_aws_does_not_take(ec2: Any, device: str) -> None:
    volume_id = _create(ec2)["VolumeId"]
    answer = _refused(ec2.attach_volume, VolumeId=volume_id, InstanceId="i-0123456789abcdef0", Device=device)
    assert answer == "InvalidParameterValue"


def test_attach_volume_needs_the_callers_running_instance(cloud: Cloud, account: Keys, ec2: Any) -> None:
    volume_id = _create(ec2)["VolumeId"]
    attach = {"VolumeId": volume_id, "Device": "/dev/sdf"}
    assert (
        _refused(ec2.attach_volume, InstanceId="i-0123456789abcdef0", **attach)
        == "InvalidInstanceID.NotFound"
    )
    assert _refused(ec2.attach_volume, InstanceId="i-zz", **attach) == "InvalidInstanceID.Malformed"
    ami = register_tiny_image(cloud, account)
    instance_id = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_state(ec2, [instance_id], "terminated")
    assert _refused(ec2.attach_volume, InstanceId=instance_id, **attach) == "IncorrectState"


@pytest.mark.parametrize("device", ["/dev/sda1", "/dev/sda", "/dev/xvda"])
def test_the_root_device_is_in_use(ec2: Any, instance: str, device: str) -> None:
    volume_id = _create(ec2)["VolumeId"]
    with pytest.raises(ClientError) as err:
        ec2.attach_volume(VolumeId=volume_id, InstanceId=instance, Device=device)
    assert code(err) == "InvalidParameterValue" and f"Attachment point {device} is already in use" in str(
        err.value
    )


def test_detach_volume_of_a_volume_that_is_not_attached(ec2: Any) -> None:
    volume_id = _create(ec2)["VolumeId"]
    with pytest.raises(ClientError) as err:
        ec2.detach_volume(VolumeId=volume_id)
    assert code(err) == "IncorrectState" and f"'{volume_id}' is in the" in str(err.value)
    assert _refused(ec2.detach_volume, VolumeId="vol-0123456789abcdef0") == "InvalidVolume.NotFound"


def test_an_instance_without_volumes_maps_no_block_devices(ec2: Any, instance: str) -> None:
    [described] = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"]
    assert described["BlockDeviceMappings"] == []
    mapping = [{"DeviceName": "/dev/sdf", "Ebs": {"DeleteOnTermination": True}}]
    assert _refused(ec2.modify_instance_attribute, InstanceId=instance, BlockDeviceMappings=mapping) == (
        "InvalidParameterValue"
    )


# -- accounts --------------------------------------------------------------------------------------


def test_another_account_cannot_see_or_touch_a_volume(cloud: Cloud, account: Keys, ec2: Any) -> None:
    volume_id = _create(ec2)["VolumeId"]
    stranger = cloud.new_account("stranger")
    other = cloud.client("ec2", stranger)
    assert other.describe_volumes()["Volumes"] == []
    assert other.describe_volume_status()["VolumeStatuses"] == []
    not_found = "InvalidVolume.NotFound"
    assert _refused(other.describe_volumes, VolumeIds=[volume_id]) == not_found
    assert _refused(other.describe_volume_status, VolumeIds=[volume_id]) == not_found
    assert _refused(other.delete_volume, VolumeId=volume_id) == not_found
    assert _refused(other.modify_volume, VolumeId=volume_id, Size=20) == not_found
    assert _refused(other.describe_volumes_modifications, VolumeIds=[volume_id]) == not_found
    assert (
        _refused(other.describe_volume_attribute, VolumeId=volume_id, Attribute="autoEnableIO") == not_found
    )
    assert (
        _refused(other.modify_volume_attribute, VolumeId=volume_id, AutoEnableIO={"Value": True}) == not_found
    )
    assert _refused(other.detach_volume, VolumeId=volume_id) == not_found
    assert _refused(other.create_tags, Resources=[volume_id], Tags=[{"Key": "k", "Value": "v"}]) == not_found
    ami = register_tiny_image(cloud, stranger)
    theirs = other.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    assert (
        _refused(other.attach_volume, VolumeId=volume_id, InstanceId=theirs, Device="/dev/sdf") == not_found
    )
    mine = {"VolumeId": volume_id, "InstanceId": theirs, "Device": "/dev/sdf"}
    assert _refused(ec2.attach_volume, **mine) == "InvalidInstanceID.NotFound"
    other.terminate_instances(InstanceIds=[theirs])
    assert _volume(ec2, volume_id)["Tags"] == []  # untouched


# -- with the reconciler: states that move -------------------------------------------------------


def test_a_volume_becomes_available_and_is_deleted(ec2: Any) -> None:
    volume_id = _create(ec2, 4)["VolumeId"]
    _available(ec2, volume_id)
    [status] = ec2.describe_volume_status(VolumeIds=[volume_id])["VolumeStatuses"]
    assert status["VolumeStatus"]["Status"] == "ok"
    assert [
        v["VolumeId"]
        for v in ec2.describe_volumes(Filters=[{"Name": "status", "Values": ["available"]}])["Volumes"]
    ] == [volume_id]
    ec2.delete_volume(VolumeId=volume_id)
    assert _volume(ec2, volume_id)["State"] == "deleting" or _gone(ec2, volume_id)
    wait_for(f"{volume_id} gone", lambda: _gone(ec2, volume_id), SETTLE, 0.2)


def test_attach_and_detach_a_volume(ec2: Any, instance: str) -> None:
    volume_id = _create(ec2)["VolumeId"]
    spare = _create(ec2)["VolumeId"]
    _available(ec2, volume_id)
    _available(ec2, spare)
    answer = ec2.attach_volume(VolumeId=volume_id, InstanceId=instance, Device="/dev/sdf")
    assert (answer["State"], answer["Device"], answer["InstanceId"], answer["VolumeId"]) == (
        "attaching",
        "/dev/sdf",
        instance,
        volume_id,
    )
    assert _volume(ec2, volume_id)["State"] == "in-use"
    assert (
        _refused(ec2.attach_volume, VolumeId=volume_id, InstanceId=instance, Device="/dev/sdg")
        == "VolumeInUse"
    )
    with pytest.raises(ClientError) as err:
        ec2.attach_volume(VolumeId=spare, InstanceId=instance, Device="/dev/xvdf")  # the same disk
    assert code(err) == "InvalidParameterValue" and "already in use" in str(err.value)
    assert _refused(ec2.delete_volume, VolumeId=volume_id) == "VolumeInUse"
    wait_for(
        "attached",
        lambda: _volume(ec2, volume_id)["Attachments"][0]["State"] == "attached",
        SETTLE,
        0.2,
    )
    [described] = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"]
    [mapping] = described["BlockDeviceMappings"]
    assert mapping["DeviceName"] == "/dev/sdf"
    assert (mapping["Ebs"]["VolumeId"], mapping["Ebs"]["Status"], mapping["Ebs"]["DeleteOnTermination"]) == (
        volume_id,
        "attached",
        False,
    )
    ec2.modify_instance_attribute(
        InstanceId=instance,
        BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"DeleteOnTermination": True}}],
    )

    def ids(name: str, value: str) -> list[str]:
        found = ec2.describe_volumes(Filters=[{"Name": name, "Values": [value]}])["Volumes"]
        return [v["VolumeId"] for v in found]

    assert ids("attachment.instance-id", instance) == [volume_id]
    assert ids("attachment.device", "/dev/sdf") == [volume_id]
    assert ids("attachment.status", "attached") == [volume_id]
    assert ids("attachment.delete-on-termination", "true") == [volume_id]
    assert ids("attachment.attach-time", dt.datetime.now(dt.UTC).strftime("%Y-*")) == [volume_id]
    assert ids("status", "in-use") == [volume_id]
    assert _refused(ec2.detach_volume, VolumeId=volume_id, Device="/dev/sdg") == "InvalidAttachment.NotFound"
    wrong = {"VolumeId": volume_id, "InstanceId": "i-0123456789abcdef0"}
    assert _refused(ec2.detach_volume, **wrong) == "InvalidAttachment.NotFound"
    detached = ec2.detach_volume(VolumeId=volume_id, InstanceId=instance, Device="/dev/sdf")
    assert detached["State"] == "detaching" and detached["VolumeId"] == volume_id
    _available(ec2, volume_id)
    assert _volume(ec2, volume_id)["Attachments"] == []
    [described] = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"]
    assert described["BlockDeviceMappings"] == []
    ec2.delete_volume(VolumeId=volume_id)


def test_a_forced_detach(ec2: Any, instance: str) -> None:
    volume_id = _create(ec2)["VolumeId"]
    _available(ec2, volume_id)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance, Device="xvdg")
    assert ec2.detach_volume(VolumeId=volume_id, Force=True)["State"] == "detaching"
    _available(ec2, volume_id)


def _modification(ec2: Any, volume_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"][
        0
    ]
    return found


def test_modify_volume_grows_it_once_at_a_time(ec2: Any) -> None:
    volume_id = _create(ec2, 8, VolumeType="gp3")["VolumeId"]
    _available(ec2, volume_id)
    change = ec2.modify_volume(VolumeId=volume_id, Size=12, Iops=4000)["VolumeModification"]
    assert change["ModificationState"] == "modifying"
    assert (change["OriginalSize"], change["TargetSize"]) == (8, 12)
    assert (change["OriginalIops"], change["TargetIops"]) == (3000, 4000)
    assert (change["OriginalThroughput"], change["TargetThroughput"]) == (125, 125)
    assert change["TargetVolumeType"] == change["OriginalVolumeType"] == "gp3"
    listed = ec2.describe_volumes_modifications(
        Filters=[
            {"Name": "target-size", "Values": ["12"]},
            {"Name": "original-volume-type", "Values": ["gp3"]},
        ]
    )["VolumesModifications"]
    assert [m["VolumeId"] for m in listed] == [volume_id]
    # A second modification waits for the first; only a reconciler that finished the first in
    # between lets it through.
    try:
        ec2.modify_volume(VolumeId=volume_id, Size=20)
        size = 20
    except ClientError as err:
        assert err.response["Error"]["Code"] == "IncorrectModificationState"
        size = 12
    wait_for(
        "modification completed",
        lambda: _modification(ec2, volume_id)["ModificationState"] == "completed",
        SETTLE,
        0.2,
    )
    grown = _volume(ec2, volume_id)
    assert (grown["Size"], grown["Iops"]) == (size, 4000)
    done = ec2.describe_volumes_modifications(
        Filters=[{"Name": "modification-state", "Values": ["completed"]}]
    )
    assert [m["VolumeId"] for m in done["VolumesModifications"]] == [volume_id]
    with pytest.raises(ClientError) as err:  # io1 allows 50 IOPS per GiB: 3000 needs 60 GiB
        ec2.modify_volume(VolumeId=volume_id, VolumeType="io1")
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    to_io1 = ec2.modify_volume(VolumeId=volume_id, VolumeType="io1", Size=60)["VolumeModification"]
    assert (to_io1["TargetVolumeType"], to_io1["TargetIops"], to_io1["TargetSize"]) == ("io1", 3000, 60)
    assert "TargetThroughput" not in to_io1


def test_attaching_needs_an_available_volume(ec2: Any, instance: str) -> None:
    volume_id = _create(ec2)["VolumeId"]
    _available(ec2, volume_id)
    ec2.delete_volume(VolumeId=volume_id)
    late = _refused(ec2.attach_volume, VolumeId=volume_id, InstanceId=instance, Device="/dev/sdh")
    assert late in ("IncorrectState", "InvalidVolume.NotFound")
