"""Image formats beyond the walk-through's kernel + ramdisk + root file system, on a real cloud
(`mallee up` on libvirt and the VPC network):

- a bundle (`mallee image bundle`: tar, gzip, AES, parts, manifest) of the tiny root file system,
  registered with the tiny kernel and ramdisk: the node fetches the manifest and the parts, checks
  their digests, decrypts with the cloud's key and boots the result;
- whole-disk (hvm) images, raw and qcow2 (`mallee image build tiny-disk`): MBR, syslinux on a FAT
  partition, root on the second partition; SeaBIOS boots them with no kernel given.

Each boots to an SSH login with the instance's key pair (at its public address) and terminates
cleanly. Traffic stays on the public bridge this test's cloud creates and the VPC behind it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mallee.drivers import registry
from mallee.images.tiny import build_tiny
from support import libvirt as libvirt_support
from support.cloud import Cloud, allow_ssh, aws, start_cloud, stop_cloud, vpc_network_env, wait_for

BOOT_WAIT = 60  # seconds per boot wait, as the issue budgets


@dataclass
class RealCloud:
    cloud: Cloud
    node_dir: Path
    work: Path  # images built and bundled by these tests
    key: Path  # the private key of the key pair "k"


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCloud]:
    reason = libvirt_support.unavailable_reason()
    if reason:
        pytest.fail(f"libvirt cannot run here: {reason} (run ./setup as root)")
    build_tiny()  # into the shared cache, without the CLI's 60 s limit on a first build
    node_dir = Path(tempfile.mkdtemp(prefix="mallee-nc-"))  # under /tmp: reachable by libvirt-qemu
    node_dir.chmod(0o711)
    base = tmp_path_factory.mktemp("formatscloud")
    with libvirt_support.libvirt_running():
        cloud = start_cloud(
            base,
            extra_env={
                "MALLEE_HYPERVISOR": "libvirt",
                **vpc_network_env("f"),
                "MALLEE_NODE_CORES": "4",
                "MALLEE_NODE_MEMORY_MIB": "2048",
                "MALLEE_NODE_DIR": str(node_dir),
            },
        )
        try:
            work = base / "work"
            work.mkdir()
            key = work / "k.pem"
            material = cloud.run(
                "aws", "--profile", "mallee", "ec2", "create-key-pair", "--key-name", "k",
                "--query", "KeyMaterial", "--output", "text",
            )  # fmt: skip
            assert material.returncode == 0, material.stderr
            key.write_text(material.stdout)
            key.chmod(0o600)
            allow_ssh(cloud)
            yield RealCloud(cloud, node_dir, work, key)
        finally:
            stop_cloud(cloud)
            # The node leaves its network up across restarts (its guests keep their addresses):
            # remove this cloud's bridges, routers, dnsmasq and nftables tables.
            registry.network("vpc", state_dir=node_dir / "network").teardown()
            shutil.rmtree(node_dir, ignore_errors=True)
            shutil.rmtree(base, ignore_errors=True)  # Walrus' copies of the images


def mallee(cloud: Cloud, *args: str) -> str:
    result = cloud.run("mallee", *args)
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


def published_ids(stdout: str) -> dict[str, str]:
    return dict(line.split("\t", 1) for line in stdout.strip().splitlines())


def boot_login_terminate(real: RealCloud, image_id: str) -> tuple[float, str]:
    """Run `image_id`, log in over SSH, terminate; (seconds from RunInstances to login, console)."""
    cloud = real.cloud
    started = time.monotonic()
    reservation = aws(
        cloud,
        "ec2",
        "run-instances",
        "--image-id",
        image_id,
        "--instance-type",
        "m1.small",
        "--key-name",
        "k",
    )
    instance_id = reservation["Instances"][0]["InstanceId"]

    def describe() -> Any:
        found = aws(cloud, "ec2", "describe-instances", "--instance-ids", instance_id)
        return found["Reservations"][0]["Instances"][0]

    try:
        instance = wait_for(
            "running", lambda: (i := describe())["State"]["Name"] == "running" and i, BOOT_WAIT
        )
        ip = instance["PublicIpAddress"]  # the host is on the public network, not in the VPC

        def ssh(*command: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["ssh", "-i", str(real.key), "-o", "StrictHostKeyChecking=no",
                 "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=3", "-o", "BatchMode=yes",
                 f"root@{ip}", *command],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip

        login = wait_for("ssh", lambda: (r := ssh("uname", "-a")).returncode == 0 and r, BOOT_WAIT)
        seconds = time.monotonic() - started
        assert "Linux" in login.stdout
        console = aws(cloud, "ec2", "get-console-output", "--instance-id", instance_id)["Output"]
        assert f"MALLEE-READY instance-id={instance_id}" in console
    finally:
        aws(cloud, "ec2", "terminate-instances", "--instance-ids", instance_id)
        wait_for("terminated", lambda: describe()["State"]["Name"] == "terminated", 60)
    domains = subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True, text=True
    )
    assert instance_id not in domains.stdout
    assert not (real.node_dir / "instances" / instance_id).exists()
    return seconds, console


def test_bundled_root_file_system_boots(real: RealCloud) -> None:
    cloud, work = real.cloud, real.work
    tiny = work / "tiny"
    mallee(cloud, "image", "build", "tiny", "--out", str(tiny))
    kernel_ramdisk = published_ids(mallee(cloud, "image", "publish", str(tiny), "--name", "tiny"))
    bundled = work / "bundle"
    mallee(
        cloud, "image", "bundle", str(tiny / "rootfs.img"), "--type", "machine", "--out", str(bundled),
        "--kernel", kernel_ramdisk["kernel"], "--ramdisk", kernel_ramdisk["ramdisk"],
        "--part-size", str(512 * 1024),
    )  # fmt: skip
    assert len(list(bundled.glob("rootfs.img.part.*"))) > 1  # several parts, each fetched and checked
    image_id = published_ids(mallee(cloud, "image", "publish", str(bundled), "--name", "tiny-bundled"))[
        "image"
    ]
    described = aws(cloud, "ec2", "describe-images", "--image-ids", image_id)["Images"][0]
    assert described["ImageLocation"].endswith("rootfs.img.manifest.xml")
    assert described["KernelId"] == kernel_ramdisk["kernel"]

    seconds, console = boot_login_terminate(real, image_id)
    assert "MALLEE-ROOT /dev/vda" in console  # the unbundled file system is the root disk
    print(f"bundled image: RunInstances to SSH login {seconds:.1f} s")


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_whole_disk_image_boots(real: RealCloud, fmt: str) -> None:
    cloud = real.cloud
    out = real.work / f"disk-{fmt}"
    path = Path(mallee(cloud, "image", "build", "tiny-disk", "--out", str(out), "--format", fmt).strip())
    assert path.parent == out and path.is_file()
    image_id = published_ids(mallee(cloud, "image", "publish", str(out), "--name", f"tiny-disk-{fmt}"))[
        "machine"
    ]
    described = aws(cloud, "ec2", "describe-images", "--image-ids", image_id)["Images"][0]
    assert described["VirtualizationType"] == "hvm" and "KernelId" not in described
    assert described["RootDeviceName"] == "/dev/vda"

    seconds, console = boot_login_terminate(real, image_id)
    assert "SYSLINUX" in console  # booted by the disk's own loader, not by a kernel the node gave
    assert "MALLEE-ROOT /dev/vda2" in console
    shutil.rmtree(out)
    print(f"whole-disk {fmt} image: RunInstances to SSH login {seconds:.1f} s")
