"""Node maintenance, evacuation and deregistration (`mallee node maintenance | evacuate |
deregister | list`) on a cloud with three nodes: its own and simulated ones (`mallee serve nc-sim`).

A node in maintenance takes no new instances (a zone whose only room is on such nodes answers
InsufficientInstanceCapacity) and keeps running those it has; an evacuation restarts its EBS-backed
instances on another node with their volumes, names the instance-store ones it cannot move and
leaves them running, and finishes after the CLC is killed in the middle of it; a node with
instances is not deregistered, an empty one is, and leaves the zone's capacity; the cluster keeps
all this across its own restart.

The module runs a cloud of its own: the tests put its own node in maintenance, kill its CLC at a
crash point and its CC, which the session's shared cloud must not see."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functional.test_ec2_capacity import capacity
from functional.test_ec2_ebs_instances import ROOT, ebs_image
from functional.test_ec2_instances import register_tiny_image, wait_state
from mallee.cli.client import ApiError
from support.cloud import Cloud, Keys, retrying, start_cloud, stop_cloud, stop_process, wait_for

SETTLE = 30.0
# Each simulated node fits four t1.micro (1 vCPU, 256 MiB, 5 GiB): 2 cores × 4.0, 1024 MiB, 20 GiB.
SIM = ["--cores", "2", "--memory-mib", "1024", "--disk-gib", "20", "--boot-delay", "0.05"]


class Nodes:
    """The cloud's nodes by role: its own (`own`), two simulated ones for instances to move to or
    away from (`first`, `second`) and one that is deregistered and registered again (`spare`)."""

    def __init__(self, cloud: Cloud, sims: list[str]) -> None:
        self.cloud = cloud
        self.own = f"127.0.0.1:{cloud.port_base + 2}"
        self.first, self.second, self.spare = sims
        self.all = [self.own, *sims]

    def call(self, action: str, **params: str) -> ET.Element:
        return self.cloud.admin_api().call("ec2", action, params)

    def refusal(self, action: str, **params: str) -> ApiError:
        with pytest.raises(ApiError) as err:
            self.call(action, **params)
        return err.value

    def listed(self) -> dict[str, dict[str, Any]]:
        """DescribeNodes: node name -> its state and instances."""
        return {
            item.findtext("nodeName", ""): {
                "state": item.findtext("state", ""),
                "instances": [i.text for i in item.iterfind("./instanceIdSet/item")],
            }
            for item in self.call("DescribeNodes").iterfind("./nodeSet/item")
        }

    def only_in_service(self, *names: str) -> None:
        """Every node in maintenance but `names`."""
        for name in self.all:
            if name in self.listed():
                self.call("ModifyNodeMaintenance", Node=name, Maintenance=str(name not in names).lower())

    def where(self, instance_id: str) -> str:
        """The node that runs the instance, "" while none does."""
        return next((n for n, v in self.listed().items() if instance_id in v["instances"]), "")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    base = tmp_path_factory.mktemp("nodes")
    (base / "crash").mkdir()
    cloud = start_cloud(base, {"MALLEE_CRASH_POINTS_DIR": str(base / "crash")})
    fleet = None
    try:
        log_path = base / "nc-sim.log"
        first = "127.0.77.1"
        command = [sys.executable, "-m", "mallee.supervisor", "serve", "nc-sim", "--count", "3"]
        with open(log_path, "wb") as log:
            fleet = subprocess.Popen(
                [*command, "--first-address", first, *SIM],
                env=cloud.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        port = wait_for(
            "the simulated nodes", lambda: re.search(r"serving .*, port (\d+)", log_path.read_text()), 30, 0.2
        )[1]
        sims = [f"127.0.77.{n}:{port}" for n in (1, 2, 3)]
        api = cloud.admin_api()
        for name in sims:
            host, _, p = name.rpartition(":")
            api.call("ec2", "RegisterNode", {"Host": host, "Port": p})
        found = Nodes(cloud, sims)
        wait_for("every node enabled", lambda: set(_states(found).values()) == {"ENABLED"}, 20, 0.2)
        yield found
    finally:
        if fleet is not None:
            stop_process(fleet)
        stop_cloud(cloud)


@pytest.fixture(scope="module")
def admin(nodes: Nodes) -> Keys:
    return nodes.cloud.admin


@pytest.fixture(scope="module")
def images(nodes: Nodes, admin: Keys) -> tuple[str, str]:
    """(an instance-store image, an EBS-backed image) of the administrator's account."""
    return register_tiny_image(nodes.cloud, admin), ebs_image(nodes.cloud, admin)[0]


