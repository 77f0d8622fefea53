"""bench/scale.py's cloud: `mallee up` on its fake drivers plus a process of simulated nodes
(`mallee serve nc-sim`), each node registered with RegisterNode as an operator would; a VPC and a
subnet large enough for the instances; launching in batches; the services' pids, memory and CPU;
the cluster controller's report over rpc."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.exceptions
from _api_common import register_image
from _harness import ProcessSet, Target, boto_client, mallee_env, service_pids, start_mallee, tail, wait_until
from botocore.credentials import ReadOnlyCredentials

from mallee.cli.client import AdminClient
from mallee.rpc import cluster
from mallee.rpc.contract import Empty
from mallee.rpc.transport import Client, load_key

SIM_FIRST_ADDRESS = "127.0.1.1"
VPC_CIDR = "10.0.0.0/16"
SUBNET_CIDR = "10.0.0.0/18"  # 16,379 addresses: room for 10,000 instances in one zone
TYPES = ("t1.micro", "m1.small")  # alternated per batch, so an instance-type filter selects half
LAUNCH_TIMEOUT = 600.0


@dataclass
class ScaleCloud:
    """The cloud under test and what the benchmark keeps about it."""

    target: Target
    workdir: Path
    zone: str
    nodes: list[str]
    key: bytes
    sim_pid: int
    image_id: str = ""
    subnet_id: str = ""
    batches: int = 0
    launched: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.workdir / "mallee.log"

    def pid(self, service: str) -> int:
        (pid,) = service_pids(self.log_path, service)
        return pid

    def cc_client(self) -> Client:
        return Client(f"http://127.0.0.1:{self.target.port + 1}", self.key, timeout=60)

    def cluster_report(self) -> cluster.ClusterReport:
        return self.cc_client().call(cluster.DESCRIBE, Empty())

    def ec2(self, **config: Any) -> Any:
        return boto_client("ec2", self.target, **config)


def _services_enabled(target: Target) -> bool:
    """All five services ENABLED (DescribeServices, an administrator extension)."""
    try:
        root = _admin(target).call("ec2", "DescribeServices")
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    states = [item.findtext("state") for item in root.iterfind("./serviceStatusSet/item")]
    return len(states) == 5 and all(state == "ENABLED" for state in states)


def start(
    procs: ProcessSet, workdir: Path, nodes: int, boot_delay: float, per_node: int, source: Path | None = None
) -> ScaleCloud:
    """`mallee up` (its own node fits one instance, so the simulated nodes do the work), then
    `nodes` simulated nodes with room for `per_node` t1.micro/m1.small instances each, registered.
    `source`: another tree's `src` to run `mallee up` from (the simulated nodes run this one's)."""
    own = {"MALLEE_NODE_CORES": "1", "MALLEE_NODE_MEMORY_MIB": "256", "MALLEE_NODE_DISK_GIB": "5"}
    target = start_mallee(
        procs, workdir, set(), _services_enabled, "all five services ENABLED", extra_env=own
    )
    env = mallee_env(workdir, target.port)
    sim_log = workdir / "nc-sim.log"
    command = [sys.executable, "-m", "mallee.supervisor", "serve", "nc-sim", "--count", str(nodes)]
    command += ["--first-address", SIM_FIRST_ADDRESS, "--boot-delay", str(boot_delay)]
    command += [
        "--cores",
        str(per_node),
        "--memory-mib",
        str(256 * per_node),
        "--disk-gib",
        str(5 * per_node),
    ]
    sim = procs.start(command, env, sim_log)
    wait_until(lambda: "serving" in sim_log.read_text(errors="replace"), sim, "simulated nodes", sim_log)
    port = int(re.findall(r"port (\d+)", sim_log.read_text())[0])
    admin = _admin(target)
    zone = boto_client("ec2", target).describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
    first = SIM_FIRST_ADDRESS.rsplit(".", 1)[0]
    names = []
    for n in range(nodes):  # RegisterNode, as `mallee node register ADDRESS --zone ZONE` sends it
        host = f"{first}.{n + 1}"
        admin.call("ec2", "RegisterNode", {"Host": host, "Port": str(port), "Zone": zone})
        names.append(f"{host}:{port}")
    key = load_key(workdir / "mallee-data" / "deployment.key")
    cloud = ScaleCloud(target, workdir, zone, names, key, sim.pid)
    _wait(lambda: _all_enabled(cloud), 60, "every simulated node ENABLED in the cluster")
    return cloud


def _admin(target: Target) -> AdminClient:
    """The cloud's administrator (the keys of the profile `mallee up` wrote), for its extensions."""
    credentials = ReadOnlyCredentials(target.access_key, target.secret_key, None)
    return AdminClient(credentials, target.endpoint, target.region)


