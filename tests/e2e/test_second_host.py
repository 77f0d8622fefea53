"""Issue 17: a node controller on another host. The cloud runs on this host and listens on a veth's
address; a second host (support/second_host.py: a network namespace reached only over that veth, with
its own libvirt) runs `mallee serve nc`, registered with `mallee node register` over the network.

- an instance launched there boots from an image fetched from the cloud, reads its metadata from its
  own host's proxy, and is reachable: at its public address from its host, and over the VPC from an
  instance on the first host (VXLAN between the two hosts);
- its node controller killed (SIGKILL), the VM keeps running and answering over the VPC, its status
  checks turn impaired, and no reconciliation pass loses it, however long the node is away;
- the node controller started again re-adopts the VM (not restarted: the guest booted once) and every
  check is ok; terminated, nothing is left on the second host's libvirt.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mallee.drivers import registry
from support import libvirt as libvirt_support
from support.cloud import Cloud, allow_ssh, start_cloud, stop_cloud, vpc_network_env, wait_for
from support.second_host import Host, second_host
from support.vpc_cloud import BOOT_WAIT, CONNECT, booted, key_pair, publish_tiny, terminated

SSH_OPTIONS = (
    "StrictHostKeyChecking=no",
    "UserKnownHostsFile=/dev/null",
    "ConnectTimeout=3",
    "BatchMode=yes",
)


@dataclass
class World:
    cloud: Cloud
    host: Host
    ec2: Any
    ami: str
    key: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    reason = libvirt_support.unavailable_reason()
    if reason:
        pytest.fail(f"libvirt cannot run here: {reason} (run ./setup as root)")
    base = tmp_path_factory.mktemp("twohosts")
    with ExitStack() as stack:
        host = stack.enter_context(second_host(base))
        node_dir = Path(tempfile.mkdtemp(prefix="mallee-nc-"))  # under /tmp: reachable by libvirt-qemu
        node_dir.chmod(0o711)
        stack.callback(shutil.rmtree, node_dir, ignore_errors=True)
        stack.enter_context(libvirt_support.libvirt_running())
        settings = {
            "MALLEE_HYPERVISOR": "libvirt",
            **vpc_network_env("h"),
            "MALLEE_NODE_CORES": "2",
            "MALLEE_NODE_MEMORY_MIB": "400",  # this host's node fits one m1.small; the rest go away
            "MALLEE_NODE_DIR": str(node_dir),
        }
        # Registered first (a cloud that fails to start may have made its node's network already);
        # the driver is made at the end, when it can read what the node kept of its network.
        stack.callback(lambda: registry.network("vpc", state_dir=node_dir / "network").teardown())
        cloud = start_cloud(base, extra_env=settings, host=host.gateway)
        stack.callback(stop_cloud, cloud)
        host.start_node({**cloud.env, "MALLEE_NODE_MEMORY_MIB": "2048"})
        ec2 = cloud.client("ec2")
        stack.callback(_end_instances, ec2)
        allow_ssh(cloud)
        wait_for("this host's node's room", lambda: _room(ec2)[1] > 0, 60, every=0.5)
        yield World(cloud, host, ec2, publish_tiny(cloud, base), key_pair(ec2, base / "k.pem"))


def _end_instances(ec2: Any) -> None:
    def live() -> list[str]:
        found = ec2.describe_instances()["Reservations"]
        return [i["InstanceId"] for r in found for i in r["Instances"] if i["State"]["Name"] != "terminated"]

    try:
        if live():
            ec2.terminate_instances(InstanceIds=live())
            wait_for("every instance terminated", lambda: not live(), 90)
    except Exception as exc:  # the cloud may be what failed; say so and go on cleaning
        print(f"could not end the test's instances: {exc}")


def _launch(w: World) -> str:
    found = w.ec2.run_instances(ImageId=w.ami, InstanceType="m1.small", KeyName="k", MinCount=1, MaxCount=1)
    return str(found["Instances"][0]["InstanceId"])


def _banner(w: World, via: str, target: str) -> str:
    """What the instance at public address `via` (on this host) reads from `target`:22."""
    probe = f"timeout 3 nc {target} 22 </dev/null 2>/dev/null | head -n 1 | tr -d '\\r'; true"
    argv = ["ssh", "-i", str(w.key), *(a for o in SSH_OPTIONS for a in ("-o", o)), f"root@{via}", probe]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, f"cannot log in to {via}: {done.stderr}"
    return done.stdout.strip()


def _open_from_its_host(w: World, ip: str) -> bool:
    done = w.host.run(sys.executable, "-c", CONNECT, ip, "22", "1", check=False)
    return done.returncode == 0


def _statuses(w: World, ids: list[str]) -> dict[str, dict[str, Any]]:
    found = w.ec2.describe_instance_status(InstanceIds=ids)["InstanceStatuses"]
    return {s["InstanceId"]: s for s in found}


def test_a_node_on_another_host_runs_loses_and_gets_back_its_instance(world: World) -> None:
    w = world
    here = _launch(w)  # only this host's node is registered: it fits this one
    most = _room(w.ec2)[1]
    registered = w.cloud.run(
        "mallee", "node", "register", w.host.address, "--port", str(w.cloud.port_base + 2)
    )
    assert registered.returncode == 0, registered.stderr
    # Once the cluster has asked the new node, its room counts (the zone's most grows); the next
    # launch can only go there.
    wait_for("the second host's room counted", lambda: _room(w.ec2)[1] > most, 60, every=0.5)
    away = _launch(w)
    a, b = booted(w.ec2, [here, away], BOOT_WAIT)
    assert (w.host.node_dir / "instances" / away).exists() and not (
        w.host.node_dir / "instances" / here
    ).exists()
    domains = w.host.run("virsh", "-c", "qemu:///system", "list", "--name").stdout.split()
    assert away in domains  # a VM of the second host's own libvirt

    # Reachable: from its host at its public address, and from this host's instance over the VPC.
    wait_for(
        "the away instance's SSH from its host", lambda: _open_from_its_host(w, b["PublicIpAddress"]), 60
    )
    assert _banner(w, a["PublicIpAddress"], b["PrivateIpAddress"]).startswith("SSH-2.0")
    assert {s["SystemStatus"]["Status"] for s in _statuses(w, [here, away]).values()} == {"ok"}

    # Its node controller dies: the VM lives on, its checks turn impaired, it is never lost.
    w.host.kill_node()
    seen: list[dict[str, Any]] = []

    def away_impaired() -> dict[str, dict[str, Any]] | None:
        now = _statuses(w, [here, away])
        seen[:] = [now[away]]
        return now if now[away]["SystemStatus"]["Status"] == "impaired" else None

    try:
        impaired = wait_for("the away instance impaired", away_impaired, 30, every=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {seen}") from exc
    assert impaired[here]["SystemStatus"]["Status"] == "ok"
    assert impaired[away]["InstanceStatus"]["Details"][0]["Status"] == "failed"
    assert _banner(w, a["PublicIpAddress"], b["PrivateIpAddress"]).startswith("SSH-2.0")
    time.sleep(15)  # longer than the reconciler's grace for an instance no node reports
    states = w.ec2.describe_instances(InstanceIds=[here, away])["Reservations"]
    assert {i["State"]["Name"] for r in states for i in r["Instances"]} == {"running"}

    # Back: re-adopted as it runs, not booted again, and every check ok.
    w.host.start_node(w.host.env)
    wait_for(
        "every check ok again",
        lambda: {s["SystemStatus"]["Status"] for s in _statuses(w, [here, away]).values()} == {"ok"},
        60,
        every=1,
    )
    output = w.ec2.get_console_output(InstanceId=away).get("Output", "")
    assert output.count(f"MALLEE-READY instance-id={away}") == 1, output[-2000:]
    assert _open_from_its_host(w, b["PublicIpAddress"])
    assert _banner(w, a["PublicIpAddress"], b["PrivateIpAddress"]).startswith("SSH-2.0")

    w.ec2.terminate_instances(InstanceIds=[here, away])
    terminated(w.ec2, away)
    terminated(w.ec2, here)
    wait_for(
        "the second host's libvirt empty",
        lambda: not w.host.run("virsh", "-c", "qemu:///system", "list", "--all", "--name").stdout.split(),
        30,
    )


def _room(ec2: Any) -> tuple[int, int]:
    """How many more m1.small the zone's nodes fit now, and when empty (Eucalyptus' verbose rows)."""
    zones = ec2.describe_availability_zones(ZoneNames=["verbose"])["AvailabilityZones"]
    state = next(z["State"] for z in zones if z["ZoneName"] == "|- m1.small").split()
    return int(state[0]), int(state[2])
