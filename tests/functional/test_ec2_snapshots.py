"""EBS snapshots through boto3: what CreateSnapshot, CreateSnapshots and CopySnapshot record and
answer, DescribeSnapshots with its owners, restorers, filters and pages, createVolumePermission, volumes
made from snapshots, and accounts that see only what they were given.

The snapshot states the reconciler and the Storage Controller move (pending → completed, and a volume
made from a snapshot creating → available) are waited for with `wait_for`: the tests that need them
are the ones under "with the snapshot engine". The others need at most a volume made available."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from functional.test_ec2_instances import register_tiny_image, wait_state
from functional.test_ec2_volumes import _available, _volume
from support.answers import code
from support.cloud import Cloud, Keys, wait_for

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL

ZONE = "mallee-1a"
SETTLE = 30  # seconds the reconciler and the SC get to move a state
UNKNOWN = "snap-0123456789abcdef0"


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
def stranger(cloud: Cloud) -> Keys:
    return cloud.new_account("stranger")


@pytest.fixture
def volume(ec2: Any) -> str:
    """An available 2 GiB volume of the account, tagged team=db."""
    tagged = [{"ResourceType": "volume", "Tags": [{"Key": "team", "Value": "db"}]}]
    return _available_volume(ec2, 2, TagSpecifications=tagged)


def _available_volume(ec2: Any, size: int, **kwargs: Any) -> str:
    volume_id = str(ec2.create_volume(AvailabilityZone=ZONE, Size=size, **kwargs)["VolumeId"])
    _available(ec2, volume_id)
    return volume_id


def _snapshot(ec2: Any, snapshot_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    return found


def _completed(ec2: Any, snapshot_id: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        f"{snapshot_id} completed",
        lambda: (v := _snapshot(ec2, snapshot_id))["State"] == "completed" and v,
        SETTLE,
        0.2,
    )
    return found


def _mine(ec2: Any, **kwargs: Any) -> list[str]:
    return [s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"], **kwargs)["Snapshots"]]


def _refused(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return code(err)


# -- refusals that need no volume ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"VolumeId": "vol-0123456789abcdef0"}, "InvalidVolume.NotFound"),
        ({"VolumeId": "vol-zz"}, "InvalidVolumeID.Malformed"),
        ({"VolumeId": "vol-0123456789abcdef0", "Description": "d" * 256}, "InvalidParameterValue"),
        (
            {"VolumeId": "vol-0123456789abcdef0", "OutpostArn": "arn:aws:outposts:mallee-1:1:outpost/op-1"},
            "UnsupportedOperation",
        ),
        ({"VolumeId": "vol-0123456789abcdef0", "Location": "local"}, "UnsupportedOperation"),
    ],
)
def test_bad_create_snapshot_input(loose: Any, params: dict[str, Any], expected: str) -> None:
    assert _refused(loose.create_snapshot, **params) == expected
    assert _mine(loose) == []


def test_unknown_and_malformed_snapshot_ids(ec2: Any) -> None:
    with pytest.raises(ClientError) as err:
        ec2.describe_snapshots(SnapshotIds=[UNKNOWN])
    assert code(err) == "InvalidSnapshot.NotFound" and UNKNOWN in str(err.value)
    malformed = "InvalidSnapshotID.Malformed"
    assert _refused(ec2.describe_snapshots, SnapshotIds=["snap-xyz"]) == malformed
    assert _refused(ec2.delete_snapshot, SnapshotId="snapshot-1") == malformed
    assert _refused(ec2.delete_snapshot, SnapshotId=UNKNOWN) == "InvalidSnapshot.NotFound"
    attribute = {"SnapshotId": UNKNOWN, "Attribute": "createVolumePermission"}
    assert _refused(ec2.describe_snapshot_attribute, **attribute) == "InvalidSnapshot.NotFound"
    assert _refused(ec2.reset_snapshot_attribute, **attribute) == "InvalidSnapshot.NotFound"
    grant = {"SnapshotId": UNKNOWN, "CreateVolumePermission": {"Add": [{"Group": "all"}]}}
    assert _refused(ec2.modify_snapshot_attribute, **grant) == "InvalidSnapshot.NotFound"
    assert (
        _refused(ec2.create_volume, AvailabilityZone=ZONE, SnapshotId=UNKNOWN) == "InvalidSnapshot.NotFound"
    )
    assert _refused(ec2.create_volume, AvailabilityZone=ZONE, SnapshotId="snap-1") == malformed
    tag = {"Resources": [UNKNOWN], "Tags": [{"Key": "k", "Value": "v"}]}
    assert _refused(ec2.create_tags, **tag) == "InvalidSnapshot.NotFound"


def test_describe_snapshots_refusals(ec2: Any) -> None:
    assert _refused(ec2.describe_snapshots, MaxResults=4) == "InvalidParameterValue"
    assert _refused(ec2.describe_snapshots, MaxResults=5, SnapshotIds=[UNKNOWN]) == (
        "InvalidParameterCombination"
    )
    assert _refused(ec2.describe_snapshots, NextToken="not a token!") == "InvalidNextToken"
    assert _refused(ec2.describe_snapshots, Filters=[{"Name": "colour", "Values": ["x"]}]) == (
        "InvalidParameterValue"
    )
    assert _refused(ec2.describe_snapshots, OwnerIds=["someone"]) == "InvalidUserID.Malformed"
    assert _refused(ec2.describe_snapshots, RestorableByUserIds=["someone"]) == "InvalidUserID.Malformed"
    assert _mine(ec2) == [] and _mine(ec2, MaxResults=5) == []
    assert ec2.describe_snapshots(OwnerIds=["aws-marketplace"])["Snapshots"] == []


def test_copy_snapshot_refusals(ec2: Any, cloud: Cloud) -> None:
    copy = {"SourceRegion": cloud.region, "SourceSnapshotId": UNKNOWN}
    assert _refused(ec2.copy_snapshot, **copy) == "InvalidSnapshot.NotFound"
    assert _refused(ec2.copy_snapshot, **{**copy, "SourceSnapshotId": "snap-q"}) == (
        "InvalidSnapshotID.Malformed"
    )
    with pytest.raises(ClientError) as err:
        ec2.copy_snapshot(**{**copy, "SourceRegion": "us-east-1"})
    assert code(err) == "InvalidParameterValue" and "us-east-1" in str(err.value)
    assert _refused(ec2.copy_snapshot, **copy, Encrypted=True) == "UnsupportedOperation"
    assert _refused(ec2.copy_snapshot, **copy, KmsKeyId="alias/aws/ebs") == "UnsupportedOperation"
    elsewhere = {"DestinationRegion": "us-west-2", "PresignedUrl": "https://example.com/"}
    with pytest.raises(ClientError) as err:
        ec2.copy_snapshot(**copy, **elsewhere)
    assert code(err) == "UnsupportedOperation" and "DestinationRegion" in str(err.value)


def test_create_snapshots_needs_the_callers_instance(cloud: Cloud, account: Keys, ec2: Any) -> None:
    spec = {"InstanceId": "i-0123456789abcdef0"}
    assert _refused(ec2.create_snapshots, InstanceSpecification=spec) == "InvalidInstanceID.NotFound"
    assert _refused(ec2.create_snapshots, InstanceSpecification={"InstanceId": "i-x"}) == (
        "InvalidInstanceID.Malformed"
    )
    ami = register_tiny_image(cloud, account)
    instance_id = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    try:
        # No volume is attached (and instances have no EBS boot volume): nothing to snapshot.
        assert ec2.create_snapshots(InstanceSpecification={"InstanceId": instance_id})["Snapshots"] == []
        bad = {"InstanceId": instance_id, "ExcludeDataVolumeIds": ["vol-x"]}
        assert _refused(ec2.create_snapshots, InstanceSpecification=bad) == "InvalidVolumeID.Malformed"
        stranger = cloud.client("ec2", cloud.new_account("stranger"))
        theirs = {"InstanceId": instance_id}
        assert _refused(stranger.create_snapshots, InstanceSpecification=theirs) == (
            "InvalidInstanceID.NotFound"
        )
    finally:
        ec2.terminate_instances(InstanceIds=[instance_id])


# -- with an available volume ----------------------------------------------------------------------


def test_create_snapshot_answers_a_pending_snapshot(ec2: Any, account: Keys, volume: str) -> None:
    tagged = [{"ResourceType": "snapshot", "Tags": [{"Key": "Name", "Value": "nightly"}]}]
    made = ec2.create_snapshot(VolumeId=volume, Description="before upgrade", TagSpecifications=tagged)
    assert made["SnapshotId"].startswith("snap-") and made["State"] == "pending"
    assert (made["VolumeId"], made["VolumeSize"], made["Progress"]) == (volume, 2, "0%")
    assert (made["OwnerId"], made["Description"]) == (account.account_id, "before upgrade")
    assert (made["Encrypted"], made["StorageTier"]) == (False, "standard")
    assert made["Tags"] == [{"Key": "Name", "Value": "nightly"}]
    assert abs(made["StartTime"] - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    shown = _snapshot(ec2, made["SnapshotId"])
    assert shown["State"] in ("pending", "completed") and shown["Progress"].endswith("%")
    assert shown["Tags"] == made["Tags"] and shown["Description"] == "before upgrade"
    described = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [made["SnapshotId"]]}])["Tags"]
    assert described[0]["ResourceType"] == "snapshot"
    ec2.create_tags(Resources=[made["SnapshotId"]], Tags=[{"Key": "keep", "Value": "yes"}])
    assert {t["Key"] for t in _snapshot(ec2, made["SnapshotId"])["Tags"]} == {"Name", "keep"}
    wrong = [{"ResourceType": "volume", "Tags": [{"Key": "k", "Value": "v"}]}]
    assert _refused(ec2.create_snapshot, VolumeId=volume, TagSpecifications=wrong) == "InvalidParameterValue"


def test_an_attached_volume_can_be_snapshotted_and_create_snapshots_takes_each(
    cloud: Cloud, account: Keys, ec2: Any
) -> None:
    first = _available_volume(
        ec2, 1, TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "d", "Value": "1"}]}]
    )
    second, third = _available_volume(ec2, 2), _available_volume(ec2, 3)
    ami = register_tiny_image(cloud, account)
    instance_id = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    wait_state(ec2, [instance_id], "running")
    try:
        for volume_id, device in ((first, "/dev/sdf"), (second, "/dev/sdg"), (third, "/dev/sdh")):
            ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=device)
        assert ec2.create_snapshot(VolumeId=first)["State"] == "pending"  # in-use volumes too
        answer = ec2.create_snapshots(
            InstanceSpecification={"InstanceId": instance_id, "ExcludeDataVolumeIds": [third]},
            Description="all disks",
            CopyTagsFromSource="volume",
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "set", "Value": "a"}]}],
        )["Snapshots"]
        assert [(s["VolumeId"], s["VolumeSize"], s["State"]) for s in answer] == [
            (first, 1, "pending"),
            (second, 2, "pending"),
        ]
        assert answer[0]["Tags"] == [{"Key": "d", "Value": "1"}, {"Key": "set", "Value": "a"}]
        assert answer[1]["Tags"] == [{"Key": "set", "Value": "a"}]
        assert {s["Description"] for s in answer} == {"all disks"}
        assert len(_mine(ec2)) == 3
    finally:
        ec2.terminate_instances(InstanceIds=[instance_id])


def test_a_volume_being_deleted_cannot_be_snapshotted(ec2: Any, volume: str) -> None:
    ec2.delete_volume(VolumeId=volume)
    assert _refused(ec2.create_snapshot, VolumeId=volume) in ("IncorrectState", "InvalidVolume.NotFound")


def test_describe_snapshots_filters(ec2: Any, volume: str) -> None:
    other_volume = _available_volume(ec2, 3)
    small = ec2.create_snapshot(
        VolumeId=volume,
        Description="small one",
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "tier", "Value": "a"}]}],
    )["SnapshotId"]
    big = ec2.create_snapshot(VolumeId=other_volume)["SnapshotId"]

    def ids(*filters: tuple[str, list[str]]) -> set[str]:
        found = ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": n, "Values": v} for n, v in filters]
        )
        return {s["SnapshotId"] for s in found["Snapshots"]}

    both = {small, big}
    assert ids(("volume-id", [volume])) == {small}
    assert ids(("volume-size", ["3"])) == {big}
    assert ids(("snapshot-id", [big])) == {big}
    assert ids(("description", ["small*"])) == {small}
    assert ids(("status", ["pending", "completed"])) == both
    assert ids(("progress", ["*%"])) == both
    assert ids(("encrypted", ["false"])) == both and ids(("encrypted", ["true"])) == set()
    assert ids(("storage-tier", ["standard"])) == both and ids(("storage-tier", ["archive"])) == set()
    me = _snapshot(ec2, small)["OwnerId"]
    assert ids(("owner-id", [me])) == both and ids(("owner-alias", ["amazon"])) == set()
    minute = _snapshot(ec2, small)["StartTime"].strftime("%Y-%m-%dT%H:%M")
    assert small in ids(("start-time", [f"{minute}*", "1999-*"]))
    assert ids(("tag:tier", ["a"])) == {small} and ids(("tag-key", ["tier"])) == {small}
    assert ids(("tag-value", ["a"])) == {small}
    assert ids(("volume-size", ["2", "3"]), ("tag-key", ["tier"])) == {small}


def test_describe_snapshots_pages(ec2: Any, volume: str) -> None:
    made = [ec2.create_snapshot(VolumeId=volume)["SnapshotId"] for _ in range(7)]
    first = ec2.describe_snapshots(OwnerIds=["self"], MaxResults=5)
    second = ec2.describe_snapshots(OwnerIds=["self"], MaxResults=5, NextToken=first["NextToken"])
    assert len(first["Snapshots"]) == 5 and "NextToken" not in second
    assert [s["SnapshotId"] for s in first["Snapshots"] + second["Snapshots"]] == made
    assert len(ec2.describe_snapshots(OwnerIds=["self"], MaxResults=5000)["Snapshots"]) == 7
    assert [s["SnapshotId"] for s in ec2.describe_snapshots(SnapshotIds=made[2:4])["Snapshots"]] == made[2:4]


def test_a_deleted_snapshot_is_gone_at_once(ec2: Any, volume: str) -> None:
    snapshot_id = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    ec2.delete_snapshot(SnapshotId=snapshot_id)  # a pending snapshot may be deleted, as on AWS
    assert _mine(ec2) == []
    assert _refused(ec2.describe_snapshots, SnapshotIds=[snapshot_id]) == "InvalidSnapshot.NotFound"
    assert _refused(ec2.delete_snapshot, SnapshotId=snapshot_id) == "InvalidSnapshot.NotFound"
    copy = {"SourceRegion": ec2.meta.region_name, "SourceSnapshotId": snapshot_id}
    assert _refused(ec2.copy_snapshot, **copy) == "InvalidSnapshot.NotFound"


def test_a_pending_snapshot_cannot_be_copied_or_restored(ec2: Any, volume: str) -> None:
    snapshot_id = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    if _snapshot(ec2, snapshot_id)["State"] != "pending":
        pytest.skip("the snapshot engine finished before the test could look")
    with pytest.raises(ClientError) as err:
        ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id)
    assert code(err) == "IncorrectState" and "Snapshot is in invalid state - pending" in str(err.value)
    copy = {"SourceRegion": ec2.meta.region_name, "SourceSnapshotId": snapshot_id}
    assert _refused(ec2.copy_snapshot, **copy) == "IncorrectState"


# -- createVolumePermission and other accounts -----------------------------------------------------


def test_another_account_cannot_see_or_touch_a_private_snapshot(
    cloud: Cloud, ec2: Any, stranger: Keys, volume: str
) -> None:
    snapshot_id = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    other = cloud.client("ec2", stranger)
    assert snapshot_id not in [s["SnapshotId"] for s in other.describe_snapshots()["Snapshots"]]
    not_found = "InvalidSnapshot.NotFound"
    assert _refused(other.describe_snapshots, SnapshotIds=[snapshot_id]) == not_found
    assert _refused(other.delete_snapshot, SnapshotId=snapshot_id) == not_found
    attribute = {"SnapshotId": snapshot_id, "Attribute": "createVolumePermission"}
    assert _refused(other.describe_snapshot_attribute, **attribute) == not_found
    assert _refused(other.reset_snapshot_attribute, **attribute) == not_found
    grant = {"SnapshotId": snapshot_id, "OperationType": "add", "GroupNames": ["all"]}
    assert _refused(other.modify_snapshot_attribute, **grant) == not_found
    assert _refused(other.create_volume, AvailabilityZone=ZONE, SnapshotId=snapshot_id) == not_found
    copy = {"SourceRegion": cloud.region, "SourceSnapshotId": snapshot_id}
    assert _refused(other.copy_snapshot, **copy) == not_found
    assert (
        _refused(other.create_tags, Resources=[snapshot_id], Tags=[{"Key": "k", "Value": "v"}]) == not_found
    )
    assert _refused(other.create_snapshot, VolumeId=volume) == "InvalidVolume.NotFound"
    assert _snapshot(ec2, snapshot_id)["Tags"] == []


def test_create_volume_permission_shares_a_snapshot(
    cloud: Cloud, account: Keys, ec2: Any, stranger: Keys, volume: str
) -> None:
    snapshot_id = ec2.create_snapshot(
        VolumeId=volume,
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "k", "Value": "v"}]}],
    )["SnapshotId"]
    other = cloud.client("ec2", stranger)
    attribute = {"SnapshotId": snapshot_id, "Attribute": "createVolumePermission"}
    described = ec2.describe_snapshot_attribute(**attribute)
    assert described["SnapshotId"] == snapshot_id and described["CreateVolumePermissions"] == []
    products = ec2.describe_snapshot_attribute(SnapshotId=snapshot_id, Attribute="productCodes")
    assert products["ProductCodes"] == []
    ec2.modify_snapshot_attribute(
        SnapshotId=snapshot_id,
        Attribute="createVolumePermission",
        OperationType="add",
        UserIds=[stranger.account_id],
    )
    assert ec2.describe_snapshot_attribute(**attribute)["CreateVolumePermissions"] == [
        {"UserId": stranger.account_id}
    ]
    shared = _snapshot(other, snapshot_id)
    assert (shared["OwnerId"], shared["Tags"]) == (account.account_id, [])  # the owner's tags are its own
    assert snapshot_id in [s["SnapshotId"] for s in other.describe_snapshots()["Snapshots"]]
    assert snapshot_id not in [
        s["SnapshotId"] for s in other.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    ]
    assert [
        s["SnapshotId"] for s in other.describe_snapshots(OwnerIds=[account.account_id])["Snapshots"]
    ] == [snapshot_id]
    assert [s["SnapshotId"] for s in other.describe_snapshots(RestorableByUserIds=["self"])["Snapshots"]] == [
        snapshot_id
    ]
    mine = ec2.describe_snapshots(RestorableByUserIds=[stranger.account_id], OwnerIds=["self"])["Snapshots"]
    assert [s["SnapshotId"] for s in mine] == [snapshot_id]
    # Shared is not owned: only the owner reads or changes the permission, or deletes the snapshot.
    assert _refused(other.describe_snapshot_attribute, **attribute) == "AuthFailure"
    assert _refused(other.delete_snapshot, SnapshotId=snapshot_id) == "AuthFailure"
    everyone = {"SnapshotId": snapshot_id, "CreateVolumePermission": {"Add": [{"Group": "all"}]}}
    assert _refused(other.modify_snapshot_attribute, **everyone) == "AuthFailure"
    assert _refused(other.create_tags, Resources=[snapshot_id], Tags=[{"Key": "x", "Value": "y"}]) == (
        "InvalidSnapshot.NotFound"
    )
    third = cloud.client("ec2", cloud.new_account("third"))
    assert _refused(third.describe_snapshots, SnapshotIds=[snapshot_id]) == "InvalidSnapshot.NotFound"
    try:
        ec2.modify_snapshot_attribute(**everyone)
        assert ec2.describe_snapshot_attribute(**attribute)["CreateVolumePermissions"] == [
            {"Group": "all"},
            {"UserId": stranger.account_id},
        ]
        assert _snapshot(third, snapshot_id)["SnapshotId"] == snapshot_id
        public = third.describe_snapshots(RestorableByUserIds=["all"], OwnerIds=[account.account_id])
        assert [s["SnapshotId"] for s in public["Snapshots"]] == [snapshot_id]
        ec2.modify_snapshot_attribute(
            SnapshotId=snapshot_id, CreateVolumePermission={"Remove": [{"UserId": stranger.account_id}]}
        )
        assert ec2.describe_snapshot_attribute(**attribute)["CreateVolumePermissions"] == [{"Group": "all"}]
        assert _snapshot(other, snapshot_id)["SnapshotId"] == snapshot_id  # still public
    finally:
        ec2.reset_snapshot_attribute(**attribute)
    assert ec2.describe_snapshot_attribute(**attribute)["CreateVolumePermissions"] == []
    assert _refused(third.describe_snapshots, SnapshotIds=[snapshot_id]) == "InvalidSnapshot.NotFound"
    assert _refused(other.describe_snapshots, SnapshotIds=[snapshot_id]) == "InvalidSnapshot.NotFound"


def test_bad_snapshot_attribute_changes(ec2: Any, loose: Any, volume: str) -> None:
    snapshot_id = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    bad = [
        ({"OperationType": "add", "UserIds": ["12"]}, "InvalidUserID.Malformed"),
        ({"OperationType": "add", "GroupNames": ["friends"]}, "InvalidParameterValue"),
        ({"OperationType": "grant", "UserIds": ["123456789012"]}, "InvalidParameterValue"),
        (
            {"Attribute": "productCodes", "OperationType": "add", "UserIds": ["123456789012"]},
            "InvalidParameterValue",
        ),
        ({}, "MissingParameter"),
    ]
    for params, expected in bad:
        assert _refused(loose.modify_snapshot_attribute, SnapshotId=snapshot_id, **params) == expected, params
    assert _refused(loose.describe_snapshot_attribute, SnapshotId=snapshot_id, Attribute="colour") == (
        "InvalidParameterValue"
    )
    assert _refused(loose.reset_snapshot_attribute, SnapshotId=snapshot_id, Attribute="productCodes") == (
        "InvalidParameterValue"
    )
    attribute = {"SnapshotId": snapshot_id, "Attribute": "createVolumePermission"}
    ec2.modify_snapshot_attribute(SnapshotId=snapshot_id, OperationType="add", UserIds=["123456789012"])
    ec2.modify_snapshot_attribute(SnapshotId=snapshot_id, OperationType="add", UserIds=["123456789012"])
    assert ec2.describe_snapshot_attribute(**attribute)["CreateVolumePermissions"] == [
        {"UserId": "123456789012"}
    ]
    ec2.modify_snapshot_attribute(SnapshotId=snapshot_id, OperationType="remove", UserIds=["123456789012"])
    assert ec2.describe_snapshot_attribute(**attribute)["CreateVolumePermissions"] == []


def test_the_clouds_own_snapshots_are_amazons(cloud: Cloud, ec2: Any) -> None:
    admin = cloud.client("ec2")
    volume_id = _available_volume(admin, 1)
    snapshot_id = admin.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    try:
        assert _refused(ec2.describe_snapshots, SnapshotIds=[snapshot_id]) == "InvalidSnapshot.NotFound"
        admin.modify_snapshot_attribute(
            SnapshotId=snapshot_id, CreateVolumePermission={"Add": [{"Group": "all"}]}
        )
        found = ec2.describe_snapshots(OwnerIds=["amazon"])["Snapshots"]
        assert snapshot_id in [s["SnapshotId"] for s in found]
        assert {s["OwnerAlias"] for s in found} == {"amazon"}
        by_alias = ec2.describe_snapshots(Filters=[{"Name": "owner-alias", "Values": ["amazon"]}])
        assert snapshot_id in [s["SnapshotId"] for s in by_alias["Snapshots"]]
    finally:
        admin.delete_snapshot(SnapshotId=snapshot_id)
        admin.delete_volume(VolumeId=volume_id)


# -- with the snapshot engine: pending → completed, restores -------------------------------------


def test_a_snapshot_completes(ec2: Any, volume: str) -> None:
    snapshot_id = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    done = _completed(ec2, snapshot_id)
    assert (done["Progress"], done["VolumeSize"]) == ("100%", 2)
    found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "status", "Values": ["completed"]}])
    assert [s["SnapshotId"] for s in found["Snapshots"]] == [snapshot_id]
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    assert _mine(ec2) == []


def test_a_volume_made_from_a_snapshot(ec2: Any, volume: str) -> None:
    snapshot_id = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    _completed(ec2, snapshot_id)
    with pytest.raises(ClientError) as err:
        ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id, Size=1)
    assert code(err) == "InvalidParameterValue" and snapshot_id in str(err.value)
    restored = ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id)
    assert (restored["Size"], restored["SnapshotId"], restored["State"]) == (2, snapshot_id, "creating")
    bigger = ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id, Size=5, VolumeType="gp3")
    assert (bigger["Size"], bigger["SnapshotId"]) == (5, snapshot_id)
    by_snapshot = ec2.describe_volumes(Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}])["Volumes"]
    assert {v["VolumeId"] for v in by_snapshot} == {restored["VolumeId"], bigger["VolumeId"]}
    for volume_id in (restored["VolumeId"], bigger["VolumeId"]):
        wait_for(
            f"{volume_id} restored", lambda v=volume_id: _volume(ec2, v)["State"] == "available", SETTLE, 0.2
        )
    assert _volume(ec2, restored["VolumeId"])["SnapshotId"] == snapshot_id


def test_copy_snapshot(cloud: Cloud, ec2: Any, volume: str) -> None:
    source = ec2.create_snapshot(VolumeId=volume, Description="source")["SnapshotId"]
    _completed(ec2, source)
    tagged = [{"ResourceType": "snapshot", "Tags": [{"Key": "copy", "Value": "1"}]}]
    answer = ec2.copy_snapshot(SourceRegion=cloud.region, SourceSnapshotId=source, TagSpecifications=tagged)
    copy_id = answer["SnapshotId"]
    assert copy_id != source and answer["Tags"] == [{"Key": "copy", "Value": "1"}]
    copy = _snapshot(ec2, copy_id)
    assert (copy["VolumeId"], copy["VolumeSize"]) == (volume, 2)
    assert copy["Description"] == f"[Copied {source} from {cloud.region}]"
    named = ec2.copy_snapshot(SourceRegion=cloud.region, SourceSnapshotId=source, Description="mine")
    assert _snapshot(ec2, named["SnapshotId"])["Description"] == "mine"
    assert _completed(ec2, copy_id)["Progress"] == "100%"


def test_a_shared_snapshot_can_be_restored_and_copied_by_the_other_account(
    cloud: Cloud, ec2: Any, stranger: Keys, volume: str
) -> None:
    snapshot_id = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    _completed(ec2, snapshot_id)
    other = cloud.client("ec2", stranger)
    ec2.modify_snapshot_attribute(SnapshotId=snapshot_id, OperationType="add", UserIds=[stranger.account_id])
    restored = other.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id)
    assert restored["SnapshotId"] == snapshot_id
    copy_id = other.copy_snapshot(SourceRegion=cloud.region, SourceSnapshotId=snapshot_id)["SnapshotId"]
    assert _snapshot(other, copy_id)["OwnerId"] == stranger.account_id
    assert _refused(ec2.describe_snapshots, SnapshotIds=[copy_id]) == "InvalidSnapshot.NotFound"
    wait_for("restored", lambda: _volume(other, restored["VolumeId"])["State"] == "available", SETTLE, 0.2)
    _completed(other, copy_id)