@pytest.fixture
def ec2(nodes: Nodes) -> Iterator[Any]:
    client = nodes.cloud.client("ec2")
    yield client
    nodes.only_in_service(*nodes.all)  # whatever a test left, the next finds every node in service
    live = [
        i["InstanceId"]
        for r in client.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] not in ("terminated", "shutting-down")
    ]
    if live:  # and their room back before the next test places anything
        client.terminate_instances(InstanceIds=live)
        wait_state(client, live, "terminated", SETTLE)


def _states(nodes: Nodes) -> dict[str, str]:
    return {name: v["state"] for name, v in nodes.listed().items()}


def _run(ec2: Any, ami: str, count: int = 1) -> list[str]:
    answer = ec2.run_instances(ImageId=ami, InstanceType="t1.micro", MinCount=count, MaxCount=count)
    return [i["InstanceId"] for i in answer["Instances"]]


def _mallee(nodes: Nodes, *args: str) -> subprocess.CompletedProcess[str]:
    return nodes.cloud.run("mallee", *args)


def _until(what: str, check: Callable[[], Any]) -> Any:
    return wait_for(what, check, SETTLE, 0.2)


def _root_attached(ec2: Any, instance_id: str) -> bool:
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    root = {m["DeviceName"]: m["Ebs"] for m in instance.get("BlockDeviceMappings", [])}.get(ROOT, {})
    if root.get("Status") != "attached":
        return False
    volume = ec2.describe_volumes(VolumeIds=[root["VolumeId"]])["Volumes"][0]
    return [(a["InstanceId"], a["State"]) for a in volume["Attachments"]] == [(instance_id, "attached")]


def _exported_to(nodes: Nodes, ec2: Any, instance_id: str) -> str:
    """The node the SC (its fake block store) exports the instance's root volume to."""
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    root = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]}[ROOT]
    state = json.loads((nodes.cloud.data_dir / "sc" / "fake-blockstore.json").read_text())
    return str(state.get("exports", {}).get(root, ""))


def _moved(nodes: Nodes, ec2: Any, instance_id: str, to: str) -> bool:
    found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return (
        found["State"]["Name"] == "running"
        and nodes.where(instance_id) == to
        and _root_attached(ec2, instance_id)
        and _exported_to(nodes, ec2, instance_id) == to
    )


