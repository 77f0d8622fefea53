"""Volumes that cannot be lost: the SC, the CLC and the NC are SIGKILLed at named points of a
volume's life — recorded but not made, made but not recorded, exported but not plugged in, plugged
in but not recorded by the node, unplugged, unexported, recorded for deletion — and the supervisor
restarts them. After each step settles: the volume is in the state the step asked for, the SC holds
exactly the volumes the CLC shows (no volume lost, none left behind), it exports exactly the attached
ones to the node, and the node has exactly those plugged in.

The node runs the fake hypervisor with its host kept on disk (its "VMs" and their disks outlive a
killed node controller, as real ones do), the SC the fake block store with its state kept on disk
(as the file driver's volumes and export servers outlive the SC)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from functional.test_ec2_instances import register_tiny_image
from support.cloud import Cloud, retrying
from support.crash_chains import outcomes_by_point

# (service, point, the step it is armed before)
KILL_POINTS = [
    ("sc", "sc.create.recorded", "create"),
    ("sc", "sc.create.made", "create"),
    ("sc", "sc.export.made", "attach"),
    ("clc", "clc.volume.exported", "attach"),
    ("nc", "nc.volume.plugged", "attach"),
    ("nc", "nc.volume.unplugged", "detach"),
    ("clc", "clc.volume.unexported", "detach"),
    ("sc", "sc.delete.recorded", "delete"),
]
SETTLE = 60.0


CHAINS = 2  # clouds at once (support/crash_chains.py), every other point on each


def _crashy(cloud: Cloud) -> tuple[Cloud, str]:
    """`cloud`, with an instance running."""
    ec2 = cloud.client("ec2")
    ami = register_tiny_image(cloud, cloud.admin)
    instance_id = ec2.run_instances(ImageId=ami, InstanceType="t1.micro", MinCount=1, MaxCount=1)[
        "Instances"
    ][0]["InstanceId"]
    _until(
        lambda: retrying(lambda: _instance_state(ec2, instance_id)) == "running",
        f"{instance_id} running",
    )
    return cloud, instance_id


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[None]]]:
    """Each kill point's outcome (`_crash_at`), the points run on CHAINS clouds at once."""
    with outcomes_by_point(
        request, tmp_path_factory, "volcrash", KILL_POINTS, CHAINS, _crashy, _crash_at
    ) as done:
        yield done


def _until(check: Callable[[], bool], what: str, timeout: float = SETTLE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _instance_state(ec2: Any, instance_id: str) -> str:
    return str(
        ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]
    )


def _volumes(ec2: Any) -> dict[str, dict[str, Any]]:
    return {v["VolumeId"]: v for v in retrying(lambda: ec2.describe_volumes()["Volumes"])}


def _settled(ec2: Any, volume_id: str, state: str | None, attachment: str | None) -> Callable[[], bool]:
    def check() -> bool:
        found = _volumes(ec2).get(volume_id)
        if found is None:
            return state is None
        attachments = found["Attachments"]
        return found["State"] == state and (attachments[0]["State"] if attachments else None) == attachment

    return check


def _violations(cloud: Cloud, ec2: Any, node: str) -> list[str]:
    """What the SC and the node hold against what the CLC shows."""
    shown = _volumes(ec2)
    sc_file = cloud.data_dir / "sc" / "fake-blockstore.json"
    sc = json.loads(sc_file.read_text()) if sc_file.exists() else {"volumes": {}, "exports": {}}
    host_file = Path(cloud.env["MALLEE_NODE_DIR"]) / "fake-host.json"
    host = json.loads(host_file.read_text()) if host_file.exists() else {}
    plugged = {
        "vol-" + d["serial"][3:]
        for spec, _state, _boots in host.values()
        for d in spec["disks"]
        if d.get("serial")
    }
    attached = {v for v, found in shown.items() if found["Attachments"]}
    bad = [f"{v} is shown but the SC does not hold it" for v in shown if v not in sc["volumes"]]
    bad += [f"{v} is held by the SC but not shown" for v in sc["volumes"] if v not in shown]
    bad += [f"{v} is exported but not attached" for v in sc["exports"] if v not in attached]
    bad += [f"{v} is attached but not exported to its node" for v in attached if sc["exports"].get(v) != node]
    bad += [f"{v} is plugged in on the node but not attached" for v in plugged if v not in attached]
    bad += [f"{v} is attached but not plugged in" for v in attached if v not in plugged]
    return bad


def _crash_at(crashy: tuple[Cloud, str], kill: tuple[str, str, str]) -> None:
    service, point, step = kill
    cloud, instance_id = crashy
    ec2 = cloud.client("ec2")
    node = f"127.0.0.1:{cloud.port_base + 2}"
    before = cloud.service_pids(service)

    def arm(when: str) -> None:
        if when == step:
            (Path(cloud.env["MALLEE_CRASH_POINTS_DIR"]) / point).touch()

    arm("create")
    volume = retrying(lambda: ec2.create_volume(Size=1, AvailabilityZone="mallee-1a"))["VolumeId"]
    _until(_settled(ec2, volume, "available", None), f"{volume} available")
    arm("attach")
    retrying(lambda: ec2.attach_volume(VolumeId=volume, InstanceId=instance_id, Device="/dev/sdf"))
    _until(_settled(ec2, volume, "in-use", "attached"), f"{volume} attached")
    _until(lambda: not _violations(cloud, ec2, node), f"consistent: {_violations(cloud, ec2, node)}", 20)
    arm("detach")
    retrying(lambda: ec2.detach_volume(VolumeId=volume))
    _until(_settled(ec2, volume, "available", None), f"{volume} detached")
    _until(lambda: not _violations(cloud, ec2, node), f"consistent: {_violations(cloud, ec2, node)}", 20)
    arm("delete")
    retrying(lambda: ec2.delete_volume(VolumeId=volume))
    _until(_settled(ec2, volume, None, None), f"{volume} deleted")
    _until(lambda: not _violations(cloud, ec2, node), f"consistent: {_violations(cloud, ec2, node)}", 20)
    # The crash happened (the point was reached, the process died and came back).
    assert not (Path(cloud.env["MALLEE_CRASH_POINTS_DIR"]) / point).exists()
    cloud.wait_restarted(service, before, lambda: ec2.describe_volumes())


@pytest.mark.parametrize(("service", "point", "step"), KILL_POINTS, ids=[p for _, p, _ in KILL_POINTS])
def test_a_crash_at_any_step_of_a_volume_is_repaired(
    outcomes: dict[str, Future[None]], service: str, point: str, step: str
) -> None:
    outcomes[point].result()  # what `_crash_at` found, on the cloud of this point's chain
