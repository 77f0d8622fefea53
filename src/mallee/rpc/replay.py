"""Refusing a replayed rpc request: the nonces a service accepted recently, in one table shared by
every process serving its port on this host (Walrus's workers), so a replay cannot succeed by
landing on another process.

The table is a file each process maps (`mmap`, so the processes share its pages) and reads or
changes only while holding the file's flock (`core.interprocess.FileLock`), plus a thread lock
within the process. "Is this nonce new? then record it" is therefore one atomic step for all
processes; the kernel drops the flock of a process that dies, and a slot a dying process left half
written names no nonce an honest client will send. A nonce lands in a window of `WINDOW` slots
chosen by its first bytes (nonces are random, and only key holders get this far); a slot is free
once its entry's expiry has passed, so the table forgets old entries by itself and never grows.
When a window has no free slot the request is refused (`StoreFull`) rather than a live entry
forgotten. That first happens with about 165,000 live entries (63% of `SLOTS`); an entry lives ~61 s
when the caller's clock agrees with ours (up to 121 s when it is a minute ahead), so it takes some
2,500 requests a second to one service on one host (1,300 with clocks a minute apart).
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from pathlib import Path

from mallee.core.interprocess import FileLock

SLOTS = 1 << 18
WINDOW = 64
_SLOT = struct.Struct("<12sI")  # a nonce, and until when (unix seconds) it is remembered
_EXPIRIES = struct.Struct("<" + "12xI" * WINDOW)  # the expiries of one window's slots
SIZE = (SLOTS + WINDOW) * _SLOT.size  # windows do not wrap: the last starts at SLOTS - 1


class StoreFull(Exception):
    """Every slot a nonce may take holds a live entry: too many requests to remember."""


class NonceStore:
    """The nonces accepted recently: in the file at `path`, shared with every process using that
    file; without a path, in this process's memory only."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._thread_lock = threading.Lock()
        if path is None:
            self._file_lock: FileLock | None = None
            self._map = mmap.mmap(-1, SIZE, flags=mmap.MAP_PRIVATE)  # a forked child gets a copy
            return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._pid = os.getpid()
        self._file_lock = FileLock(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < SIZE:
                os.ftruncate(fd, SIZE)  # zeros (a sparse file); a second process doing the same is harmless
            self._map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)

    def first_use(self, nonce: bytes, until: int, now: int) -> bool:
        """Record `nonce` as seen until `until` (unix seconds, after `now`); False, recording
        nothing, when it is recorded already and not expired. StoreFull when there is no room."""
        if len(nonce) != 12:
            raise ValueError("a nonce is 12 bytes")
        with self._thread_lock:
            lock = self._process_file_lock()
            if lock is not None:
                lock.acquire()
            try:
                return self._record(nonce, until, now)
            finally:
                if lock is not None:
                    lock.release()

    def close(self) -> None:
        self._map.close()
        if self._file_lock is not None:
            self._file_lock.close()

    def _record(self, nonce: bytes, until: int, now: int) -> bool:
        start = int.from_bytes(nonce[:4], "little") % SLOTS * _SLOT.size
        window = self._map[start : start + WINDOW * _SLOT.size]
        expiries = _EXPIRIES.unpack(window)
        at = window.find(nonce)
        while at >= 0:
            if at % _SLOT.size == 0 and expiries[at // _SLOT.size] >= now:
                return False
            at = window.find(nonce, at + 1)
        for i, expiry in enumerate(expiries):
            if expiry < now:  # never used, or its entry expired
                _SLOT.pack_into(self._map, start + i * _SLOT.size, nonce, until)
                return True
        raise StoreFull(f"no room for a nonce among {WINDOW} live ones")

    def _process_file_lock(self) -> FileLock | None:
        """The flock to take: our own, also in a child forked after the store was made (flock
        belongs to an open file, which a fork shares)."""
        if self._file_lock is not None and os.getpid() != self._pid:
            assert self.path is not None
            self._file_lock, self._pid = FileLock(self.path), os.getpid()
        return self._file_lock


def file_for(data_dir: Path, service: str) -> Path:
    """Where a service's processes on this host keep their nonces."""
    return data_dir / "rpc" / f"{service}.nonces"


_configured: Path | None = None
_store: NonceStore | None = None
_creating = threading.Lock()


def keep_in(path: Path | None) -> None:
    """Keep this process's nonces in `path` (supervisor/serve.py, before it serves): every process
    of a service on one host uses the same file. Without it (or with None) they are kept in this
    process's memory, which is enough for a service of one process (the simulated nodes; tests)."""
    global _configured, _store
    with _creating:
        if _store is not None:
            _store.close()
        _configured, _store = path, None


def store() -> NonceStore:
    """This process's store (made at first use, so after any fork)."""
    global _store
    with _creating:
        if _store is None:
            _store = NonceStore(_configured)
        return _store
