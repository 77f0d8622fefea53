"""EBS-backed instances and imports that cannot be lost: the CLC, the CC, the SC and the NC are
SIGKILLed at named points of StopInstances (recorded but not asked, the VM destroyed but the node not
told), StartInstances (recorded but not asked, placed by the cluster but not sent, the root exported
but not plugged in, the launch saved or the VM spawned but not recorded by the node) and
ImportSnapshot (recorded, downloaded, cut into chunks, its manifest written but not recorded
completed), and the supervisor restarts them. After each step settles:

- stopped: the instance is `stopped`, its root volume still `in-use` and attached to it, held by the
  SC but exported to no node, and the node runs no VM of it and keeps no launch of it (which a later
  restart of the node would start again);
- started: the instance is `running` with the same private address, its root attached, exported to
  the node and plugged into the one VM the node runs for it;
- imported: the task is `completed` and so is its snapshot, whose every chunk is there (a volume made
  from it becomes `available`: the SC checks each chunk against the manifest) — or, had the crash made
  the import impossible, the task is `deleted` with a reason and no snapshot is shown completed.

The node runs the fake hypervisor with its host kept on disk and the SC the fake block store with its
state on disk, as in test_volume_crashes.py; the snapshots' chunks are real, in Walrus."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from functional.test_ec2_ebs_instances import ROOT, _run, ebs_image
from support.cloud import Cloud, retrying
from support.crash_chains import outcomes_by_point

# (service, point, the step it is armed before)
KILL_POINTS = [
    ("clc", "clc.stop.recorded", "stop"),
    ("nc", "nc.stop.destroyed", "stop"),
    ("clc", "clc.start.recorded", "start"),
    ("cc", "cc.run.placed", "start"),
    ("cc", "cc.run.sent", "start"),
    ("sc", "sc.export.made", "start"),
    ("clc", "clc.volume.exported", "start"),
    ("nc", "nc.launch.saved", "start"),
    ("nc", "nc.launch.spawned", "start"),
    ("sc", "sc.import.recorded", "import"),
    ("sc", "sc.import.downloaded", "import"),
    ("sc", "sc.snapshot.chunks_stored", "import"),
    ("sc", "sc.snapshot.manifest_written", "import"),
]
SETTLE = 60.0
CHUNK = 4 << 20  # the SC's chunk size
DISK = os.urandom(2 * CHUNK + 12345)  # three chunks, none of them zeros, the last one short


CHAINS = 2  # clouds at once (support/crash_chains.py), every other point on each


@dataclass
class Crashy:
    cloud: Cloud
    ec2: Any  # the administrator's client
    instance_id: str
    private_ip: str
    root: str  # its root volume
    bucket: str  # where the disk image to import is


def _crashy(cloud: Cloud) -> Crashy:
    """An EBS-backed instance running on `cloud`, and a bucket with a disk image to import."""
    ec2 = cloud.client("ec2")
    ami, _snapshot = ebs_image(cloud, cloud.admin)
    instance_id = _run(ec2, ami, InstanceType="t1.micro")
    root = _until(
        lambda: (r := _root(ec2, instance_id)).get("Status") == "attached" and r,
        f"{instance_id}'s root attached",
    )
    bucket = f"disk-{secrets.token_hex(4)}"
    s3 = cloud.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="disk.img", Body=DISK)
    return Crashy(
        cloud, ec2, instance_id, _instance(ec2, instance_id)["PrivateIpAddress"], root["VolumeId"], bucket
    )


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[None]]]:
    """Each kill point's outcome (`_crash_at`), the points run on CHAINS clouds at once."""
    with outcomes_by_point(
        request, tmp_path_factory, "ebscrash", KILL_POINTS, CHAINS, _crashy, _crash_at
    ) as done:
        yield done


def _until(check: Callable[[], Any], what: str | Callable[[], str], timeout: float = SETTLE) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out waiting for {what if isinstance(what, str) else what()}")
        time.sleep(0.1)
    return found


