"""Simulated nodes (`mallee serve nc-sim`) behind a real cloud: registered with RegisterNode like any
node, polled and placed on by the zone's cluster controller, their instances reported running by
the production path (node push → CC poll → CLC reconciler) and terminated the same way.

The cloud's own node and each simulated node have room for few instances, so whatever the
placement policy, the instances have to spread over the simulated nodes."""

from __future__ import annotations

import datetime
import re
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functional.test_ec2_instances import register_tiny_image, wait_state
from mallee.rpc import cluster
from mallee.rpc.contract import Empty
from mallee.rpc.transport import Client, load_key
from support.cloud import Cloud, Keys, start_cloud, stop_cloud, stop_process, wait_for

NODES = 20
INSTANCES = 40
PER_NODE = 2  # t1.micro: 1 vCPU, 256 MiB; each simulated node has 2 cores and 512 MiB


@pytest.fixture(scope="module")
def small_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """A cloud of its own (its cluster keeps the nodes registered here), whose own node fits one
    instance."""
    c = start_cloud(
        tmp_path_factory.mktemp("simcloud"),
        {"MALLEE_NODE_CORES": "1", "MALLEE_NODE_MEMORY_MIB": "256", "MALLEE_NODE_DISK_GIB": "5"},
    )
    try:
        yield c
    finally:
        stop_cloud(c)


class Fleet:
    """The `mallee serve nc-sim` process of NODES simulated nodes; killed and started again on the
    same addresses and directories, as a host that dies and comes back."""

    def __init__(self, cloud: Cloud, log_path: Path) -> None:
        self.cloud, self.log_path = cloud, log_path
        self.first = f"127.0.{10 + secrets.randbelow(240)}.1"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start serving; the nodes' port."""
        command = [sys.executable, "-m", "mallee.supervisor", "serve", "nc-sim", "--count", str(NODES)]
        command += ["--first-address", self.first, "--cores", "2", "--memory-mib", "512"]
        command += ["--disk-gib", "20", "--boot-delay", "0.2"]
        self.log_path.write_bytes(b"")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, env=self.cloud.env, stdout=log, stderr=subprocess.STDOUT)
        line = wait_for(
            "the simulated nodes", lambda: re.search(r"serving .*, port (\d+)", _read(self.log_path)), 30, 0.2
        )
        return str(line[1])

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process)


