"""EBS-backed images and instances through boto3 and the `aws` CLI: ImportSnapshot of an image's root
file system, RegisterImage with a root snapshot, RunInstances making the root (and extra) volumes,
StopInstances/StartInstances keeping them and the private address, what may change while stopped,
CreateImage (NoReboot, and the clean stop-snapshot-start), DeleteSnapshot refused while an image uses
the snapshot, termination deleting only DeleteOnTermination volumes, and other accounts kept out.

The cloud runs the fake hypervisor and block store: the states are the production code's (record,
reconcile, the SC's snapshot engine on real chunks in Walrus); real VMs are in e2e/test_ebs_instances.py."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from functional.test_ec2_instances import register_tiny_image, wait_state
from functional.test_ec2_snapshots import _completed
from functional.test_ec2_volumes import _available, _gone, _volume
from support.answers import code
from support.cloud import Cloud, Keys, aws, wait_for

SETTLE = 45
ROOT = "/dev/xvda"


def _refused(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return code(err)


def import_root(ec2: Any, ami: str) -> str:
    """ImportSnapshot of an instance-store image's root file system; the completed snapshot's id."""
    image = ec2.describe_images(ImageIds=[ami])["Images"][0]
    bucket, _, key = image["ImageLocation"].partition("/")
    task = ec2.import_snapshot(
        Description="root", DiskContainer={"Format": "RAW", "UserBucket": {"S3Bucket": bucket, "S3Key": key}}
    )
    task_id = task["ImportTaskId"]
    assert task_id.startswith("import-snap-") and task["SnapshotTaskDetail"]["Status"] == "active"

    def done() -> Any:
        found = ec2.describe_import_snapshot_tasks(ImportTaskIds=[task_id])["ImportSnapshotTasks"][0]
        return found["SnapshotTaskDetail"]["Status"] == "completed" and found

    finished = wait_for(f"{task_id} completed", done, SETTLE, 0.3)
    snapshot_id = str(finished["SnapshotTaskDetail"]["SnapshotId"])
    snapshot = _completed(ec2, snapshot_id)
    assert (snapshot["VolumeId"], snapshot["VolumeSize"]) == ("vol-ffffffff", 1)
    return snapshot_id


def ebs_image(cloud: Cloud, keys: Keys) -> tuple[str, str]:
    """An EBS-backed image made from the tiny test image (kernel, ramdisk, a root snapshot)."""
    ec2 = cloud.client("ec2", keys)
    source = register_tiny_image(cloud, keys)
    described = ec2.describe_images(ImageIds=[source])["Images"][0]
    snapshot_id = import_root(ec2, source)
    ami = ec2.register_image(
        Name=f"ebs-{source}",
        RootDeviceName=ROOT,
        KernelId=described["KernelId"],
        RamdiskId=described["RamdiskId"],
        Architecture="x86_64",
        BlockDeviceMappings=[{"DeviceName": ROOT, "Ebs": {"SnapshotId": snapshot_id, "VolumeType": "gp3"}}],
    )["ImageId"]
    return str(ami), snapshot_id


@pytest.fixture
def ec2(cloud: Cloud, account: Keys) -> Any:
    return cloud.client("ec2", account)


@pytest.fixture
def image(cloud: Cloud, account: Keys) -> tuple[str, str]:
    return ebs_image(cloud, account)


def _instance(ec2: Any, instance_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][
        0
    ]
    return found


def _mappings(ec2: Any, instance_id: str) -> dict[str, dict[str, Any]]:
    return {m["DeviceName"]: m["Ebs"] for m in _instance(ec2, instance_id)["BlockDeviceMappings"]}


def _attached(ec2: Any, instance_id: str, devices: set[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = wait_for(
        f"{devices} attached to {instance_id}",
        lambda: (
            (m := _mappings(ec2, instance_id)).keys() == devices
            and all(e["Status"] == "attached" for e in m.values())
            and m
        ),
        SETTLE,
        0.3,
    )
    return found


def _run(ec2: Any, ami: str, **kwargs: Any) -> str:
    instance_id = str(
        ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, **kwargs)["Instances"][0]["InstanceId"]
    )
    wait_state(ec2, [instance_id], "running", SETTLE)
    return instance_id


def test_an_ebs_image_is_registered_from_a_root_snapshot(ec2: Any, image: tuple[str, str]) -> None:
    ami, snapshot_id = image
    found = ec2.describe_images(ImageIds=[ami])["Images"][0]
    assert (found["RootDeviceType"], found["RootDeviceName"], found["State"]) == ("ebs", ROOT, "available")
    assert found["BlockDeviceMappings"] == [
        {
            "DeviceName": ROOT,
            "Ebs": {
                "DeleteOnTermination": True,
                "SnapshotId": snapshot_id,
                "VolumeSize": 1,
                "VolumeType": "gp3",
                "Encrypted": False,
                "Iops": 3000,
                "Throughput": 125,
            },
        }
    ]
    filtered = ec2.describe_images(Filters=[{"Name": "root-device-type", "Values": ["ebs"]}])["Images"]
    assert ami in [i["ImageId"] for i in filtered]
    assert _refused(ec2.delete_snapshot, SnapshotId=snapshot_id) == "InvalidSnapshot.InUse"


@pytest.mark.parametrize(
    ("mappings", "expected"),
    [
        ([{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1}}], "InvalidBlockDeviceMapping"),  # no root
        (
            [{"DeviceName": ROOT, "Ebs": {"VolumeSize": 1}}],
            "InvalidBlockDeviceMapping",
        ),  # root not a snapshot
        ([{"DeviceName": ROOT, "Ebs": {"SnapshotId": "snap-0123456789abcdef0"}}], "InvalidSnapshot.NotFound"),
        ([{"DeviceName": ROOT, "VirtualName": "ephemeral0"}], "UnsupportedOperation"),
    ],
)
def test_bad_ebs_registrations(ec2: Any, mappings: list[dict[str, Any]], expected: str) -> None:
    assert (
        _refused(ec2.register_image, Name="bad-ebs", RootDeviceName=ROOT, BlockDeviceMappings=mappings)
        == expected
    )


def test_register_needs_a_location_or_a_root_snapshot(ec2: Any) -> None:
    assert _refused(ec2.register_image, Name="nothing") == "MissingParameter"


def test_import_snapshot_refusals(cloud: Cloud, account: Keys, ec2: Any) -> None:
    vmdk = {"Format": "VMDK", "UserBucket": {"S3Bucket": "b", "S3Key": "k"}}
    assert _refused(ec2.import_snapshot, DiskContainer=vmdk) == "UnsupportedOperation"
    web = {"Format": "RAW", "Url": "https://example.com/disk.img"}
    assert _refused(ec2.import_snapshot, DiskContainer=web) == "UnsupportedOperation"
    missing = {"Format": "RAW", "UserBucket": {"S3Bucket": "no-such-bucket-here", "S3Key": "k"}}
    assert _refused(ec2.import_snapshot, DiskContainer=missing) == "InvalidManifest"
    # Another account's private object cannot be imported by this one.
    other = cloud.new_account("importer")
    ami = register_tiny_image(cloud, account)
    bucket, _, key = ec2.describe_images(ImageIds=[ami])["Images"][0]["ImageLocation"].partition("/")
    theirs = {"Format": "RAW", "UserBucket": {"S3Bucket": bucket, "S3Key": key}}
    assert _refused(cloud.client("ec2", other).import_snapshot, DiskContainer=theirs) == "InvalidManifest"
    assert _refused(ec2.describe_import_snapshot_tasks, ImportTaskIds=["import-snap-0123456789abcdef0"]) == (
        "InvalidConversionTaskId.Malformed"
    )


def test_run_makes_the_volumes_and_terminate_deletes_only_delete_on_termination_ones(
    ec2: Any, image: tuple[str, str]
) -> None:
    ami, _ = image
    extra = {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 2, "DeleteOnTermination": False}}
    tagged = [{"ResourceType": "volume", "Tags": [{"Key": "made-by", "Value": "run"}]}]
    instance_id = _run(
        ec2,
        ami,
        BlockDeviceMappings=[{"DeviceName": ROOT, "Ebs": {"VolumeSize": 3}}, extra],
        TagSpecifications=tagged,
    )
    found = _instance(ec2, instance_id)
    assert (found["RootDeviceType"], found["RootDeviceName"]) == ("ebs", ROOT)
    mapped = _attached(ec2, instance_id, {ROOT, "/dev/sdf"})
    assert mapped[ROOT]["DeleteOnTermination"] is True and mapped["/dev/sdf"]["DeleteOnTermination"] is False
    root, data = _volume(ec2, mapped[ROOT]["VolumeId"]), _volume(ec2, mapped["/dev/sdf"]["VolumeId"])
    assert (root["Size"], root["VolumeType"], root["State"], root["SnapshotId"]) == (
        3,
        "gp3",
        "in-use",
        image[1],
    )
    assert (data["Size"], data["SnapshotId"]) == (2, "")
    assert data["Tags"] == [{"Key": "made-by", "Value": "run"}]
    assert _refused(ec2.detach_volume, VolumeId=root["VolumeId"]) == "IncorrectState"  # the running root
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_for(f"{root['VolumeId']} deleted", lambda: _gone(ec2, root["VolumeId"]), SETTLE, 0.3)
    assert _available(ec2, data["VolumeId"])["Attachments"] == []


@pytest.mark.parametrize(
    ("mappings", "expected"),
    [
        ([{"DeviceName": ROOT, "NoDevice": ""}], "InvalidBlockDeviceMapping"),
        ([{"DeviceName": ROOT, "Ebs": {"VolumeSize": 30000}}], "InvalidParameterValue"),
        ([{"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}], "UnsupportedOperation"),
        ([{"DeviceName": "/dev/sdg", "Ebs": {}}], "InvalidBlockDeviceMapping"),
        ([{"DeviceName": "/dev/sdg", "Ebs": {"VolumeSize": 1, "Encrypted": True}}], "UnsupportedOperation"),
    ],
)
def test_bad_launch_mappings(
    ec2: Any, image: tuple[str, str], mappings: list[dict[str, Any]], expected: str
) -> None:
    refused = _refused(
        ec2.run_instances, ImageId=image[0], MinCount=1, MaxCount=1, BlockDeviceMappings=mappings
    )
    assert refused == expected


def test_stop_and_start_keep_the_volumes_and_the_address(ec2: Any, image: tuple[str, str]) -> None:
    instance_id = _run(ec2, image[0])
    before = _instance(ec2, instance_id)
    root_volume = _attached(ec2, instance_id, {ROOT})[ROOT]["VolumeId"]
    stopping = ec2.stop_instances(InstanceIds=[instance_id])["StoppingInstances"][0]
    assert (stopping["PreviousState"]["Name"], stopping["CurrentState"]["Name"]) == ("running", "stopping")
    stopped = wait_state(ec2, [instance_id], "stopped", SETTLE)[0]
    assert stopped["StateReason"]["Code"] == "Client.UserInitiatedShutdown"
    assert _mappings(ec2, instance_id)[ROOT]["Status"] == "attached"
    assert _volume(ec2, root_volume)["State"] == "in-use"
    # While stopped: its type may change, a volume may be attached (and is there at the start).
    assert (
        _refused(ec2.modify_instance_attribute, InstanceId=instance_id, InstanceType={"Value": "no.such"})
        == "InvalidInstanceAttributeValue"
    )
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "t1.micro"})
    data = ec2.create_volume(AvailabilityZone="mallee-1a", Size=1)["VolumeId"]
    _available(ec2, data)
    ec2.attach_volume(VolumeId=data, InstanceId=instance_id, Device="/dev/sdh")
    starting = ec2.start_instances(InstanceIds=[instance_id])["StartingInstances"][0]
    assert (starting["PreviousState"]["Name"], starting["CurrentState"]["Name"]) == ("stopped", "pending")
    after = wait_state(ec2, [instance_id], "running", SETTLE)[0]
    assert after["PrivateIpAddress"] == before["PrivateIpAddress"] and after["InstanceType"] == "t1.micro"
    assert after["LaunchTime"] >= before["LaunchTime"]
    mapped = _attached(ec2, instance_id, {ROOT, "/dev/sdh"})
    assert mapped[ROOT]["VolumeId"] == root_volume and mapped["/dev/sdh"]["VolumeId"] == data
    assert ec2.start_instances(InstanceIds=[instance_id])["StartingInstances"][0]["CurrentState"]["Name"] == (
        "running"
    )
    running_type = {"InstanceId": instance_id, "InstanceType": {"Value": "m1.small"}}
    assert _refused(ec2.modify_instance_attribute, **running_type) == "IncorrectInstanceState"
    ec2.stop_instances(InstanceIds=[instance_id], Force=True)
    wait_state(ec2, [instance_id], "stopped", SETTLE)
    ec2.terminate_instances(InstanceIds=[instance_id])  # a stopped instance terminates too
    wait_state(ec2, [instance_id], "terminated", SETTLE)
    wait_for(f"{root_volume} deleted", lambda: _gone(ec2, root_volume), SETTLE, 0.3)
    assert _available(ec2, data)["State"] == "available"  # attached later: kept
    stopped_again = _refused(ec2.stop_instances, InstanceIds=[instance_id])
    assert stopped_again == "IncorrectInstanceState"


def test_an_instance_store_instance_cannot_be_imaged_and_unsupported_stops(
    cloud: Cloud, account: Keys, ec2: Any
) -> None:
    ami = register_tiny_image(cloud, account)
    instance_id = _run(ec2, ami)
    assert _refused(ec2.create_image, InstanceId=instance_id, Name="from-store") == "InvalidParameterValue"
    assert _refused(ec2.stop_instances, InstanceIds=[instance_id], Hibernate=True) == "UnsupportedOperation"
    ec2.terminate_instances(InstanceIds=[instance_id])


@pytest.mark.parametrize("no_reboot", [True, False])
def test_create_image_then_launch_it(ec2: Any, image: tuple[str, str], no_reboot: bool) -> None:
    instance_id = _run(
        ec2, image[0], BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1}}]
    )
    _attached(ec2, instance_id, {ROOT, "/dev/sdf"})
    name = f"mine-{instance_id}-{no_reboot}"
    made = ec2.create_image(InstanceId=instance_id, Name=name, NoReboot=no_reboot, Description="made")[
        "ImageId"
    ]
    assert _refused(ec2.create_image, InstanceId=instance_id, Name=name) == "InvalidAMIName.Duplicate"
    if not no_reboot:  # the clean way: stopped, snapshotted, started again
        wait_state(ec2, [instance_id], "stopped", SETTLE)
    found = wait_for(
        f"{made} available",
        lambda: (i := ec2.describe_images(ImageIds=[made])["Images"][0])["State"] == "available" and i,
        SETTLE,
        0.3,
    )
    assert (found["RootDeviceType"], found["RootDeviceName"], found["Description"]) == ("ebs", ROOT, "made")
    devices = {m["DeviceName"]: m["Ebs"] for m in found["BlockDeviceMappings"]}
    assert devices.keys() == {ROOT, "/dev/sdf"} and devices[ROOT]["VolumeSize"] == 1
    for ebs in devices.values():
        assert _completed(ec2, ebs["SnapshotId"])["Description"].startswith(
            f"Created by CreateImage({instance_id})"
        )
    wait_state(ec2, [instance_id], "running", SETTLE)  # NoReboot never stopped it; the other started again
    copy = _run(ec2, made)
    assert _attached(ec2, copy, {ROOT, "/dev/sdf"})[ROOT]["DeleteOnTermination"] is True
    ec2.terminate_instances(InstanceIds=[instance_id, copy])


def test_another_account_cannot_stop_start_or_image_an_instance(
    cloud: Cloud, ec2: Any, image: tuple[str, str]
) -> None:
    instance_id = _run(ec2, image[0])
    other = cloud.client("ec2", cloud.new_account("outsider"))
    for call, kwargs in (
        (other.stop_instances, {"InstanceIds": [instance_id]}),
        (other.start_instances, {"InstanceIds": [instance_id]}),
        (other.create_image, {"InstanceId": instance_id, "Name": "theirs"}),
    ):
        assert _refused(call, **kwargs) == "InvalidInstanceID.NotFound"
    assert _refused(other.run_instances, ImageId=image[0], MinCount=1, MaxCount=1) == "InvalidAMIID.NotFound"
    ec2.terminate_instances(InstanceIds=[instance_id])


def test_stop_start_and_create_image_with_the_cli(
    cloud: Cloud, account: Keys, image: tuple[str, str]
) -> None:
    def cli(*args: str) -> Any:
        return aws(cloud, "ec2", *args, keys=account)

    made = cli("run-instances", "--image-id", image[0], "--instance-type", "m1.small",
               "--instance-initiated-shutdown-behavior", "stop")  # fmt: skip
    instance_id = made["Instances"][0]["InstanceId"]
    ec2 = cloud.client("ec2", account)
    wait_state(ec2, [instance_id], "running", SETTLE)
    attribute = cli(
        "describe-instance-attribute", "--instance-id", instance_id, "--attribute", "rootDeviceName"
    )
    assert attribute["RootDeviceName"] == {"Value": ROOT}
    cli("stop-instances", "--instance-ids", instance_id)
    wait_state(ec2, [instance_id], "stopped", SETTLE)
    cli("modify-instance-attribute", "--instance-id", instance_id, "--instance-type", "Value=m1.medium")
    cli("start-instances", "--instance-ids", instance_id)
    assert wait_state(ec2, [instance_id], "running", SETTLE)[0]["InstanceType"] == "m1.medium"
    image_id = cli(
        "create-image", "--instance-id", instance_id, "--name", f"cli-{instance_id}", "--no-reboot"
    )["ImageId"]
    wait_for(
        f"{image_id} available",
        lambda: cli("describe-images", "--image-ids", image_id)["Images"][0]["State"] == "available",
        SETTLE,
        0.5,
    )
    tasks = cli("describe-import-snapshot-tasks")["ImportSnapshotTasks"]
    assert tasks and all(t["SnapshotTaskDetail"]["Status"] == "completed" for t in tasks)
    cli("terminate-instances", "--instance-ids", instance_id)


def test_a_stopped_instance_needs_a_root_volume_to_start(ec2: Any, image: tuple[str, str]) -> None:
    instance_id = _run(ec2, image[0])
    root = _attached(ec2, instance_id, {ROOT})[ROOT]["VolumeId"]
    ec2.stop_instances(InstanceIds=[instance_id])
    wait_state(ec2, [instance_id], "stopped", SETTLE)
    ec2.detach_volume(VolumeId=root)  # a stopped instance's root may be detached, as on AWS
    _available(ec2, root)
    assert _refused(ec2.start_instances, InstanceIds=[instance_id]) == "IncorrectInstanceState"
    ec2.attach_volume(VolumeId=root, InstanceId=instance_id, Device=ROOT)
    ec2.start_instances(InstanceIds=[instance_id])
    assert _refused(ec2.detach_volume, VolumeId=root) == "IncorrectState"  # pending: its node awaits it
    wait_state(ec2, [instance_id], "running", SETTLE)
    assert _attached(ec2, instance_id, {ROOT})[ROOT]["VolumeId"] == root
    ec2.terminate_instances(InstanceIds=[instance_id])