def _instance(ec2: Any, instance_id: str) -> dict[str, Any]:
    found: dict[str, Any] = retrying(
        lambda: ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    )
    return found


def _root(ec2: Any, instance_id: str) -> dict[str, Any]:
    """The instance's root mapping (its VolumeId and Status), {} while it has none."""
    mappings = {m["DeviceName"]: m["Ebs"] for m in _instance(ec2, instance_id).get("BlockDeviceMappings", [])}
    return dict(mappings.get(ROOT, {}))


def _volume(ec2: Any, volume_id: str) -> dict[str, Any]:
    found: dict[str, Any] = retrying(lambda: ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0])
    return found


def _sc(cloud: Cloud) -> dict[str, Any]:
    """The fake block store's state: {"volumes": {id: GiB}, "exports": {id: node}}."""
    found = cloud.data_dir / "sc" / "fake-blockstore.json"
    state: dict[str, Any] = json.loads(found.read_text()) if found.exists() else {}
    return {"volumes": state.get("volumes", {}), "exports": state.get("exports", {})}


def _vms(cloud: Cloud) -> dict[str, set[str]]:
    """The node's VMs (fake hypervisor host), each with the volumes plugged into it."""
    host_file = Path(cloud.env["MALLEE_NODE_DIR"]) / "fake-host.json"
    host = json.loads(host_file.read_text()) if host_file.exists() else {}
    return {
        instance_id: {"vol-" + d["serial"][3:] for d in spec["disks"] if d.get("serial")}
        for instance_id, (spec, _state, _boots) in host.items()
    }


def _kept_launch(cloud: Cloud, instance_id: str) -> bool:
    return (Path(cloud.env["MALLEE_NODE_DIR"]) / "instances" / instance_id).exists()


def _stopped_problems(c: Crashy) -> list[str]:
    ec2 = c.ec2
    instance = _instance(ec2, c.instance_id)
    root, volume, sc = _root(ec2, c.instance_id), _volume(ec2, c.root), _sc(c.cloud)
    attachments = [(a["InstanceId"], a["State"]) for a in volume["Attachments"]]
    bad = [] if instance["State"]["Name"] == "stopped" else [f"the instance is {instance['State']['Name']}"]
    if (root.get("VolumeId"), root.get("Status")) != (c.root, "attached"):
        bad.append(f"its root mapping is {root}")
    if (volume["State"], attachments) != ("in-use", [(c.instance_id, "attached")]):
        bad.append(f"its root volume is {volume['State']}, attachments {attachments}")
    if c.root not in sc["volumes"]:
        bad.append("the SC does not hold the root volume")
    if c.root in sc["exports"]:
        bad.append(f"the root volume is still exported to {sc['exports'][c.root]}")
    if c.instance_id in _vms(c.cloud):
        bad.append("the node still has a VM of it")
    if _kept_launch(c.cloud, c.instance_id):
        bad.append("the node still keeps its launch")
    return bad


def _running_problems(c: Crashy, node: str) -> list[str]:
    ec2 = c.ec2
    instance = _instance(ec2, c.instance_id)
    root, volume, sc = _root(ec2, c.instance_id), _volume(ec2, c.root), _sc(c.cloud)
    attachments = [(a["InstanceId"], a["State"]) for a in volume["Attachments"]]
    bad = [] if instance["State"]["Name"] == "running" else [f"the instance is {instance['State']['Name']}"]
    if instance.get("PrivateIpAddress") != c.private_ip:
        bad.append(f"its private address is {instance.get('PrivateIpAddress')}, not {c.private_ip}")
    if (root.get("VolumeId"), root.get("Status")) != (c.root, "attached"):
        bad.append(f"its root mapping is {root}")
    if (volume["State"], attachments) != ("in-use", [(c.instance_id, "attached")]):
        bad.append(f"its root volume is {volume['State']}, attachments {attachments}")
    if sc["exports"].get(c.root) != node:
        bad.append(f"the root volume is exported to {sc['exports'].get(c.root)}, not {node}")
    vms = _vms(c.cloud)
    if c.instance_id not in vms:
        bad.append("the node has no VM of it")
    elif c.root not in vms[c.instance_id]:
        bad.append(f"its VM has {vms[c.instance_id]} plugged in, not its root")
    if any(c.root in plugged for other, plugged in vms.items() if other != c.instance_id):
        bad.append("another VM has its root plugged in")
    return bad


