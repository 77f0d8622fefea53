"""Issue 14 with real VMs: EBS volumes on the Storage Controller's default driver (sparse files
exported over NBD by qemu-storage-daemon), hot-plugged into tiny guests through libvirt.

- a volume attached to an instance is a disk the guest writes to; after `sync` and a detach, the same
  volume attached to a second instance shows the same bytes;
- a snapshot taken while the guest has the volume, stored in Walrus, makes a new volume with the
  same bytes;
- terminating an instance deletes the volumes attached with DeleteOnTermination, and only those.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.cloud import wait_for
from support.vpc_cloud import (
    SSH_ANYWHERE,
    VpcCloud,
    booted,
    key_pair,
    publish_tiny,
    real_vpc_cloud,
    terminated,
)

ZONE = "mallee-1a"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VpcCloud, Any, str, Path]]:
    with real_vpc_cloud(tmp_path_factory.mktemp("volcloud"), "s") as net:
        workdir = tmp_path_factory.mktemp("volwork")
        ec2 = net.cloud.client("ec2")
        group = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[SSH_ANYWHERE])
        yield net, ec2, publish_tiny(net.cloud, workdir), key_pair(ec2, workdir / "k.pem")


def _volume_state(ec2: Any, volume_id: str) -> str | None:
    found = ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [volume_id]}])["Volumes"]
    return str(found[0]["State"]) if found else None


def _attachment_state(ec2: Any, volume_id: str) -> str | None:
    attachments = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]
    return str(attachments[0]["State"]) if attachments else None


def _disk_of(net: VpcCloud, key: Path, ip: str, volume_id: str) -> str:
    """The guest's name for the volume's disk, found by its serial (the volume id without its dash)."""
    serial = volume_id.replace("-", "", 1)
    script = (
        f'for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = {serial} ] && echo ${{d##*/}}; done'
    )
    return str(wait_for(f"{volume_id} in the guest", lambda: net.ssh(key, ip, script).stdout.strip(), 20))


def test_a_volume_keeps_its_bytes_from_one_instance_to_the_next(
    world: tuple[VpcCloud, Any, str, Path],
) -> None:
    net, ec2, ami, key = world
    volume = ec2.create_volume(Size=1, AvailabilityZone=ZONE, VolumeType="gp3")["VolumeId"]
    wait_for("volume available", lambda: _volume_state(ec2, volume) == "available", 20, every=0.2)
    ids = [
        i["InstanceId"]
        for i in ec2.run_instances(ImageId=ami, InstanceType="m1.small", KeyName="k", MinCount=2, MaxCount=2)[
            "Instances"
        ]
    ]
    first, second = booted(ec2, ids)

    ec2.attach_volume(VolumeId=volume, InstanceId=first["InstanceId"], Device="/dev/sdf")
    wait_for("attached", lambda: _attachment_state(ec2, volume) == "attached", 20, every=0.2)
    disk = _disk_of(net, key, first["PublicIpAddress"], volume)
    size = net.ssh(key, first["PublicIpAddress"], f"cat /sys/block/{disk}/size").stdout.strip()
    assert int(size) * 512 == 1024**3  # the guest sees a 1 GiB disk
    write = f"echo mallee-volume-bytes | dd of=/dev/{disk} bs=512 conv=sync 2>/dev/null && sync"
    written = net.ssh(key, first["PublicIpAddress"], write)
    assert written.returncode == 0, written.stderr
    # A snapshot while the guest has the volume: taken from a point-in-time copy, stored in Walrus.
    snapshot = ec2.create_snapshot(VolumeId=volume, Description="e2e")["SnapshotId"]

    def snapshot_state() -> str:
        return str(ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"][0]["State"])

    wait_for("snapshot completed", lambda: snapshot_state() == "completed", 60, every=0.5)

    ec2.detach_volume(VolumeId=volume)
    wait_for("available again", lambda: _volume_state(ec2, volume) == "available", 30, every=0.2)
    gone = net.ssh(key, first["PublicIpAddress"], "ls /sys/block").stdout.split()
    assert disk not in gone  # the guest let go of it

    ec2.attach_volume(VolumeId=volume, InstanceId=second["InstanceId"], Device="/dev/sdg")
    disk = _disk_of(net, key, second["PublicIpAddress"], volume)
    read = net.ssh(
        key, second["PublicIpAddress"], f"dd if=/dev/{disk} bs=512 count=1 2>/dev/null | head -n 1"
    )
    assert read.stdout.strip() == "mallee-volume-bytes"
    instance = ec2.describe_instances(InstanceIds=[second["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert [(m["DeviceName"], m["Ebs"]["VolumeId"]) for m in instance["BlockDeviceMappings"]] == [
        ("/dev/sdg", volume)
    ]

    # A new volume from the snapshot has the same bytes.
    restored = ec2.create_volume(SnapshotId=snapshot, AvailabilityZone=ZONE)["VolumeId"]
    wait_for("restored volume", lambda: _volume_state(ec2, restored) == "available", 60, every=0.5)
    ec2.attach_volume(VolumeId=restored, InstanceId=second["InstanceId"], Device="/dev/sdi")
    disk = _disk_of(net, key, second["PublicIpAddress"], restored)
    read = net.ssh(
        key, second["PublicIpAddress"], f"dd if=/dev/{disk} bs=512 count=1 2>/dev/null | head -n 1"
    )
    assert read.stdout.strip() == "mallee-volume-bytes"
    ec2.detach_volume(VolumeId=restored)
    wait_for("restored detached", lambda: _volume_state(ec2, restored) == "available", 30, every=0.2)
    ec2.delete_volume(VolumeId=restored)
    ec2.delete_snapshot(SnapshotId=snapshot)

    # Terminate: the volume attached with DeleteOnTermination goes with the instance, the other stays.
    doomed = ec2.create_volume(Size=1, AvailabilityZone=ZONE)["VolumeId"]
    wait_for("second volume", lambda: _volume_state(ec2, doomed) == "available", 20, every=0.2)
    ec2.attach_volume(VolumeId=doomed, InstanceId=second["InstanceId"], Device="/dev/sdh")
    wait_for("attached", lambda: _attachment_state(ec2, doomed) == "attached", 20, every=0.2)
    ec2.modify_instance_attribute(
        InstanceId=second["InstanceId"],
        BlockDeviceMappings=[{"DeviceName": "/dev/sdh", "Ebs": {"DeleteOnTermination": True}}],
    )
    ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in (first, second)])
    for instance_id in ids:
        terminated(ec2, instance_id)
    wait_for("kept volume available", lambda: _volume_state(ec2, volume) == "available", 30, every=0.5)
    wait_for("the other deleted", lambda: _volume_state(ec2, doomed) is None, 30, every=0.5)
    ec2.delete_volume(VolumeId=volume)
    wait_for("deleted", lambda: _volume_state(ec2, volume) is None, 30, every=0.5)
    assert not list((Path(net.cloud.env["MALLEE_SC_DIR"]) / "volumes").glob("vol-*"))  # the space is returned
