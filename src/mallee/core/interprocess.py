"""Coordination between the processes of one host: exclusive file locks, and a counter every
process reads without a system call."""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_COUNTER = struct.Struct("<Q")


class FileLock:
    """An exclusive flock on `path` through a descriptor of its own, kept open. flock belongs to
    the open file, so two FileLocks on one path exclude each other within one process too."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self, *, blocking: bool = True) -> bool:
        """Whether it is ours now (always, when blocking)."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """An exclusive flock on `path`, held for the block (released by the kernel if we die)."""
    lock = FileLock(path)
    try:
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
    finally:
        lock.close()


class SharedCounter:
    """A 64-bit counter in a small file that each process maps: `value()` is a read of shared
    memory, `bump()` adds one under the file's flock. Readers compare values only for equality,
    so a read torn by a concurrent bump merely looks like one more change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _COUNTER.size:
                os.ftruncate(fd, _COUNTER.size)  # zeros; a second process doing the same is harmless
            self._map = mmap.mmap(fd, _COUNTER.size)
        finally:
            os.close(fd)

    def value(self) -> int:
        return int(_COUNTER.unpack_from(self._map)[0])

    def bump(self) -> None:
        with exclusive(self.path):
            _COUNTER.pack_into(self._map, 0, self.value() + 1)

    def close(self) -> None:
        self._map.close()
