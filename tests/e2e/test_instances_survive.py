"""Real VMs through crashes and restarts: a node controller SIGKILLed while its instance boots, and
`mallee up` stopped and started again under a running instance (reached at its public address, over
the VPC network the node applies again); then `mallee down --yes` leaves the host clean. Traffic
stays on the public bridge the cloud creates and the VPC behind it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import libvirt as libvirt_support
from support.cloud import (
    Cloud,
    allow_ssh,
    aws,
    mallee_down,
    start_cloud,
    stop_cloud,
    vpc_network_env,
    wait_for,
)

BOOT_WAIT = 90


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """What a real cloud of this module needs: its environment, a published tiny image, a key."""
    reason = libvirt_support.unavailable_reason()
    if reason:
        pytest.fail(f"libvirt cannot run here: {reason} (run ./setup as root)")
    base = tmp_path_factory.mktemp("survive")
    node_dir = Path(tempfile.mkdtemp(prefix="mallee-nc-"))  # under /tmp: reachable by libvirt-qemu
    node_dir.chmod(0o711)
    env = {
        "MALLEE_HYPERVISOR": "libvirt",
        **vpc_network_env("s"),
        "MALLEE_NODE_CORES": "4",
        "MALLEE_NODE_MEMORY_MIB": "2048",
        "MALLEE_NODE_DIR": str(node_dir),
    }
    (base / "cloud").mkdir()
    with libvirt_support.libvirt_running():
        cloud = start_cloud(base / "cloud", extra_env=env)
        try:
            built = cloud.run("mallee", "image", "build", "tiny", "--out", str(base / "tiny"))
            assert built.returncode == 0, built.stderr
            published = cloud.run("mallee", "image", "publish", str(base / "tiny"), "--name", "tiny")
            assert published.returncode == 0, published.stderr
            ami = next(word for word in published.stdout.split() if word.startswith("ami-"))
            key = base / "k.pem"
            material = aws(cloud, "ec2", "create-key-pair", "--key-name", "k")
            key.write_text(material["KeyMaterial"])
            key.chmod(0o600)
            allow_ssh(cloud)
            yield {"cloud": cloud, "ami": ami, "key": key, "node_dir": node_dir, "env": env}
        finally:
            stop_cloud(cloud)
            cloud.run("mallee", "down", "--yes")  # whatever a failed test left
            shutil.rmtree(node_dir, ignore_errors=True)


def state(cloud: Cloud, instance_id: str) -> dict[str, Any]:
    found = aws(cloud, "ec2", "describe-instances", "--instance-ids", instance_id)
    return dict(found["Reservations"][0]["Instances"][0])


def ssh_ok(key: Path, ip: str) -> bool:
    result = subprocess.run(
        ["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        + ["-o", "ConnectTimeout=3", "-o", "BatchMode=yes", f"root@{ip}", "true"],
        capture_output=True,
        timeout=20,
    )
    return result.returncode == 0


def domains() -> list[str]:
    listed = subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True, text=True
    )
    return [name for name in listed.stdout.split() if name.startswith("i-")]


def test_a_node_killed_while_its_instance_boots_ends_running_or_terminated(site: dict[str, Any]) -> None:
    cloud: Cloud = site["cloud"]
    launched = aws(cloud, "ec2", "run-instances", "--image-id", site["ami"], "--key-name", "k")
    instance_id = launched["Instances"][0]["InstanceId"]
    wait_for("the VM to start", lambda: instance_id in domains(), 60, every=0.2)
    os.kill(cloud.service_pid("nc"), signal.SIGKILL)  # mid-boot: the guest has not reached SSH yet
    final = wait_for(
        "running or terminated",
        lambda: (s := state(cloud, instance_id))["State"]["Name"] in ("running", "terminated") and s,
        BOOT_WAIT,
    )
    time.sleep(5)  # a wrong outcome would show by now: a second VM, or a VM behind a terminated record
    final = state(cloud, instance_id)
    if final["State"]["Name"] == "running":
        assert wait_for("SSH", lambda: ssh_ok(site["key"], final["PublicIpAddress"]), BOOT_WAIT)
        assert domains().count(instance_id) == 1
    else:
        assert final["State"]["Name"] == "terminated" and instance_id not in domains()
    aws(cloud, "ec2", "terminate-instances", "--instance-ids", instance_id)
    wait_for("terminated", lambda: state(cloud, instance_id)["State"]["Name"] == "terminated", BOOT_WAIT)
    wait_for("the VM to go", lambda: instance_id not in domains(), 30)


def test_an_instance_stays_reachable_through_a_restart_and_mallee_down_cleans_up(
    site: dict[str, Any],
) -> None:
    cloud: Cloud = site["cloud"]
    launched = aws(cloud, "ec2", "run-instances", "--image-id", site["ami"], "--key-name", "k")
    instance_id = launched["Instances"][0]["InstanceId"]
    ip = wait_for(
        "running", lambda: (s := state(cloud, instance_id))["State"]["Name"] == "running" and s, BOOT_WAIT
    )["PublicIpAddress"]  # the host is on the public network, not in the VPC
    assert wait_for("SSH", lambda: ssh_ok(site["key"], ip), BOOT_WAIT)

    assert stop_cloud(cloud) == 0
    assert instance_id in cloud.log().split("leaves running")[-1], "mallee up did not say what it leaves"
    assert instance_id in domains() and ssh_ok(site["key"], ip)  # still up with the cloud stopped

    again = start_cloud(cloud.data_dir.parent, extra_env=site["env"], port_base=cloud.port_base)
    site["cloud"] = again
    assert state(again, instance_id)["State"]["Name"] == "running"
    assert ssh_ok(site["key"], ip)
    time.sleep(6)  # past the reconciler's grace periods: still the CLC's, still running
    assert state(again, instance_id)["State"]["Name"] == "running" and ssh_ok(site["key"], ip)

    down = mallee_down(again, "--yes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert again.process.wait(timeout=60) == 0
    assert domains() == []
    prefix, public_bridge = site["env"]["MALLEE_VPC_PREFIX"], site["env"]["MALLEE_PUBLIC_BRIDGE"]
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout.split("\n")
    names = [line.split()[0].split("@")[0] for line in links if line.strip()]
    assert public_bridge not in names and not [n for n in names if n.startswith(prefix)]
    namespaces = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert not [n for n in namespaces if n.startswith(f"mallee-{prefix}-")]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert f"mallee_vpc_{prefix}" not in tables
    dnsmasq = subprocess.run(["pgrep", "-a", "dnsmasq"], capture_output=True, text=True).stdout
    assert str(site["node_dir"]) not in dnsmasq
    assert not any(site["node_dir"].iterdir()) if site["node_dir"].exists() else True
