"""bench/volumes.py through the whole cloud: `mallee up` on libvirt with the SC's file driver
(bench/_launch_cloud.py), the tiny image made EBS-backed with `mallee image to-ebs`, all driven with
boto3 as a user would.

- CreateVolume from a snapshot → `available` (seconds), for the tiny root (64 MiB of data in 1 GiB)
  and for a snapshot of `gib` GiB of random bytes imported from Walrus (ImportSnapshot);
- StopInstances → `stopped`, and StartInstances → SSH login, of an EBS-backed tiny instance;
- sequential write and read of an attached volume from inside the guest (dd, 1 MiB blocks, flushed
  and uncached) against the same dd on the host into a file on the SC's file system: the guest runs
  under TCG here, so its figure includes emulation (the export itself: bench/volumes.py part 1).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import ProcessSet, boto_client
from _launch_cloud import INSTANCE_TYPE, Cloud
from _launch_host import free_subnets, libvirt_daemons, ssh_run

from mallee.images.tiny import build_tiny

TIMEOUT = 180.0
# The guest's data volume: the disk other than vda whose serial is a volume's.
DATA_DISK = "$(for d in /sys/block/vd[b-z]; do grep -q '^vol' $d/serial && echo ${d##*/}; done)"
MIB = 1024**2


def _until(what: str, check: Any, timeout: float = TIMEOUT, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(every)
    return found


def _state(ec2: Any, instance_id: str) -> str:
    return str(
        ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]
    )


def _login(ip: str, key: Path) -> None:
    _until(f"SSH to {ip}", lambda: ssh_run(ip, key, "true", timeout=10).returncode == 0, every=0.5)


def _volume_from(ec2: Any, snapshot_id: str) -> float:
    started = time.monotonic()
    volume = ec2.create_volume(SnapshotId=snapshot_id, AvailabilityZone="mallee-1a")["VolumeId"]
    _until(
        f"{volume} available",
        lambda: ec2.describe_volumes(VolumeIds=[volume])["Volumes"][0]["State"] == "available",
    )
    seconds = time.monotonic() - started
    ec2.delete_volume(VolumeId=volume)
    return seconds


def _import_random(cloud: Cloud, ec2: Any, gib: int) -> str:
    """A snapshot of `gib` GiB of random bytes, uploaded to Walrus and imported."""
    assert cloud.target is not None
    s3 = boto_client("s3", cloud.target, read_timeout=300)
    s3.create_bucket(Bucket="bench-disks")
    with tempfile.NamedTemporaryFile(dir=cloud.workdir) as f:
        for _ in range(gib * 1024):
            f.write(os.urandom(MIB))
        f.flush()
        s3.upload_file(f.name, "bench-disks", "random.img")
    container = {"Format": "RAW", "UserBucket": {"S3Bucket": "bench-disks", "S3Key": "random.img"}}
    task = ec2.import_snapshot(DiskContainer=container)["ImportTaskId"]

    def done() -> Any:
        detail = ec2.describe_import_snapshot_tasks(ImportTaskIds=[task])["ImportSnapshotTasks"][0][
            "SnapshotTaskDetail"
        ]
        if detail["Status"] not in ("active", "completed"):
            raise RuntimeError(f"import {task}: {detail}")
        return detail.get("SnapshotId") if detail["Status"] == "completed" else None

    return str(_until(f"{task} completed", done, every=0.5))


def _dd(ip: str, key: Path, command: str) -> float:
    """Seconds of a guest command, less the cost of an empty SSH round trip."""
    empty = min(_timed(lambda: ssh_run(ip, key, "true")) for _ in range(3))
    done: list[subprocess.CompletedProcess[str]] = []
    seconds = _timed(lambda: done.append(ssh_run(ip, key, command, timeout=600)))
    if done[0].returncode != 0:
        raise RuntimeError(f"guest {command!r}: {done[0].stderr.strip()}")
    return seconds - empty


def _timed(action: Any) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def _host_dd(directory: Path, mib: int) -> tuple[float, float]:
    """Host write (flushed) and read (O_DIRECT) seconds of `mib` MiB into a file in `directory`."""
    path = directory / "host-dd.img"
    try:
        write = _timed(lambda: subprocess.run(
            ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", "conv=fsync"], check=True,
            capture_output=True,
        ))  # fmt: skip
        read = _timed(lambda: subprocess.run(
            ["dd", f"if={path}", "of=/dev/null", "bs=1M", "iflag=direct"], check=True, capture_output=True
        ))  # fmt: skip
    finally:
        path.unlink(missing_ok=True)
    return write, read


def cloud_figures(rounds: int, gib: int, guest_mib: int, workdir: Path) -> dict[str, list[float]]:
    workdir.chmod(0o711)  # the qemu user must reach the node's files below it
    tiny = build_tiny(out_dir=workdir / "tiny")
    procs = ProcessSet()
    names = ("root_volume", "random_volume", "stop", "start_ssh")
    names += ("guest_write", "guest_read", "host_write", "host_read")
    found: dict[str, list[float]] = {name: [] for name in names}
    with libvirt_daemons():
        cloud = Cloud(procs, workdir, free_subnets(1)[0])
        try:
            cloud.start()
            ec2 = cloud.ec2
            ebs_ami = cloud.image_command(
                "to-ebs", cloud.publish(tiny.directory, "tiny"), "--name", "tiny-ebs"
            )
            root_snapshot = ec2.describe_images(ImageIds=[ebs_ami])["Images"][0]["BlockDeviceMappings"][0][
                "Ebs"
            ]["SnapshotId"]
            random_snapshot = _import_random(cloud, ec2, gib)
            for _ in range(rounds):
                found["root_volume"].append(_volume_from(ec2, root_snapshot))
                found["random_volume"].append(_volume_from(ec2, random_snapshot))
            key = cloud.create_key("bench")
            data = {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": max(1, -(-guest_mib // 1024))}}
            instance_id = ec2.run_instances(
                ImageId=ebs_ami, InstanceType=INSTANCE_TYPE, KeyName="bench", MinCount=1, MaxCount=1,
                BlockDeviceMappings=[data],
            )["Instances"][0]["InstanceId"]  # fmt: skip
            cloud.launched.add(instance_id)
            ip = cloud.wait_running([instance_id], TIMEOUT)[instance_id]
            _login(ip, key)
            for _ in range(rounds):
                disk = DATA_DISK
                found["guest_write"].append(
                    _dd(
                        ip,
                        key,
                        f"dd if=/dev/zero of=/dev/{disk} bs=1M count={guest_mib} conv=fsync 2>/dev/null",
                    )
                )
                found["guest_read"].append(
                    _dd(ip, key, f"echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/{disk} of=/dev/null bs=1M "
                                 f"count={guest_mib} 2>/dev/null")
                )  # fmt: skip
                write, read = _host_dd(workdir / "sc", guest_mib)
                found["host_write"].append(write)
                found["host_read"].append(read)
            for _ in range(rounds):
                found["stop"].append(_timed(lambda: (
                    ec2.stop_instances(InstanceIds=[instance_id]),
                    _until("stopped", lambda: _state(ec2, instance_id) == "stopped"),
                )))  # fmt: skip
                started = time.monotonic()
                ec2.start_instances(InstanceIds=[instance_id])
                ip = cloud.wait_running([instance_id], TIMEOUT)[instance_id]
                _login(ip, key)
                found["start_ssh"].append(time.monotonic() - started)
        finally:
            with contextlib.suppress(Exception):
                cloud.stop()
    return found


def report(found: dict[str, list[float]], gib: int, guest_mib: int) -> None:
    def median(name: str) -> float:
        return statistics.median(found[name])

    root, full = median("root_volume"), median("random_volume")
    print(f"   CreateVolume from a snapshot -> available: the tiny root (64 MiB in 1 GiB) {root:.1f} s, "
          f"{gib} GiB of random bytes {full:.1f} s")  # fmt: skip
    stop, start = median("stop"), median("start_ssh")
    print(f"   StopInstances -> stopped {stop:.1f} s; StartInstances -> SSH login {start:.1f} s")
    for kind in ("write", "read"):
        guest = guest_mib / median(f"guest_{kind}")
        host = guest_mib / median(f"host_{kind}")
        print(f"   guest {kind} {guest:,.0f} MB/s vs host {host:,.0f} MB/s: {guest / host:.2f}x "
              f"({guest_mib} MiB, dd 1 MiB blocks; the guest under TCG)")  # fmt: skip