def _all_enabled(cloud: ScaleCloud) -> bool:
    report = cloud.cluster_report()
    enabled = {n.name for n in report.nodes if n.state == "ENABLED" and n.total.cores}
    return report.ready and set(cloud.nodes) <= enabled


def _wait(check: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> float:
    """Seconds until `check()` is true (asked every `every` s); RuntimeError after `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"no {what} after {timeout:.0f} s")
        time.sleep(every)
    return time.monotonic() - started


def prepare(cloud: ScaleCloud) -> None:
    """An image, and a VPC with one subnet of the zone large enough for every instance (the default
    VPC's subnet is a /20 that maps a public address to each, and the public pool is ~240)."""
    cloud.image_id = register_image(cloud.target, "scale-images")
    ec2 = cloud.ec2()
    vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=SUBNET_CIDR, AvailabilityZone=cloud.zone)
    cloud.subnet_id = subnet["Subnet"]["SubnetId"]


def launch(cloud: ScaleCloud, count: int) -> tuple[float, float, list[str]]:
    """One RunInstances of `count` (a batch: its own tags, the next instance type); returns the
    RunInstances call's seconds, seconds until every one of them is `running`, and their ids."""
    batch = cloud.batches
    cloud.batches += 1
    tags = [{"Key": "batch", "Value": str(batch)}, {"Key": "bench", "Value": "scale"}]
    ec2 = cloud.ec2(read_timeout=300)
    started = time.monotonic()
    try:
        answer = ec2.run_instances(
            ImageId=cloud.image_id,
            InstanceType=TYPES[batch % len(TYPES)],
            MinCount=count,
            MaxCount=count,
            SubnetId=cloud.subnet_id,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )
    except botocore.exceptions.ClientError as error:
        raise RuntimeError(f"RunInstances of {count} (batch {batch}): {error}") from error
    called = time.monotonic() - started
    ids = [i["InstanceId"] for i in answer["Instances"]]
    mine = {"Name": "tag:batch", "Values": [str(batch)]}
    filters = [mine, {"Name": "instance-state-name", "Values": ["pending"]}]

    def none_pending() -> bool:
        found = ec2.describe_instances(Filters=filters, MaxResults=5)
        return not any(r["Instances"] for r in found["Reservations"])

    # Asked every 0.25 s: a DescribeInstances costs the CLC more as instances grow.
    _wait(none_pending, LAUNCH_TIMEOUT, f"batch {batch} out of pending", every=0.25)
    running = time.monotonic() - started
    states = count_states(cloud, [mine])
    if states.get("running", 0) != count:
        raise RuntimeError(f"batch {batch}: {states} instead of {count} running:\n{tail(cloud.log_path)}")
    cloud.launched += ids
    return called, running, ids


def count_states(cloud: ScaleCloud, filters: list[dict[str, Any]] | None = None) -> dict[str, int]:
    """How many instances are in each state (DescribeInstances, pages of 1,000)."""
    counts: dict[str, int] = {}
    paginator = cloud.ec2(read_timeout=120).get_paginator("describe_instances")
    for page in paginator.paginate(Filters=filters or [], PaginationConfig={"PageSize": 1000}):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                name = instance["State"]["Name"]
                counts[name] = counts.get(name, 0) + 1
    return counts


def kill_cc_and_wait(cloud: ScaleCloud, timeout: float = 120.0) -> tuple[float, float]:
    """SIGKILL the cluster controller (the supervisor starts it again); seconds until it answers,
    and until it is back to steady state: ready, every node ENABLED, every instance launched
    reported running on a node. The CLC's view is checked by the caller."""
    old = cloud.pid("cc")
    started = time.monotonic()
    os.kill(old, signal.SIGKILL)
    answered: list[float] = []

    def back() -> bool:
        if old in service_pids(cloud.log_path, "cc"):
            return False
        try:
            report = cloud.cluster_report()
        except Exception:  # noqa: BLE001 - not up yet
            return False
        if not answered:
            answered.append(time.monotonic() - started)
        if not report.ready or any(n.state != "ENABLED" for n in report.nodes):
            return False
        running = {i for i, p in report.instances.items() if p.state == "running"}
        return running.issuperset(cloud.launched)

    steady = _wait(back, timeout, "cluster controller back to steady state")
    return (answered[0] if answered else steady), steady
