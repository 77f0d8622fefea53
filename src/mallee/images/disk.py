"""`mallee image build tiny-disk`: the tiny guest as a whole-disk (HVM) image that boots itself.

Made from plain files with Debian tools, without a loop device, a mount or root privileges:

    sector 0           syslinux's mbr.bin + an MBR partition table (written here)
    partition 1 (1 MiB)   FAT16, bootable: ldlinux.sys (`syslinux --install`, which works on a file
                       through mtools), syslinux.cfg, bzImage, initrd.img (copied in with mcopy)
    partition 2        ext4: the tiny image's rootfs.img, byte for byte

SeaBIOS runs the MBR, which chain-loads the active partition's boot sector, which loads syslinux;
syslinux boots the kernel with `root=/dev/vda2`, and the tiny initramfs switches to that disk. The
FAT file system is made as its own file with `-h` (hidden sectors) set to its start on the disk, as
if it had been made on /dev/vda1, then copied into place.

Needs the Debian packages syslinux, syslinux-common, mtools and dosfstools (see ./setup).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SECTOR = 512
MIB = 1024 * 1024
BOOT_START = 1 * MIB  # partition 1, aligned as fdisk would
BOOT_MIB = 32  # bzImage (~8 MiB) + initrd (~4 MiB) + syslinux, with room for a newer kernel
MBR_CODE = Path("/usr/lib/syslinux/mbr/mbr.bin")
ROOT_DEVICE = "/dev/vda2"
CMDLINE = f"console=ttyS0 quiet root={ROOT_DEVICE}"
TOOLS = {"mkfs.fat": "dosfstools", "mcopy": "mtools", "syslinux": "syslinux"}
_FAT16 = 0x06
_LINUX = 0x83

SYSLINUX_CFG = f"""SERIAL 0 115200
DEFAULT mallee
PROMPT 0
TIMEOUT 0
LABEL mallee
  LINUX /bzImage
  INITRD /initrd.img
  APPEND {CMDLINE}
"""


class DiskError(Exception):
    """A disk image that cannot be made (a missing tool, a failing command)."""


@dataclass(frozen=True)
class DiskImage:
    path: Path
    format: str  # "raw" or "qcow2"
    size: int  # bytes of the file
    root_device: str  # the partition the guest mounts as /


def missing_tools() -> list[str]:
    """The Debian packages to install before a disk image can be built (empty when none)."""
    packages = [package for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if not MBR_CODE.exists():
        packages.append("syslinux-common")
    return sorted(set(packages))


def partition_entry(bootable: bool, kind: int, start_lba: int, sectors: int) -> bytes:
    """One 16-byte MBR partition entry; CHS fields say "use LBA" (0xfe/0xff/0xff), as tools do for
    partitions beyond what CHS can address and SeaBIOS and syslinux accept."""
    chs = b"\xfe\xff\xff"
    return struct.pack("<B3sB3sII", 0x80 if bootable else 0, chs, kind, chs, start_lba, sectors)


def master_boot_record(code: bytes, partitions: list[bytes], signature: int = 0x6D616C6C) -> bytes:
    """Sector 0: boot code (at most 440 bytes), disk signature, four partition entries, 0x55AA."""
    if len(code) > 440:
        raise DiskError(f"MBR boot code is {len(code)} bytes; at most 440 fit")
    entries = b"".join(partitions).ljust(64, b"\0")
    return code.ljust(440, b"\0") + struct.pack("<IH", signature, 0) + entries + b"\x55\xaa"


def _run(command: list[str]) -> None:
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise DiskError(f"{command[0]} failed ({result.returncode}): {result.stderr.strip()}")


def make_boot_partition(target: Path, bzimage: Path, initrd: Path, start_lba: int, size_mib: int) -> None:
    """A FAT16 file system in `target` holding syslinux, its configuration, the kernel and initrd."""
    target.unlink(missing_ok=True)
    _run(["mkfs.fat", "-C", "-F", "16", "-n", "MALLEEBOOT", "-h", str(start_lba), str(target),
          str(size_mib * 1024)])  # fmt: skip
    config = target.with_name("syslinux.cfg")
    config.write_text(SYSLINUX_CFG)
    image = f"{target}"
    _run(["mcopy", "-i", image, str(bzimage), "::/bzImage"])
    _run(["mcopy", "-i", image, str(initrd), "::/initrd.img"])
    _run(["mcopy", "-i", image, str(config), "::/syslinux.cfg"])
    _run(["syslinux", "--install", image])


def build_disk(
    bzimage: Path, initrd: Path, rootfs: Path, out: Path, fmt: str = "raw", boot_mib: int = BOOT_MIB
) -> DiskImage:
    """Write a bootable whole-disk image to `out` (atomically) from the tiny image's files."""
    if fmt not in ("raw", "qcow2"):
        raise DiskError(f"disk format must be raw or qcow2, not {fmt!r}")
    missing = missing_tools()
    if missing:
        raise DiskError(f"install the Debian packages {' '.join(missing)} (./setup does)")
    boot_lba = BOOT_START // SECTOR
    boot_sectors = boot_mib * MIB // SECTOR
    root_lba = boot_lba + boot_sectors
    root_bytes = rootfs.stat().st_size
    root_sectors = -(-root_bytes // SECTOR)
    total = (root_lba + root_sectors) * SECTOR
    total = -(-total // MIB) * MIB
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mallee-disk-", dir=out.parent) as scratch:
        work = Path(scratch)
        boot = work / "boot.fat"
        make_boot_partition(boot, bzimage, initrd, boot_lba, boot_mib)
        raw = work / "disk.raw"
        mbr = master_boot_record(
            MBR_CODE.read_bytes()[:440],
            [
                partition_entry(True, _FAT16, boot_lba, boot_sectors),
                partition_entry(False, _LINUX, root_lba, root_sectors),
            ],
        )
        with raw.open("wb") as disk:
            disk.truncate(total)  # sparse: the gaps cost nothing
            disk.write(mbr)
            for offset, source in ((BOOT_START, boot), (root_lba * SECTOR, rootfs)):
                disk.seek(offset)
                with source.open("rb") as part:
                    shutil.copyfileobj(part, disk, MIB)
            disk.flush()
            os.fsync(disk.fileno())
        if fmt == "qcow2":
            converted = work / "disk.qcow2"
            _run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(converted)])
            raw = converted
        raw.replace(out)
    return DiskImage(out, fmt, out.stat().st_size, ROOT_DEVICE)
