"""Real clouds for the VPC tests with VMs: `mallee up` on libvirt and the VPC network, with

- an underlay of its own: a veth holding each node's VXLAN address (so nothing crosses the uplink);
- an "outside" namespace on the cloud's public bridge, standing for the internet: tests reach
  instances' public addresses from there, and instances reach it, never anything beyond;
- a second node controller on demand (`add_node`): another process on this machine with its own
  node directory, bridges, prefix and VXLAN address, registered with the zone's cluster.

Everything is removed at the end, also after a failure: instances are ended before their nodes stop
(a stopped node leaves its VMs running, by design), then the nodes, their networks, the namespace and
the underlay; processes are stopped by their pid.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mallee.drivers import registry
from support import libvirt as libvirt_support
from support import netns, vpcnet
from support.cloud import Cloud, Keys, start_cloud, stop_cloud, stop_process, vpc_network_env, wait_for

BOOT_WAIT = 240  # a few tiny guests booting at once under TCG on two cores
SSH_ANYWHERE = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
OUTSIDE_PORT = 7000  # the outside's greeting server: answers "outside <the address it saw>"

CONNECT = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError:
    sys.exit(3)
"""


@dataclass
class Node:
    directory: Path
    prefix: str
    process: subprocess.Popen[bytes] | None = None  # None: the cloud's own node controller


@dataclass
class VpcCloud:
    cloud: Cloud
    outside: netns.Guest
    outside_ip: str
    underlay: list[str]  # the VXLAN addresses of node 1 and node 2
    vxlan_port: int
    nodes: list[Node] = field(default_factory=list)
    accounts: list[Keys] = field(default_factory=list)

    def new_account(self) -> Keys:
        keys = self.cloud.new_account("vpc")
        self.accounts.append(keys)  # its instances are ended with the cloud's
        return keys

    def port_open(self, ip: str, port: int = 22, timeout: float = 0.5) -> bool:
        """Whether the outside can open a TCP connection to `ip`:`port`."""
        done = self.outside.run(
            sys.executable, "-c", CONNECT, ip, str(port), str(timeout), check=False, timeout=timeout + 10
        )
        return done.returncode == 0

    def ssh(
        self, key: Path, ip: str, *command: str, timeout: float = 30, user: str = "root"
    ) -> subprocess.CompletedProcess[str]:
        """`command` run as `user` on the instance at `ip`, logged in from the outside."""
        options = (
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "ConnectTimeout=3",
            "BatchMode=yes",
        )
        argv = ["ssh", "-i", str(key), *(a for o in options for a in ("-o", o)), f"{user}@{ip}", *command]
        return self.outside.run(*argv, check=False, timeout=timeout)

    def banner(self, key: Path, via: str, target: str, port: int = 22) -> str:
        """What the instance at public address `via` reads when it connects to `target`:`port`
        (dropbear's "SSH-2.0-…" banner, the outside's greeting, or "" when nothing answers)."""
        probe = f"timeout 3 nc {target} {port} </dev/null 2>/dev/null | head -n 1 | tr -d '\\r'; true"
        done = self.ssh(key, via, probe)
        assert done.returncode == 0, f"cannot log in to {via}: {done.stderr}"
        return done.stdout.strip()

    def add_node(self, tag: str) -> Node:
        """A second node controller on this machine (127.0.0.2), registered with the cluster, and
        known with its capacity when this returns."""
        directory = _node_dir()
        prefix = f"{tag}{random.randrange(16**3):03x}"[:4]
        node = Node(directory, prefix)
        self.nodes.append(node)
        env = {
            **self.cloud.env,
            "MALLEE_HOST": "127.0.0.2",
            "MALLEE_NODE_DIR": str(directory),
            "MALLEE_VPC_PREFIX": prefix,
            "MALLEE_UNDERLAY_ADDRESS": self.underlay[1],
            "MALLEE_VXLAN_PORT": str(self.vxlan_port + 1),  # one machine: one UDP port per node
        }
        with open(directory / "nc.log", "wb") as log:
            node.process = subprocess.Popen(
                [sys.executable, "-m", "mallee.supervisor", "serve", "nc"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        port = str(self.cloud.port_base + 2)
        before = self._most_m1_small()
        wait_for("the second node answers", lambda: self.cloud.run("mallee", "node", "register", "127.0.0.2",
                 "--port", port).returncode == 0, 30)  # fmt: skip
        wait_for("the second node's capacity", lambda: self._most_m1_small() > before, 30, every=0.5)
        return node

    def _most_m1_small(self) -> int:
        """How many m1.small the zone's nodes hold when empty (Eucalyptus' verbose zone rows)."""
        zones = self.cloud.client("ec2").describe_availability_zones(ZoneNames=["verbose"])[
            "AvailabilityZones"
        ]
        return next(int(z["State"].split()[2]) for z in zones if z["ZoneName"] == "|- m1.small")

    def node_of(self, instance_id: str) -> int:
        """Which node (0: the cloud's own, 1: the second) runs the instance."""
        return next(i for i, n in enumerate(self.nodes) if (n.directory / "instances" / instance_id).exists())

    def end_instances(self) -> None:
        for keys in [self.cloud.admin, *self.accounts]:
            ec2 = self.cloud.client("ec2", keys)

            def live() -> list[str]:
                found = ec2.describe_instances()["Reservations"]  # noqa: B023
                return [
                    i["InstanceId"]
                    for r in found
                    for i in r["Instances"]
                    if i["State"]["Name"] != "terminated"
                ]

            try:
                if live():
                    ec2.terminate_instances(InstanceIds=live())
                    wait_for("every instance terminated", lambda: not live(), 90)  # noqa: B023
            except Exception as exc:  # the cloud may be what failed; say so and go on cleaning
                print(f"could not end the test's instances: {exc}")


def _node_dir() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="mallee-nc-"))  # under /tmp: reachable by libvirt-qemu
    directory.chmod(0o711)
    return directory


