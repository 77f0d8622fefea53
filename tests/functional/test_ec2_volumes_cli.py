"""EBS volume actions through the `aws` CLI, typed as a user types them (shorthand tag
specifications and filters, boolean flags, the CLI's own paging). The same actions through boto3,
with their edge cases, are in test_ec2_volumes.py.

`test_attach_modify_detach_and_delete_with_the_cli` waits on the reconciler and the Storage
Controller to move the volume's states."""

from __future__ import annotations

from typing import Any

import pytest

from functional.test_ec2_instances import register_tiny_image, wait_state
from functional.test_ec2_network_cli import refused
from support.cloud import Cloud, Keys, aws, wait_for

ZONE = "mallee-1a"
SETTLE = 20


@pytest.fixture
def ec2(cloud: Cloud, account: Keys) -> Any:
    def call(*args: str) -> Any:
        return aws(cloud, "ec2", *args, keys=account)

    return call


def _create(ec2: Any, *args: str) -> dict[str, Any]:
    made: dict[str, Any] = ec2("create-volume", "--availability-zone", ZONE, *args)
    return made


def test_volumes_created_and_described_with_the_cli(ec2: Any) -> None:
    made = _create(
        ec2, "--size", "5", "--volume-type", "gp3", "--iops", "4000", "--throughput", "250",
        "--tag-specifications", "ResourceType=volume,Tags=[{Key=Name,Value=cli}]", "--client-token", "cli-1",
    )  # fmt: skip
    volume_id = made["VolumeId"]
    assert (made["State"], made["Size"], made["Iops"], made["Throughput"]) == ("creating", 5, 4000, 250)
    again = _create(ec2, "--size", "5", "--volume-type", "gp3", "--iops", "4000", "--throughput", "250",
                    "--client-token", "cli-1")  # fmt: skip
    assert again["VolumeId"] == volume_id
    found = ec2("describe-volumes", "--filters", "Name=tag:Name,Values=cli", "Name=volume-type,Values=gp3")
    assert [v["VolumeId"] for v in found["Volumes"]] == [volume_id]
    assert ec2("describe-volumes", "--volume-ids", volume_id)["Volumes"][0]["Tags"] == [
        {"Key": "Name", "Value": "cli"}
    ]
    statuses = ec2("describe-volume-status", "--filters", f"Name=availability-zone,Values={ZONE}")
    assert [s["VolumeId"] for s in statuses["VolumeStatuses"]] == [volume_id]
    attribute = ("describe-volume-attribute", "--volume-id", volume_id, "--attribute", "autoEnableIO")
    assert ec2(*attribute)["AutoEnableIO"] == {"Value": False}
    ec2("modify-volume-attribute", "--volume-id", volume_id, "--auto-enable-io")
    assert ec2(*attribute)["AutoEnableIO"] == {"Value": True}
    for _ in range(6):
        _create(ec2, "--size", "1")
    paged = ec2("describe-volumes", "--page-size", "5")["Volumes"]  # the CLI follows NextToken
    assert len(paged) == 7 and len({v["VolumeId"] for v in paged}) == 7
    assert ec2("describe-volumes-modifications")["VolumesModifications"] == []


def test_volume_refusals_with_the_cli(cloud: Cloud, account: Keys, ec2: Any) -> None:
    def no(*args: str) -> str:
        return refused(cloud, account, *args)

    create = ("create-volume", "--availability-zone", ZONE)
    assert no(*create, "--size", "10", "--encrypted") == "UnsupportedOperation"
    assert no(*create, "--size", "10", "--kms-key-id", "alias/aws/ebs") == "UnsupportedOperation"
    multi = ("--size", "10", "--volume-type", "io2", "--iops", "1000", "--multi-attach-enabled")
    assert no(*create, *multi) == "UnsupportedOperation"
    assert no(*create, "--size", "0") == "InvalidParameterValue"
    assert no(*create, "--size", "2000", "--volume-type", "standard") == "InvalidParameterValue"
    assert no(*create, "--size", "10", "--volume-type", "io1") == "MissingParameter"
    assert no(*create, "--size", "10", "--iops", "500") == "InvalidParameterCombination"
    assert no(*create, "--snapshot-id", "snap-0123456789abcdef0") == "InvalidSnapshot.NotFound"
    assert no("create-volume", "--size", "1", "--availability-zone", "mallee-1z") == "InvalidZone.NotFound"
    assert no("describe-volumes", "--volume-ids", "vol-0123456789abcdef0") == "InvalidVolume.NotFound"
    assert no("describe-volumes", "--volume-ids", "vol-x") == "InvalidVolumeID.Malformed"
    assert no("describe-volumes", "--filters", "Name=colour,Values=red") == "InvalidParameterValue"
    assert no("delete-volume", "--volume-id", "vol-0123456789abcdef0") == "InvalidVolume.NotFound"
    volume_id = _create(ec2, "--size", "10")["VolumeId"]
    assert no("modify-volume", "--volume-id", volume_id, "--size", "5") == "InvalidParameterValue"
    assert no("detach-volume", "--volume-id", volume_id) == "IncorrectState"
    bad_device = ("--volume-id", volume_id, "--instance-id", "i-0123456789abcdef0", "--device", "/dev/vdb")
    assert no("attach-volume", *bad_device) == "InvalidParameterValue"
    unknown = ("--volume-id", volume_id, "--instance-id", "i-0123456789abcdef0", "--device", "/dev/sdf")
    assert no("attach-volume", *unknown) == "InvalidInstanceID.NotFound"
    assert (
        no("describe-volumes-modifications", "--volume-ids", volume_id)
        == "InvalidVolumeModification.NotFound"
    )


