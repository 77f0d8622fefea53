"""Simulated nodes (`mallee serve nc-sim`) behind a real cloud: registered with RegisterNode like any
node, polled and placed on by the zone's cluster controller, their instances reported running by
the production path (node push → CC poll → CLC reconciler) and terminated the same way.

The cloud's own node and each simulated node have room for few instances, so whatever the
placement policy, the instances have to spread over the simulated nodes."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture(scope="module")
def simulated(small_cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """NODES simulated nodes, serving and registered: their names (address:port)."""
    first = f"127.0.{10 + secrets.randbelow(240)}.1"
    log_path = tmp_path_factory.mktemp("nc-sim") / "nc-sim.log"
    command = [sys.executable, "-m", "mallee.supervisor", "serve", "nc-sim", "--count", str(NODES)]
    command += ["--first-address", first, "--cores", "2", "--memory-mib", "512", "--disk-gib", "20"]
    command += ["--boot-delay", "0.2"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=small_cloud.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        line = wait_for(
            "the simulated nodes", lambda: re.search(r"serving .*, port (\d+)", _read(log_path)), 30, 0.2
        )
        port = line[1]
        api = small_cloud.admin_api()
        names = []
        for n in range(NODES):
            host = first.rsplit(".", 1)[0] + f".{n + 1}"
            api.call("ec2", "RegisterNode", {"Host": host, "Port": port})
            names.append(f"{host}:{port}")
        yield names
    finally:
        stop_process(process)


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
