"""EBS snapshot actions through the `aws` CLI, typed as a user types them (shorthand tag
specifications, permissions and filters, the CLI's own paging). The same actions through boto3, with
their edge cases, are in test_ec2_snapshots.py.

`test_copy_and_restore_with_the_cli` waits on the reconciler and the Storage Controller's snapshot
engine to complete the snapshot and restore a volume from it; the others need at most an available
volume."""

from __future__ import annotations

from typing import Any

import pytest

from functional.test_ec2_instances import register_tiny_image, wait_state
from functional.test_ec2_network_cli import refused
from support.cloud import Cloud, Keys, aws, wait_for

ZONE = "mallee-1a"
SETTLE = 30
UNKNOWN = "snap-0123456789abcdef0"


@pytest.fixture
def ec2(cloud: Cloud, account: Keys) -> Any:
    def call(*args: str) -> Any:
        return aws(cloud, "ec2", *args, keys=account)

    return call


def _available_volume(ec2: Any, size: str = "1", *args: str) -> str:
    volume_id = str(ec2("create-volume", "--availability-zone", ZONE, "--size", size, *args)["VolumeId"])
    wait_for("available", lambda: _volume(ec2, volume_id)["State"] == "available", SETTLE, 0.5)
    return volume_id


def _volume(ec2: Any, volume_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ec2("describe-volumes", "--volume-ids", volume_id)["Volumes"][0]
    return found


def _snapshot(ec2: Any, snapshot_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ec2("describe-snapshots", "--snapshot-ids", snapshot_id)["Snapshots"][0]
    return found


def _ids(answer: dict[str, Any]) -> list[str]:
    return [s["SnapshotId"] for s in answer["Snapshots"]]


def test_snapshots_created_and_described_with_the_cli(cloud: Cloud, account: Keys, ec2: Any) -> None:
    volume_id = _available_volume(ec2, "2")
    made = ec2(
        "create-snapshot", "--volume-id", volume_id, "--description", "cli snapshot",
        "--tag-specifications", "ResourceType=snapshot,Tags=[{Key=Name,Value=cli}]",
    )  # fmt: skip
    snapshot_id = made["SnapshotId"]
    assert (made["State"], made["Progress"], made["VolumeSize"]) == ("pending", "0%", 2)
    assert made["Tags"] == [{"Key": "Name", "Value": "cli"}]
    found = ec2(
        "describe-snapshots", "--owner-ids", "self",
        "--filters", "Name=tag:Name,Values=cli", f"Name=volume-id,Values={volume_id}",
    )  # fmt: skip
    assert _ids(found) == [snapshot_id]
    assert _snapshot(ec2, snapshot_id)["Description"] == "cli snapshot"
    ec2("create-tags", "--resources", snapshot_id, "--tags", "Key=team,Value=db")
    assert {t["Key"] for t in _snapshot(ec2, snapshot_id)["Tags"]} == {"Name", "team"}
    for _ in range(5):
        ec2("create-snapshot", "--volume-id", volume_id)
    paged = ec2("describe-snapshots", "--owner-ids", "self", "--page-size", "5")["Snapshots"]
    assert len(paged) == 6 and len({s["SnapshotId"] for s in paged}) == 6  # the CLI follows NextToken
    ec2("delete-snapshot", "--snapshot-id", snapshot_id)
    assert refused(cloud, account, "describe-snapshots", "--snapshot-ids", snapshot_id) == (
        "InvalidSnapshot.NotFound"
    )
    assert len(ec2("describe-snapshots", "--owner-ids", "self")["Snapshots"]) == 5


def test_snapshot_refusals_with_the_cli(cloud: Cloud, account: Keys, ec2: Any) -> None:
    def no(*args: str) -> str:
        return refused(cloud, account, *args)

    assert no("create-snapshot", "--volume-id", "vol-0123456789abcdef0") == "InvalidVolume.NotFound"
    assert no("create-snapshot", "--volume-id", "vol-x") == "InvalidVolumeID.Malformed"
    assert no("describe-snapshots", "--snapshot-ids", UNKNOWN) == "InvalidSnapshot.NotFound"
    assert no("describe-snapshots", "--snapshot-ids", "snap-x") == "InvalidSnapshotID.Malformed"
    assert no("describe-snapshots", "--filters", "Name=colour,Values=red") == "InvalidParameterValue"
    assert no("describe-snapshots", "--owner-ids", "nobody") == "InvalidUserID.Malformed"
    assert no("delete-snapshot", "--snapshot-id", UNKNOWN) == "InvalidSnapshot.NotFound"
    attribute = ("--snapshot-id", UNKNOWN, "--attribute", "createVolumePermission")
    assert no("describe-snapshot-attribute", *attribute) == "InvalidSnapshot.NotFound"
    assert no("reset-snapshot-attribute", *attribute) == "InvalidSnapshot.NotFound"
    copy = ("copy-snapshot", "--source-snapshot-id", UNKNOWN)
    assert no(*copy, "--source-region", cloud.region) == "InvalidSnapshot.NotFound"
    assert no(*copy, "--source-region", "eu-west-1") == "InvalidParameterValue"
    assert no(*copy, "--source-region", cloud.region, "--encrypted") == "UnsupportedOperation"
    assert no("create-volume", "--availability-zone", ZONE, "--snapshot-id", UNKNOWN) == (
        "InvalidSnapshot.NotFound"
    )
    spec = ("create-snapshots", "--instance-specification", "InstanceId=i-0123456789abcdef0")
    assert no(*spec) == "InvalidInstanceID.NotFound"


def test_snapshot_permissions_with_the_cli(cloud: Cloud, account: Keys, ec2: Any) -> None:
    snapshot_id = ec2("create-snapshot", "--volume-id", _available_volume(ec2))["SnapshotId"]
    stranger = cloud.new_account("stranger")

    def theirs(*args: str) -> Any:
        return aws(cloud, "ec2", *args, keys=stranger)

    attribute = ("--snapshot-id", snapshot_id, "--attribute", "createVolumePermission")
    assert refused(cloud, stranger, "describe-snapshots", "--snapshot-ids", snapshot_id) == (
        "InvalidSnapshot.NotFound"
    )
    ec2("modify-snapshot-attribute", *attribute, "--operation-type", "add", "--user-ids", stranger.account_id)
    described = ec2("describe-snapshot-attribute", *attribute)
    assert described["CreateVolumePermissions"] == [{"UserId": stranger.account_id}]
    assert _ids(theirs("describe-snapshots", "--restorable-by-user-ids", "self")) == [snapshot_id]
    assert refused(cloud, stranger, "describe-snapshot-attribute", *attribute) == "AuthFailure"
    assert refused(cloud, stranger, "delete-snapshot", "--snapshot-id", snapshot_id) == "AuthFailure"
    try:
        change = f"Add=[{{Group=all}}],Remove=[{{UserId={stranger.account_id}}}]"
        ec2("modify-snapshot-attribute", "--snapshot-id", snapshot_id, "--create-volume-permission", change)
        assert ec2("describe-snapshot-attribute", *attribute)["CreateVolumePermissions"] == [{"Group": "all"}]
        public = theirs(
            "describe-snapshots", "--restorable-by-user-ids", "all", "--owner-ids", account.account_id
        )
        assert _ids(public) == [snapshot_id]
    finally:
        ec2("reset-snapshot-attribute", *attribute)
    assert ec2("describe-snapshot-attribute", *attribute)["CreateVolumePermissions"] == []
    assert refused(cloud, stranger, "describe-snapshots", "--snapshot-ids", snapshot_id) == (
        "InvalidSnapshot.NotFound"
    )


def test_create_snapshots_of_an_instance_with_the_cli(cloud: Cloud, account: Keys, ec2: Any) -> None:
    volume_id = _available_volume(
        ec2, "1", "--tag-specifications", "ResourceType=volume,Tags=[{Key=disk,Value=data}]"
    )
    spare = _available_volume(ec2, "1")
    ami = register_tiny_image(cloud, account)
    instance_id = ec2("run-instances", "--image-id", ami, "--count", "1")["Instances"][0]["InstanceId"]
    wait_state(cloud.client("ec2", account), [instance_id], "running")
    try:
        ec2("attach-volume", "--volume-id", volume_id, "--instance-id", instance_id, "--device", "/dev/sdf")
        ec2("attach-volume", "--volume-id", spare, "--instance-id", instance_id, "--device", "/dev/sdg")
        made = ec2(
            "create-snapshots",
            "--instance-specification",
            f"InstanceId={instance_id},ExcludeBootVolume=true,ExcludeDataVolumeIds=[{spare}]",
            "--copy-tags-from-source", "volume", "--description", "instance set",
        )["Snapshots"]  # fmt: skip
        assert [(s["VolumeId"], s["State"], s["Description"]) for s in made] == [
            (volume_id, "pending", "instance set")
        ]
        assert made[0]["Tags"] == [{"Key": "disk", "Value": "data"}]
    finally:
        ec2("terminate-instances", "--instance-ids", instance_id)


def test_copy_and_restore_with_the_cli(cloud: Cloud, ec2: Any) -> None:
    snapshot_id = ec2("create-snapshot", "--volume-id", _available_volume(ec2, "2"))["SnapshotId"]
    wait_for("completed", lambda: _snapshot(ec2, snapshot_id)["State"] == "completed", SETTLE, 0.5)
    assert _snapshot(ec2, snapshot_id)["Progress"] == "100%"
    copy_id = ec2(
        "copy-snapshot", "--source-region", cloud.region, "--source-snapshot-id", snapshot_id,
        "--description", "cli copy",
    )["SnapshotId"]  # fmt: skip
    assert _snapshot(ec2, copy_id)["Description"] == "cli copy"
    restored = ec2("create-volume", "--availability-zone", ZONE, "--snapshot-id", snapshot_id, "--size", "3")
    assert (restored["SnapshotId"], restored["Size"]) == (snapshot_id, 3)
    by_snapshot = ec2("describe-volumes", "--filters", f"Name=snapshot-id,Values={snapshot_id}")["Volumes"]
    assert [v["VolumeId"] for v in by_snapshot] == [restored["VolumeId"]]
    wait_for("restored", lambda: _volume(ec2, restored["VolumeId"])["State"] == "available", SETTLE, 0.5)
    wait_for("copied", lambda: _snapshot(ec2, copy_id)["State"] == "completed", SETTLE, 0.5)