def test_another_account_cannot_reach_a_volume_with_the_cli(cloud: Cloud, account: Keys, ec2: Any) -> None:
    volume_id = _create(ec2, "--size", "2")["VolumeId"]
    stranger = cloud.new_account("stranger")
    assert aws(cloud, "ec2", "describe-volumes", keys=stranger)["Volumes"] == []
    for args in (
        ("describe-volumes", "--volume-ids", volume_id),
        ("delete-volume", "--volume-id", volume_id),
        ("modify-volume", "--volume-id", volume_id, "--size", "20"),
        ("modify-volume-attribute", "--volume-id", volume_id, "--auto-enable-io"),
        ("detach-volume", "--volume-id", volume_id),
    ):
        assert refused(cloud, stranger, *args) == "InvalidVolume.NotFound"
    assert ec2("describe-volumes", "--volume-ids", volume_id)["Volumes"][0]["Size"] == 2


def _gone(cloud: Cloud, keys: Keys, volume_id: str) -> bool:
    done = cloud.run(
        "aws", "--endpoint-url", cloud.endpoint, "--region", cloud.region,
        "ec2", "describe-volumes", "--volume-ids", volume_id,
        env={"AWS_ACCESS_KEY_ID": keys.access_key_id, "AWS_SECRET_ACCESS_KEY": keys.secret_access_key},
    )  # fmt: skip
    return done.returncode != 0 and "InvalidVolume.NotFound" in done.stderr


def _attachment_state(ec2: Any, volume_id: str) -> str:
    attachments = ec2("describe-volumes", "--volume-ids", volume_id)["Volumes"][0]["Attachments"]
    return str(attachments[0]["State"]) if attachments else ""


def _state(ec2: Any, volume_id: str) -> str:
    return str(ec2("describe-volumes", "--volume-ids", volume_id)["Volumes"][0]["State"])


def test_attach_modify_detach_and_delete_with_the_cli(cloud: Cloud, account: Keys, ec2: Any) -> None:
    ami = register_tiny_image(cloud, account)
    instance_id = ec2("run-instances", "--image-id", ami, "--count", "1")["Instances"][0]["InstanceId"]
    wait_state(cloud.client("ec2", account), [instance_id], "running")
    volume_id = _create(ec2, "--size", "8")["VolumeId"]
    wait_for("available", lambda: _state(ec2, volume_id) == "available", SETTLE, 0.5)
    attached = ec2(
        "attach-volume", "--volume-id", volume_id, "--instance-id", instance_id, "--device", "/dev/sdf"
    )
    assert attached["State"] == "attaching"
    ec2("modify-instance-attribute", "--instance-id", instance_id, "--block-device-mappings",
        '[{"DeviceName":"/dev/sdf","Ebs":{"DeleteOnTermination":true}}]')  # fmt: skip
    described = ec2("describe-instances", "--instance-ids", instance_id)["Reservations"][0]["Instances"][0]
    [mapping] = described["BlockDeviceMappings"]
    assert (mapping["DeviceName"], mapping["Ebs"]["VolumeId"]) == ("/dev/sdf", volume_id)
    assert mapping["Ebs"]["DeleteOnTermination"] is True
    by_instance = ec2("describe-volumes", "--filters", f"Name=attachment.instance-id,Values={instance_id}")
    assert [v["VolumeId"] for v in by_instance["Volumes"]] == [volume_id]
    change = ec2("modify-volume", "--volume-id", volume_id, "--size", "10")["VolumeModification"]
    assert (change["ModificationState"], change["TargetSize"]) == ("modifying", 10)
    listed = ec2(
        "describe-volumes-modifications", "--filters", "Name=modification-state,Values=modifying,completed"
    )
    assert [m["VolumeId"] for m in listed["VolumesModifications"]] == [volume_id]
    wait_for("attached", lambda: _attachment_state(ec2, volume_id) == "attached", SETTLE, 0.5)
    assert ec2("detach-volume", "--volume-id", volume_id)["State"] == "detaching"
    wait_for("detached", lambda: _state(ec2, volume_id) == "available", SETTLE, 0.5)
    ec2("delete-volume", "--volume-id", volume_id)
    wait_for("deleted", lambda: _gone(cloud, account, volume_id), SETTLE, 0.5)
    ec2("terminate-instances", "--instance-ids", instance_id)
