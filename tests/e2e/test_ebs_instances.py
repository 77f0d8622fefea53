"""Issue 14 with real VMs: EBS-backed instances. The tiny image is made EBS-backed with `mallee image
to-ebs` (ImportSnapshot of its root file system); an instance of it boots from its root volume over
NBD, keeps a file written on its root across StopInstances/StartInstances, and CreateImage of it (the
clean way: stop, snapshot, start) gives an image whose instances find the file too. A guest that
powers itself off is stopped (its shutdown behaviour), and termination deletes the root volumes."""

from __future__ import annotations

import time
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

World = tuple[VpcCloud, Any, str, Path]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with real_vpc_cloud(tmp_path_factory.mktemp("ebscloud"), "e") as net:
        workdir = tmp_path_factory.mktemp("ebswork")
        ec2 = net.cloud.client("ec2")
        group = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[SSH_ANYWHERE])
        ami = publish_tiny(net.cloud, workdir)
        converted = net.cloud.run("mallee", "image", "to-ebs", ami, "--name", "tiny-ebs")
        assert converted.returncode == 0, converted.stderr
        ebs_ami = next(word for word in converted.stdout.split() if word.startswith("ami-"))
        yield net, ec2, ebs_ami, key_pair(ec2, workdir / "k.pem")


def _instance(ec2: Any, instance_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][
        0
    ]
    return found


def _state(ec2: Any, instance_id: str) -> str:
    return str(_instance(ec2, instance_id)["State"]["Name"])


def _ssh_ok(net: VpcCloud, key: Path, ip: str, command: str) -> str:
    """The command's output once SSH answers (a guest that just booted may not listen yet)."""

    def attempt() -> tuple[str] | None:
        done = net.ssh(key, ip, command)
        return (done.stdout,) if done.returncode == 0 else None

    found: tuple[str] = wait_for(f"ssh {ip} {command!r}", attempt, 60, every=1)
    return found[0]


def _root_volume(ec2: Any, instance_id: str) -> str:
    instance = _instance(ec2, instance_id)
    mappings = {m["DeviceName"]: m["Ebs"] for m in instance["BlockDeviceMappings"]}
    return str(mappings[instance["RootDeviceName"]]["VolumeId"])


def test_an_ebs_root_keeps_its_files_across_stop_start_and_into_a_new_image(world: World) -> None:
    net, ec2, ami, key = world
    image = ec2.describe_images(ImageIds=[ami])["Images"][0]
    assert image["RootDeviceType"] == "ebs"
    run = ec2.run_instances(ImageId=ami, InstanceType="m1.small", KeyName="k", MinCount=1, MaxCount=1)
    instance_id = run["Instances"][0]["InstanceId"]
    first = booted(ec2, [instance_id])[0]
    ip = first["PublicIpAddress"]
    root = _root_volume(ec2, instance_id)
    # The guest's root disk is the volume (its serial is the volume id without the dash).
    assert _ssh_ok(net, key, ip, "cat /sys/block/vda/serial").strip() == root.replace("-", "", 1)
    _ssh_ok(net, key, ip, "echo kept-across-stops > /root/kept && sync")

    stopped_at = time.monotonic()
    ec2.stop_instances(InstanceIds=[instance_id])
    wait_for("stopped", lambda: _state(ec2, instance_id) == "stopped", 90, every=0.5)
    stop_seconds = time.monotonic() - stopped_at
    assert ec2.describe_volumes(VolumeIds=[root])["Volumes"][0]["State"] == "in-use"
    started_at = time.monotonic()
    ec2.start_instances(InstanceIds=[instance_id])
    again = booted(ec2, [instance_id])[0]
    assert again["PrivateIpAddress"] == first["PrivateIpAddress"]
    assert _ssh_ok(net, key, again["PublicIpAddress"], "cat /root/kept").strip() == "kept-across-stops"
    print(f"stop {stop_seconds:.1f} s; start to SSH {time.monotonic() - started_at:.1f} s")

    # CreateImage the clean way: the instance is stopped, snapshotted and started again.
    made = ec2.create_image(InstanceId=instance_id, Name="from-e2e")["ImageId"]
    wait_for(
        "image available",
        lambda: ec2.describe_images(ImageIds=[made])["Images"][0]["State"] == "available",
        180,
        every=1,
    )
    wait_for("running again", lambda: _state(ec2, instance_id) == "running", 120, every=1)
    copy_id = ec2.run_instances(ImageId=made, InstanceType="m1.small", KeyName="k", MinCount=1, MaxCount=1)[
        "Instances"
    ][0]["InstanceId"]
    copy = booted(ec2, [copy_id])[0]
    assert _ssh_ok(net, key, copy["PublicIpAddress"], "cat /root/kept").strip() == "kept-across-stops"
    copy_root = _root_volume(ec2, copy_id)
    assert copy_root != root

    # A guest that powers itself off is stopped (the default shutdown behaviour), not terminated.
    _ssh_ok(net, key, copy["PublicIpAddress"], "poweroff")
    wait_for("stopped by its guest", lambda: _state(ec2, copy_id) == "stopped", 90, every=0.5)
    reason = _instance(ec2, copy_id)["StateReason"]["Code"]
    assert reason == "Client.InstanceInitiatedShutdown"

    ec2.terminate_instances(InstanceIds=[instance_id, copy_id])
    for gone in (instance_id, copy_id):
        terminated(ec2, gone)

    def volumes_left() -> list[str]:
        found = ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [root, copy_root]}])["Volumes"]
        return [v["VolumeId"] for v in found]

    wait_for("root volumes deleted", lambda: volumes_left() == [], 60, every=0.5)