@contextmanager
def real_vpc_cloud(
    base_dir: Path, tag: str, memory_mib: int = 2048, extra_env: dict[str, str] | None = None
) -> Iterator[VpcCloud]:
    """A cloud on libvirt and the VPC network, its underlay and its outside (see the module);
    `extra_env`: more settings for its processes."""
    reason = libvirt_support.unavailable_reason()
    if reason:
        pytest.fail(f"libvirt cannot run here: {reason} (run ./setup as root)")
    network = vpc_network_env(tag)
    public = network["MALLEE_PUBLIC_CIDR"].rsplit(".", 1)[0]
    net = f"10.253.{random.randrange(256)}"
    underlay = [f"{net}.1", f"{net}.2"]
    vxlan_port = random.randrange(20000, 40000)
    device = f"mlu{netns.suffix()}"
    with ExitStack() as stack:
        first = Node(_node_dir(), network["MALLEE_VPC_PREFIX"])
        stack.callback(shutil.rmtree, first.directory, ignore_errors=True)
        sc_dir = _node_dir()  # the SC's volumes and export sockets: reachable by the qemu user too
        stack.callback(shutil.rmtree, sc_dir, ignore_errors=True)
        stack.callback(netns.sh, "ip", "link", "del", device, check=False)
        netns.sh("ip", "link", "add", device, "type", "veth", "peer", "name", f"{device}p")
        netns.sh("ip", "link", "set", f"{device}p", "up")
        for address in underlay:
            netns.sh("ip", "addr", "add", f"{address}/32", "dev", device)
        netns.sh("ip", "link", "set", device, "up")
        stack.enter_context(libvirt_support.libvirt_running())
        # Registered first (a cloud that fails to start may have made its node's network already);
        # the driver is made at the end, when it can read what the node kept of its network.
        stack.callback(lambda: registry.network("vpc", state_dir=first.directory / "network").teardown())
        cloud = start_cloud(
            base_dir,
            extra_env={
                "MALLEE_HYPERVISOR": "libvirt",
                "MALLEE_BLOCKSTORE": "file",  # volumes as files, exported by qemu-storage-daemon
                "MALLEE_SC_DIR": str(sc_dir),
                **network,
                "MALLEE_UNDERLAY_ADDRESS": underlay[0],
                "MALLEE_VXLAN_PORT": str(vxlan_port),
                "MALLEE_NODE_CORES": "8",
                "MALLEE_NODE_MEMORY_MIB": str(memory_mib),
                "MALLEE_NODE_DIR": str(first.directory),
                **(extra_env or {}),
            },
        )
        # The SC's export servers outlive it (as VMs outlive their node): stopped by their pids.
        stack.callback(registry.blockstore("file", state_dir=sc_dir).teardown)
        stack.callback(stop_cloud, cloud)
        # The node made the public bridge at its start; the outside joins it.
        outside = stack.enter_context(netns.guest(network["MALLEE_PUBLIC_BRIDGE"], _mac(), base_dir))
        outside_ip = f"{public}.250"
        outside.run("ip", "addr", "add", f"{outside_ip}/24", "dev", "eth0")
        vpcnet.serve(outside, "outside", OUTSIDE_PORT)
        world = VpcCloud(cloud, outside, outside_ip, underlay, vxlan_port, [first])
        stack.callback(_stop_second_nodes, world)
        stack.callback(world.end_instances)
        yield world


def _stop_second_nodes(world: VpcCloud) -> None:
    for node in world.nodes[1:]:
        if node.process is not None:
            stop_process(node.process)
        registry.network("vpc", state_dir=node.directory / "network").teardown()
        shutil.rmtree(node.directory, ignore_errors=True)


def _mac() -> str:
    return "02:" + ":".join(f"{random.randrange(256):02x}" for _ in range(5))


def publish_tiny(cloud: Cloud, workdir: Path) -> str:
    """The tiny guest built and published by the administrator for every account; its AMI."""
    built = cloud.run("mallee", "image", "build", "tiny", "--out", str(workdir / "tiny"))
    assert built.returncode == 0, built.stderr
    published = cloud.run("mallee", "image", "publish", str(workdir / "tiny"), "--name", "tiny", "--public")
    assert published.returncode == 0, published.stderr
    return next(word for word in published.stdout.split() if word.startswith("ami-"))


def key_pair(ec2: Any, path: Path, name: str = "k") -> Path:
    path.write_text(ec2.create_key_pair(KeyName=name)["KeyMaterial"])
    path.chmod(0o600)
    return path


def booted(ec2: Any, ids: list[str], timeout: float = BOOT_WAIT) -> list[dict[str, Any]]:
    """The instances, once running and their guests said MALLEE-READY with their own instance id
    (read from the metadata service), in the order of `ids`."""

    def running() -> Any:
        found = [i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]]
        return found if all(i["State"]["Name"] == "running" for i in found) else None

    instances = sorted(wait_for("running", running, timeout), key=lambda i: ids.index(i["InstanceId"]))
    wait_for(
        "the guests booted",
        lambda: all(
            f"MALLEE-READY instance-id={i}" in ec2.get_console_output(InstanceId=i).get("Output", "")
            for i in ids
        ),
        timeout,
        every=2,
    )
    return instances


def terminated(ec2: Any, instance_id: str, timeout: float = 90) -> None:
    def state() -> str:
        return str(
            ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"][
                "Name"
            ]
        )

    wait_for(f"{instance_id} terminated", lambda: state() == "terminated", timeout)