def test_a_node_in_maintenance_takes_no_new_instances_and_keeps_its_own(
    nodes: Nodes, ec2: Any, images: tuple[str, str]
) -> None:
    store, _ebs = images
    nodes.only_in_service(nodes.own)
    before = _run(ec2, store)
    wait_state(ec2, before, "running")
    assert nodes.where(before[0]) == nodes.own

    nodes.only_in_service(nodes.first)
    launched = _run(ec2, store, 3)
    wait_state(ec2, launched, "running")
    assert {nodes.where(i) for i in launched} == {nodes.first}
    assert nodes.where(before[0]) == nodes.own  # still running where it was
    listed = _mallee(nodes, "node", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows[nodes.own][2:4] == ["MAINTENANCE", "1"]
    assert rows[nodes.first][2:4] == ["ENABLED", "3"]

    # The first node has room for one more, but for two only nodes in maintenance have it.
    with pytest.raises(ClientError) as err:
        _run(ec2, store, 2)
    assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    off = _mallee(nodes, "node", "maintenance", nodes.second, "--off")
    assert off.returncode == 0, off.stderr
    assert _states(nodes)[nodes.second] == "ENABLED"
    two = _run(ec2, store, 2)
    assert {nodes.where(i) for i in two} <= {nodes.first, nodes.second}


def test_evacuation_moves_ebs_instances_and_names_instance_store_ones_it_leaves_running(
    nodes: Nodes, ec2: Any, images: tuple[str, str]
) -> None:
    store, ebs = images
    nodes.only_in_service(nodes.own)
    (kept,) = _run(ec2, store)
    (moving,) = _run(ec2, ebs)
    wait_state(ec2, [kept, moving], "running", SETTLE)
    assert nodes.where(moving) == nodes.own == nodes.where(kept)

    refused = nodes.refusal("EvacuateNode", Node=nodes.own)  # not in maintenance
    assert (refused.status, refused.code) == (400, "IncorrectState") and nodes.own in refused.message

    nodes.only_in_service(nodes.first)
    evacuated = _mallee(nodes, "node", "evacuate", nodes.own)
    assert evacuated.returncode == 1  # something stays on the node
    assert moving in evacuated.stdout and kept not in evacuated.stdout
    assert f"cannot move {kept}: its root device is instance-store" in evacuated.stderr
    _until(f"{moving} running on {nodes.first}", lambda: _moved(nodes, ec2, moving, nodes.first))
    assert nodes.where(kept) == nodes.own
    wait_state(ec2, [kept], "running")

    again = nodes.call("EvacuateNode", Node=nodes.own)  # nothing more to move
    assert [i.text for i in again.iterfind("./movingInstanceSet/item")] == []
    assert [i.findtext("instanceId") for i in again.iterfind("./unmovableInstanceSet/item")] == [kept]


def test_a_node_with_instances_is_not_deregistered_and_an_empty_one_leaves_the_zone(
    nodes: Nodes, ec2: Any, images: tuple[str, str]
) -> None:
    store, _ebs = images
    api = nodes.cloud.admin_api()
    host, _, port = nodes.spare.rpartition(":")
    api.call("ec2", "RegisterNode", {"Host": host, "Port": port})
    _until("the spare node counted", lambda: nodes.spare in nodes.listed())
    nodes.only_in_service(nodes.first)
    busy = _run(ec2, store)
    wait_state(ec2, busy, "running")

    refused = nodes.refusal("DeregisterNode", Node=nodes.first)
    assert (refused.status, refused.code) == (400, "DependencyViolation") and busy[0] in refused.message
    for bad in ("127.0.0.9:1", "no such host!", f"{host}:99999", f"{host}:", "127.0.77.99"):
        for action, extra in (("DeregisterNode", {}), ("ModifyNodeMaintenance", {"Maintenance": "true"})):
            err = nodes.refusal(action, Node=bad, **extra)
            assert (err.status, err.code) == (400, "InvalidParameterValue"), (action, bad, err)

    _until("the spare node in the zone's capacity", lambda: capacity(nodes.cloud, "t1.micro")[1] == 52)
    gone = _mallee(nodes, "node", "deregister", host)  # HOST alone: one node has it
    assert gone.returncode == 0, gone.stderr
    assert nodes.spare not in nodes.listed()
    _until("the zone's capacity without it", lambda: capacity(nodes.cloud, "t1.micro")[1] == 48)
    unknown = nodes.refusal("DeregisterNode", Node=nodes.spare)
    assert (unknown.status, unknown.code) == (400, "InvalidParameterValue")


def test_maintenance_and_deregistrations_outlive_a_restart_of_the_cluster_controller(
    nodes: Nodes, ec2: Any, images: tuple[str, str]
) -> None:
    store, _ebs = images
    cloud = nodes.cloud
    host, _, port = nodes.spare.rpartition(":")
    cloud.admin_api().call("ec2", "RegisterNode", {"Host": host, "Port": port})
    nodes.call("DeregisterNode", Node=nodes.spare)
    nodes.only_in_service(nodes.second)
    before = cloud.service_pids("cc")
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    cloud.wait_restarted("cc", before, lambda: nodes.call("DescribeNodes"))
    _until(
        "the restarted cluster to hear from its nodes",
        lambda: len(s := _states(nodes)) == 3 and "NOTREADY" not in s.values(),
    )
    states = _states(nodes)
    assert nodes.spare not in states
    assert states == {
        nodes.own: "MAINTENANCE",
        nodes.first: "MAINTENANCE",
        nodes.second: "ENABLED",
    }
    launched = retrying(lambda: _run(ec2, store))
    assert nodes.where(launched[0]) == nodes.second
    cloud.admin_api().call("ec2", "RegisterNode", {"Host": host, "Port": port})


def test_an_evacuation_the_clc_was_killed_in_finishes_after_its_restart(
    nodes: Nodes, ec2: Any, images: tuple[str, str]
) -> None:
    _store, ebs = images
    cloud = nodes.cloud
    nodes.only_in_service(nodes.own)
    (moving,) = _run(ec2, ebs)
    wait_state(ec2, [moving], "running", SETTLE)
    nodes.only_in_service(nodes.second)
    armed = Path(cloud.env["MALLEE_CRASH_POINTS_DIR"]) / "clc.evacuate.recorded"
    before = cloud.service_pids("clc")
    armed.touch()
    try:
        with pytest.raises(Exception):  # noqa: B017 - the CLC dies before it answers
            nodes.call("EvacuateNode", Node=nodes.own)
        assert not armed.exists(), "the crash point was never reached"
    finally:
        armed.unlink(missing_ok=True)
    cloud.wait_restarted("clc", before, lambda: ec2.describe_instances(InstanceIds=[moving]))
    _until(f"{moving} running on {nodes.second}", lambda: _moved(nodes, ec2, moving, nodes.second))
