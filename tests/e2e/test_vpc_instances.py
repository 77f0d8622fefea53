"""Issue 13 with real VMs through the whole cloud: `mallee up` on libvirt and the VPC network,
two instances of the tiny image in a security group of the default VPC, reached from this host —
which stands for the outside: it holds the public range's first address on the public bridge this
test's cloud creates, and nothing is routed anywhere else.

- SSH to an instance's public address works only while a rule allows it, and a revoke refuses new
  connections within a second;
- an elastic IP moves from one instance to the other and the outside follows it;
- terminating an instance releases its public address: nothing answers there any more.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from mallee.drivers import registry
from support import libvirt as libvirt_support
from support.cloud import Cloud, start_cloud, stop_cloud, vpc_network_env, wait_for

BOOT_WAIT = 90  # two VMs boot at once under TCG
SSH = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}


@pytest.fixture(scope="module")
def real_cloud(tmp_path_factory: pytest.TempPathFactory) -> Any:
    reason = libvirt_support.unavailable_reason()
    if reason:
        pytest.fail(f"libvirt cannot run here: {reason} (run ./setup as root)")
    node_dir = Path(tempfile.mkdtemp(prefix="mallee-nc-"))  # under /tmp: reachable by libvirt-qemu
    node_dir.chmod(0o711)
    with libvirt_support.libvirt_running():
        cloud = start_cloud(
            tmp_path_factory.mktemp("vpccloud"),
            extra_env={
                "MALLEE_HYPERVISOR": "libvirt",
                **vpc_network_env("v"),
                "MALLEE_NODE_CORES": "4",
                "MALLEE_NODE_MEMORY_MIB": "2048",
                "MALLEE_NODE_DIR": str(node_dir),
            },
        )
        try:
            yield cloud
        finally:
            _end_instances(cloud)  # also after a failure: a stopped node leaves its VMs running
            stop_cloud(cloud)
            registry.network("vpc", state_dir=node_dir / "network").teardown()
            shutil.rmtree(node_dir, ignore_errors=True)


def _end_instances(cloud: Cloud) -> None:
    ec2 = cloud.client("ec2")

    def live() -> list[str]:
        found = ec2.describe_instances()["Reservations"]
        return [i["InstanceId"] for r in found for i in r["Instances"] if i["State"]["Name"] != "terminated"]

    try:
        if live():
            ec2.terminate_instances(InstanceIds=live())
            wait_for("every instance terminated", lambda: not live(), 60)
    except Exception as exc:  # the cloud may be what failed; say so and go on cleaning
        print(f"could not end the test's instances: {exc}")


def _port_open(ip: str, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((ip, 22), timeout=timeout):
            return True
    except OSError:
        return False


def _ssh(key: Path, ip: str, *command: str) -> subprocess.CompletedProcess[str]:
    options = [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "ConnectTimeout=3",
        "BatchMode=yes",
    ]
    return subprocess.run(
        ["ssh", "-i", str(key), *(a for o in options for a in ("-o", o)), f"root@{ip}", *command],
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_groups_elastic_ips_and_termination_on_the_wire(real_cloud: Cloud, tmp_path: Path) -> None:
    cloud = real_cloud
    built = cloud.run("mallee", "image", "build", "tiny", "--out", str(tmp_path / "tiny"))
    assert built.returncode == 0, built.stderr
    published = cloud.run("mallee", "image", "publish", str(tmp_path / "tiny"), "--name", "tiny")
    assert published.returncode == 0, published.stderr
    ami = next(word for word in published.stdout.split() if word.startswith("ami-"))
    ec2 = cloud.client("ec2")
    key = tmp_path / "k.pem"
    key.write_text(ec2.create_key_pair(KeyName="k")["KeyMaterial"])
    key.chmod(0o600)
    web = ec2.create_security_group(GroupName="web", Description="web")["GroupId"]
    ids = [
        i["InstanceId"]
        for i in ec2.run_instances(
            ImageId=ami, InstanceType="m1.small", KeyName="k", MinCount=2, MaxCount=2, SecurityGroupIds=[web]
        )["Instances"]
    ]

    def running() -> Any:
        found = [i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]]
        return found if all(i["State"]["Name"] == "running" for i in found) else None

    a, b = sorted(wait_for("running", running, BOOT_WAIT), key=lambda i: ids.index(i["InstanceId"]))
    ip_a, ip_b = a["PublicIpAddress"], b["PublicIpAddress"]
    wait_for(
        "the guests booted",
        lambda: all(
            f"MALLEE-READY instance-id={i}" in ec2.get_console_output(InstanceId=i).get("Output", "")
            for i in ids
        ),
        BOOT_WAIT,
    )

    # No rule: nothing gets in.
    assert not _port_open(ip_a, timeout=2)
    # A rule: SSH works.
    ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=[SSH])
    allowed = time.monotonic()
    wait_for("SSH allowed", lambda: _port_open(ip_a), 10, every=0.05)
    print(f"authorize returned -> port 22 open: {time.monotonic() - allowed:.2f} s")
    assert "Linux" in _ssh(key, ip_a, "uname", "-a").stdout
    # A revoke: new connections are refused within a second.
    ec2.revoke_security_group_ingress(GroupId=web, IpPermissions=[SSH])
    revoked = time.monotonic()
    while _port_open(ip_a, timeout=0.2):
        assert time.monotonic() - revoked < 1.0, "SSH still accepted a second after the revoke"
        time.sleep(0.05)
    print(f"revoke returned -> port 22 refused: {time.monotonic() - revoked:.2f} s")

    # An elastic IP moves from one instance to the other; the outside follows it.
    ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=[SSH])
    allocation = ec2.allocate_address(Domain="vpc")
    eip = allocation["PublicIp"]
    ec2.associate_address(AllocationId=allocation["AllocationId"], InstanceId=a["InstanceId"])
    name_a = wait_for("EIP to A", lambda: (r := _ssh(key, eip, "hostname")).returncode == 0 and r.stdout, 20)
    assert name_a.strip() == "ip-" + a["PrivateIpAddress"].replace(".", "-")
    ec2.associate_address(
        AllocationId=allocation["AllocationId"], InstanceId=b["InstanceId"], AllowReassociation=True
    )
    want_b = "ip-" + b["PrivateIpAddress"].replace(".", "-")
    wait_for("EIP follows to B", lambda: _ssh(key, eip, "hostname").stdout.strip() == want_b, 20)
    assert not _port_open(ip_a, timeout=1)  # A's automatic address went back when the EIP came

    # Terminating B releases what it held: nothing answers at the elastic IP; B's domain is gone.
    ec2.terminate_instances(InstanceIds=[b["InstanceId"]])
    wait_for(
        "B terminated",
        lambda: (
            ec2.describe_instances(InstanceIds=[b["InstanceId"]])["Reservations"][0]["Instances"][0]["State"][
                "Name"
            ]
            == "terminated"
        ),
        60,
    )
    wait_for("nothing at the elastic IP", lambda: not _port_open(eip, timeout=0.5), 10)
    assert (
        ec2.describe_addresses(AllocationIds=[allocation["AllocationId"]])["Addresses"][0].get("InstanceId")
        is None
    )
    assert ip_b not in [x["PublicIp"] for x in ec2.describe_addresses()["Addresses"]]
    ec2.release_address(AllocationId=allocation["AllocationId"])
    ec2.terminate_instances(InstanceIds=[a["InstanceId"]])
    # Ended before the cloud stops: a stopped node leaves its VMs running (by design).
    wait_for(
        "A terminated",
        lambda: (
            ec2.describe_instances(InstanceIds=[a["InstanceId"]])["Reservations"][0]["Instances"][0]["State"][
                "Name"
            ]
            == "terminated"
        ),
        60,
    )
