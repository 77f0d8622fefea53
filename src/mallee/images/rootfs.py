"""A root file system image from a guest tree: `mkfs.ext4 -d` copies a directory into a new file
system inside a plain file, so no loop device, mount or root privilege over devices is needed."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterable
from pathlib import Path

from mallee.images import cpio

DEFAULT_SIZE_MIB = 64
LABEL = "mallee-root"


def make_ext4(
    entries: Iterable[cpio.Entry], image: Path, staging: Path, size_mib: int = DEFAULT_SIZE_MIB
) -> None:
    """Write `entries` into `staging` (a new directory) and make an ext4 image of it at `image`.

    Files keep the uid/gid of whoever runs this (root in production); root_owner makes the top
    directory root's whatever the caller is.
    """
    materialise(entries, staging)
    image.unlink(missing_ok=True)
    command = ["mkfs.ext4", "-q", "-F", "-L", LABEL, "-d", str(staging), "-E", "root_owner=0:0"]
    result = subprocess.run(
        [*command, str(image), f"{size_mib}M"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"mkfs.ext4 failed ({result.returncode}): {result.stderr.strip()}")


def materialise(entries: Iterable[cpio.Entry], root: Path) -> None:
    """Create directories, files and symlinks under `root`; device nodes are skipped (devtmpfs
    provides them at boot). Directory modes are applied last so read-only ones can be filled."""
    root.mkdir(parents=True, exist_ok=False)
    directories: list[tuple[Path, int]] = []
    for entry in entries:
        target = root / entry.path
        if entry.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            directories.append((target, stat.S_IMODE(entry.mode)))
        elif stat.S_ISLNK(entry.mode):
            os.symlink(entry.data.decode(), target)
        elif stat.S_ISREG(entry.mode):
            target.write_bytes(entry.data)
            target.chmod(stat.S_IMODE(entry.mode))
    for directory, mode in reversed(directories):
        directory.chmod(mode)