def _stop_then_start(c: Crashy, arm: Callable[[str], None]) -> None:
    ec2 = c.ec2
    node = f"127.0.0.1:{c.cloud.port_base + 2}"
    arm("stop")
    retrying(lambda: ec2.stop_instances(InstanceIds=[c.instance_id]))
    _until(lambda: not _stopped_problems(c), lambda: f"stopped: {_stopped_problems(c)}")
    arm("start")
    retrying(lambda: ec2.start_instances(InstanceIds=[c.instance_id]))
    _until(lambda: not _running_problems(c, node), lambda: f"running: {_running_problems(c, node)}")


def _import(c: Crashy, arm: Callable[[str], None]) -> None:
    ec2 = c.ec2
    arm("import")
    disk = {"Format": "RAW", "UserBucket": {"S3Bucket": c.bucket, "S3Key": "disk.img"}}
    task_id = retrying(lambda: ec2.import_snapshot(Description="crashed", DiskContainer=disk))["ImportTaskId"]

    def task() -> dict[str, Any]:
        found: dict[str, Any] = retrying(
            lambda: ec2.describe_import_snapshot_tasks(ImportTaskIds=[task_id])["ImportSnapshotTasks"][0][
                "SnapshotTaskDetail"
            ]
        )
        return found

    detail = _until(lambda: (d := task())["Status"] in ("completed", "deleted") and d, f"{task_id} done")
    if detail["Status"] == "deleted":  # the crash made the import impossible: said why, shown nowhere
        assert detail["StatusMessage"], detail
        snapshots = retrying(lambda: ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])
        assert not [s for s in snapshots if s["Description"] == "crashed" and s["State"] == "completed"]
        return
    snapshot_id = detail["SnapshotId"]
    snapshot = retrying(lambda: ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0])
    assert (snapshot["State"], snapshot["VolumeSize"], snapshot["Progress"]) == ("completed", 1, "100%")
    # Every chunk is there: the SC restores a volume only from a whole, unaltered snapshot.
    volume_id = retrying(
        lambda: ec2.create_volume(SnapshotId=snapshot_id, AvailabilityZone="mallee-1a", Size=1)
    )["VolumeId"]
    state = _until(
        lambda: (v := _volume(ec2, volume_id)["State"]) in ("available", "error") and v, f"{volume_id} made"
    )
    assert state == "available", f"a volume of the completed {snapshot_id} is {state}"
    retrying(lambda: ec2.delete_volume(VolumeId=volume_id))
    retrying(lambda: ec2.delete_snapshot(SnapshotId=snapshot_id))


def _crash_at(crashy: Crashy, kill: tuple[str, str, str]) -> None:
    service, point, step = kill
    cloud = crashy.cloud
    armed = Path(cloud.env["MALLEE_CRASH_POINTS_DIR"]) / point
    before = cloud.service_pids(service)

    def arm(when: str) -> None:
        if when == step:
            armed.touch()

    try:
        if step == "import":
            _import(crashy, arm)
        else:
            _stop_then_start(crashy, arm)
        # The crash happened (the point was reached, the process died and came back).
        assert not armed.exists(), f"{point} was never reached"
        cloud.wait_restarted(service, before, lambda: crashy.ec2.describe_volumes())
    finally:
        armed.unlink(missing_ok=True)  # never left armed for the next step


@pytest.mark.parametrize(("service", "point", "step"), KILL_POINTS, ids=[p for _, p, _ in KILL_POINTS])
def test_a_crash_at_any_step_of_an_ebs_instance_or_import_is_repaired(
    outcomes: dict[str, Future[None]], service: str, point: str, step: str
) -> None:
    outcomes[point].result()  # what `_crash_at` found, on the cloud of this point's chain
