"""Writing a small file so that a reader, or a process restarted after a crash, sees either the old
content or the new one, never half of it."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: str | bytes, mode: int = 0o644, *, fsync: bool = False) -> None:
    """Write a new file beside `path` and rename it over. `fsync`: the content is on disk before the
    rename (a rename alone survives the process's death, not the machine's)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fchmod(f.fileno(), mode)
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in the directory `path` durable (its entry, not only the data)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reachable_dir(path: Path) -> Path:
    """Create `path` so the hypervisor's unprivileged user can traverse to the files in it (0711):
    the node's disks and consoles, the SC's volume sockets."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for created in missing:
        created.chmod(0o711)
    return path
