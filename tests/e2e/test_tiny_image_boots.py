"""The tiny image boots under TCG: from RAM without a network, from a qcow2 overlay as root, and with
EC2 metadata (IMDSv2), an SSH key login and user-data over QEMU user networking."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mallee.images.tiny import TinyImage, build_tiny
from support import qemu

pytestmark = pytest.mark.skipif(
    shutil.which(qemu.QEMU) is None or shutil.which("apt-get") is None, reason="needs QEMU and Debian's apt"
)
READY_WITHOUT_METADATA = "MALLEE-READY instance-id=unknown"


@pytest.fixture(scope="module")
def image() -> TinyImage:
    return build_tiny()


def test_initramfs_boots_to_ready_without_network_and_powers_off(image: TinyImage, tmp_path: Path) -> None:
    with qemu.boot(tmp_path, image.vmlinux, image.initrd) as guest:
        seconds = guest.wait_for(READY_WITHOUT_METADATA, timeout=60)
        console = guest.console()
        print(f"boot to ready from RAM: {seconds:.1f} s")

        assert console.index("MALLEE-ROOT initramfs") < console.index(READY_WITHOUT_METADATA)
        assert guest.powerdown() == 0  # ACPI power button -> acpid -> poweroff -> QEMU exits


def test_root_on_a_qcow2_overlay_of_rootfs(image: TinyImage, tmp_path: Path) -> None:
    overlay = tmp_path / "rootfs-overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.rootfs), str(overlay)],
        check=True,
    )
    with qemu.boot(
        tmp_path, image.vmlinux, image.initrd, "console=ttyS0 root=/dev/vda", disk=overlay
    ) as guest:
        seconds = guest.wait_for(READY_WITHOUT_METADATA, timeout=60)
        console = guest.console()
        print(f"boot to ready from /dev/vda: {seconds:.1f} s")

        assert console.index("MALLEE-ROOT /dev/vda") < console.index(READY_WITHOUT_METADATA)


@pytest.mark.skipif(shutil.which("ssh") is None or shutil.which("ssh-keygen") is None, reason="needs OpenSSH")
def test_metadata_key_login_and_user_data(image: TinyImage, tmp_path: Path) -> None:
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    metadata = tmp_path / "metadata.json"
    metadata.write_text(
        json.dumps(
            {
                "meta-data/instance-id": "i-0123456789abcdef0",
                "meta-data/local-hostname": "tiny-one",
                "meta-data/public-keys/0/openssh-key": Path(f"{key}.pub").read_text(),
                "user-data": "#!/bin/sh\necho user-data ran on $(hostname)\n",
                "_log": str(tmp_path / "imds.log"),
            }
        )
    )
    port = qemu.free_port()
    with qemu.boot(tmp_path, image.vmlinux, image.initrd, nic=qemu.user_nic(metadata, {port: 22})) as guest:
        guest.wait_for("MALLEE-READY instance-id=i-0123456789abcdef0", timeout=60)
        guest.wait_for("MALLEE-USERDATA exit=0", timeout=30)
        login = subprocess.run(
            ["ssh", "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=no", "-o",
             "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
             "root@127.0.0.1", "hostname; id -u"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

        assert login.returncode == 0, login.stderr
        assert login.stdout.split() == ["tiny-one", "0"]
        assert "user-data ran on tiny-one" in guest.console()
    requests = (tmp_path / "imds.log").read_text()
    assert "PUT /latest/api/token" in requests
    assert "GET /latest/meta-data/instance-id token=True 200" in requests
