"""The cpio "newc" format the Linux kernel unpacks as an initramfs: a writer, and a reader for tests.

Writing the archive ourselves means no `cpio` binary, no root and no mounts: device nodes such as
/dev/console are just header fields. See the kernel's Documentation/driver-api/early-userspace/
buffer-format.rst for the format.
"""

from __future__ import annotations

import gzip
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"
_FIELDS = 13  # ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check


@dataclass(frozen=True)
class Entry:
    """One archive member. `mode` includes the file type bits; a symlink's `data` is its target."""

    path: str  # relative, no leading slash: "bin/sh"
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)  # (major, minor) of a device node
    uid: int = 0
    gid: int = 0

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def directory(path: str, perms: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perms)


def regular(path: str, data: bytes, perms: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perms, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int, perms: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | perms, rdev=(major, minor))


def write_archive(entries: Iterable[Entry], out: BinaryIO) -> None:
    """Write `entries` (parents before children) and the trailer; every timestamp is 0 for
    reproducible output, and each member gets its own inode number so none reads as a hard link."""
    for ino, entry in enumerate(entries, start=1):
        nlink = 2 if entry.is_dir else 1
        _write_member(out, entry.path, entry.mode, entry.data, ino, nlink, entry.uid, entry.gid, entry.rdev)
    _write_member(out, _TRAILER, 0, b"", 0, 1, 0, 0, (0, 0))


def write_gzipped(entries: Iterable[Entry], path: Path, level: int = 6) -> None:
    """Write a gzip-compressed archive to `path`; gzip because every kernel can unpack it fast."""
    # An empty name and mtime 0 keep the gzip header, and so the digest, the same between builds.
    with path.open("wb") as raw, gzip.GzipFile("", "wb", level, raw, mtime=0) as out:
        write_archive(entries, out)  # type: ignore[arg-type]  # GzipFile is a binary writer


def read_archive(data: bytes) -> Iterator[Entry]:
    """Parse a newc archive (uncompressed) back into entries, stopping at the trailer."""
    offset = 0
    while True:
        if data[offset : offset + 6] != _MAGIC:
            raise ValueError(f"bad cpio magic at offset {offset}")
        fields = [int(data[offset + 6 + i * 8 : offset + 14 + i * 8], 16) for i in range(_FIELDS)]
        _ino, mode, uid, gid, _nlink, _mtime, size, _dmaj, _dmin, rmaj, rmin, namesize, _check = fields
        name_start = offset + 6 + _FIELDS * 8
        name = data[name_start : name_start + namesize - 1].decode()
        data_start = _align4(name_start + namesize)
        if name == _TRAILER:
            return
        yield Entry(name, mode, data[data_start : data_start + size], (rmaj, rmin), uid, gid)
        offset = _align4(data_start + size)


def _write_member(
    out: BinaryIO,
    name: str,
    mode: int,
    data: bytes,
    ino: int,
    nlink: int,
    uid: int,
    gid: int,
    rdev: tuple[int, int],
) -> None:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, uid, gid, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    header = _MAGIC + b"".join(b"%08X" % value for value in fields)
    out.write(header + encoded + _padding(len(header) + len(encoded)))
    out.write(data + _padding(len(data)))


def _align4(value: int) -> int:
    return (value + 3) & ~3


def _padding(length: int) -> bytes:
    return b"\0" * (_align4(length) - length)