@pytest.fixture(scope="module")
def fleet(small_cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(small_cloud, tmp_path_factory.mktemp("nc-sim") / "nc-sim.log")
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(scope="module")
def simulated(small_cloud: Cloud, fleet: Fleet) -> list[str]:
    """NODES simulated nodes, serving and registered: their names (address:port)."""
    port = fleet.start()
    api = small_cloud.admin_api()
    names = []
    for n in range(NODES):
        host = fleet.first.rsplit(".", 1)[0] + f".{n + 1}"
        api.call("ec2", "RegisterNode", {"Host": host, "Port": port})
        names.append(f"{host}:{port}")
    return names


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


def _cluster(cloud: Cloud) -> cluster.ClusterReport:
    key = load_key(cloud.data_dir / "deployment.key")
    return Client(f"http://127.0.0.1:{cloud.port_base + 1}", key, timeout=10).call(cluster.DESCRIBE, Empty())


def test_instances_spread_over_simulated_nodes_run_and_terminate(
    small_cloud: Cloud, simulated: list[str]
) -> None:
    def all_enabled() -> bool:
        report = _cluster(small_cloud)
        enabled = {n.name for n in report.nodes if n.state == "ENABLED" and n.total.cores}
        return set(simulated) <= enabled

    wait_for("the simulated nodes to report to the cluster", all_enabled, 30, 0.5)
    account: Keys = small_cloud.new_account("sim")
    ami = register_tiny_image(small_cloud, account)
    ec2 = small_cloud.client("ec2", account)
    reservation = ec2.run_instances(
        ImageId=ami, InstanceType="t1.micro", MinCount=INSTANCES, MaxCount=INSTANCES
    )
    ids = [i["InstanceId"] for i in reservation["Instances"]]
    assert len(ids) == INSTANCES
    wait_state(ec2, ids, "running", timeout=45)

    placed = {i: p.node for i, p in _cluster(small_cloud).instances.items() if i in ids}
    per_node = Counter(placed.values())
    assert set(placed) == set(ids)
    assert max(per_node.values()) <= PER_NODE
    assert len(set(per_node) & set(simulated)) >= NODES - 1  # the cloud's own node fits one

    ec2.terminate_instances(InstanceIds=ids)
    wait_state(ec2, ids, "terminated", timeout=45)
    left = _cluster(small_cloud).instances
    assert not [i for i in ids if i in left and left[i].state not in ("terminated", "shutting-down")]


def test_a_dead_host_impairs_its_instances_and_loses_none_when_it_returns(
    small_cloud: Cloud, simulated: list[str], fleet: Fleet
) -> None:
    """Every simulated node dies at once (SIGKILL of their process): their instances' status checks
    turn impaired, with the moment the cluster first missed the node, and stay running; the
    cloud's own node keeps its instance ok. Back on the same addresses, the nodes re-adopt their
    instances and every check is ok again: no instance lost, none started twice."""
    account: Keys = small_cloud.new_account("simdead")
    ami = register_tiny_image(small_cloud, account)
    ec2 = small_cloud.client("ec2", account)
    count = 6
    reservation = ec2.run_instances(ImageId=ami, InstanceType="t1.micro", MinCount=count, MaxCount=count)
    ids = [i["InstanceId"] for i in reservation["Instances"]]
    wait_state(ec2, ids, "running", timeout=45)
    placed = {i: p.node for i, p in _cluster(small_cloud).instances.items() if i in ids}
    away = sorted(i for i in ids if placed[i] in simulated)
    assert away, f"nothing was placed on a simulated node: {placed}"

    def statuses() -> dict[str, dict[str, Any]]:
        found = ec2.describe_instance_status(InstanceIds=ids)["InstanceStatuses"]
        return {s["InstanceId"]: s for s in found}

    assert {s["SystemStatus"]["Status"] for s in statuses().values()} == {"ok"}
    killed = datetime.datetime.now(datetime.UTC)
    fleet.kill()

    def all_impaired() -> dict[str, dict[str, Any]] | None:
        now = statuses()
        return now if all(now[i]["SystemStatus"]["Status"] == "impaired" for i in away) else None

    impaired = wait_for("the dead nodes' instances impaired", all_impaired, 30, 0.5)
    for i in ids:
        state = impaired[i]
        assert state["InstanceState"]["Name"] == "running", state
        if i in away:
            check = state["SystemStatus"]["Details"][0]
            assert check["Name"] == "reachability" and check["Status"] == "failed"
            assert check["ImpairedSince"] >= killed - datetime.timedelta(seconds=3)
            assert state["InstanceStatus"]["Status"] == "impaired"
        else:
            assert state["SystemStatus"]["Status"] == "ok", state
    wanted = [{"Name": "system-status.status", "Values": ["impaired"]}]
    filtered = ec2.describe_instance_status(Filters=wanted)
    assert sorted(s["InstanceId"] for s in filtered["InstanceStatuses"]) == away
    time.sleep(12)  # past the reconciler's grace for a missing instance: a dead node's are not missing
    assert {s["InstanceState"]["Name"] for s in statuses().values()} == {"running"}

    fleet.start()
    wait_for(
        "every check ok again",
        lambda: {s["SystemStatus"]["Status"] for s in statuses().values()} == {"ok"},
        45,
        0.5,
    )
    back = {i: p for i, p in _cluster(small_cloud).instances.items() if i in ids}
    assert {i: p.node for i, p in back.items()} == placed  # re-adopted where they were
    assert {p.state for p in back.values()} == {"running"}
    ec2.terminate_instances(InstanceIds=ids)
    wait_state(ec2, ids, "terminated", timeout=45)


def test_describe_instance_status_pages_and_refuses_what_it_cannot_do(small_cloud: Cloud) -> None:
    ec2 = small_cloud.client("ec2", small_cloud.new_account("simstatus"))
    with pytest.raises(ClientError) as refused:
        ec2.describe_instance_status(Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as refused:
        ec2.describe_instance_status(InstanceIds=["i-0123456789abcdef0"], MaxResults=5)
    assert refused.value.response["Error"]["Code"] == "InvalidParameterCombination"
    with pytest.raises(ClientError) as refused:
        ec2.describe_instance_status(MaxResults=5, NextToken="not a token")
    assert refused.value.response["Error"]["Code"] == "InvalidNextToken"
    assert ec2.describe_instance_status(MaxResults=5)["InstanceStatuses"] == []
