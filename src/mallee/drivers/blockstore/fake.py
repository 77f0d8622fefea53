"""An in-memory block store honouring the contract, for unit tests and simulated zones.

It keeps sizes and exports, not bytes (so it has no `open_path` files, and a point-in-time copy is
all zeros), unless made with `keep_bytes` (then each volume is a plain file in `state_dir/bytes/`, for
snapshot tests without root). With a `state_dir` its state is kept on disk (`fake-blockstore.json`)
and read back by a new driver, as the real driver's volumes and export servers outlive a restarted SC.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from mallee.core.files import write_atomically
from mallee.drivers.blockstore.base import (
    GIB,
    BlockStore,
    BlockStoreError,
    Endpoint,
    Export,
    ExportedElsewhere,
    VolumeExists,
    VolumeNotFound,
    check_size,
    check_volume_id,
)

_ZEROS = bytes(1 << 20)


class _Saved(msgspec.Struct):
    volumes: dict[str, int] = {}
    exports: dict[str, str] = {}


class FakeBlockStore(BlockStore):
    def __init__(self, state_dir: Path | None = None, keep_bytes: bool = False) -> None:
        self._lock = threading.RLock()
        self._scratch = Path(state_dir or tempfile.gettempdir())
        self._bytes = self._scratch / "bytes" if keep_bytes else None
        self._file = state_dir / "fake-blockstore.json" if state_dir is not None else None
        self._state = _Saved()
        if self._file is not None and self._file.exists():
            self._state = msgspec.json.decode(self._file.read_bytes(), type=_Saved)
        self.capabilities = {
            "local_files": keep_bytes,
            "exports_outlive_process": state_dir is not None,
            "bound_exports": True,
        }

    def create(self, volume_id: str, size_gib: int, source: Path | None = None) -> None:
        check_volume_id(volume_id)
        check_size(size_gib)
        with self._lock:
            existing = self._state.volumes.get(volume_id)
            if existing is not None:
                if existing != size_gib:
                    raise VolumeExists(f"{volume_id} exists with {existing} GiB, not {size_gib}")
                return
            if source is not None and source.stat().st_size > size_gib * GIB:
                raise BlockStoreError(f"{source} is larger than {size_gib} GiB")
            if self._bytes is not None:
                self._bytes.mkdir(parents=True, exist_ok=True)
                with open(self._bytes / volume_id, "wb") as f:
                    if source is not None:
                        _copy_sparse(source, f)
                    f.truncate(size_gib * GIB)
            self._state.volumes[volume_id] = size_gib
            self._save()

    def delete(self, volume_id: str) -> None:
        check_volume_id(volume_id)
        with self._lock:
            self._state.exports.pop(volume_id, None)
            self._state.volumes.pop(volume_id, None)
            if self._bytes is not None:
                (self._bytes / volume_id).unlink(missing_ok=True)
            self._save()

    def resize(self, volume_id: str, size_gib: int) -> None:
        check_volume_id(volume_id)
        check_size(size_gib)
        with self._lock:
            current = self._require(volume_id)
            if size_gib < current:
                raise BlockStoreError(f"{volume_id} is {current} GiB; volumes only grow")
            if self._bytes is not None:
                os.truncate(self._bytes / volume_id, size_gib * GIB)
            self._state.volumes[volume_id] = size_gib
            self._save()

    def size_gib(self, volume_id: str) -> int | None:
        check_volume_id(volume_id)
        return self._state.volumes.get(volume_id)

    def volumes(self) -> dict[str, int]:
        return dict(self._state.volumes)

    def export(self, volume_id: str, node: str) -> Export:
        check_volume_id(volume_id)
        if not node:
            raise BlockStoreError("export needs the node's address")
        with self._lock:
            self._require(volume_id)
            current = self._state.exports.get(volume_id)
            if current is not None and current != node:
                raise ExportedElsewhere(f"{volume_id} is exported to {current}; detach it there first")
            self._state.exports[volume_id] = node
            self._save()
        return Export(protocol="nbd", name=volume_id, endpoints=(Endpoint(socket=f"/fake/{node}.sock"),))

    def unexport(self, volume_id: str) -> None:
        check_volume_id(volume_id)
        with self._lock:
            if self._state.exports.pop(volume_id, None) is not None:
                self._save()

    def exports(self) -> dict[str, str]:
        return dict(self._state.exports)

    def open_path(self, volume_id: str) -> Path | None:
        check_volume_id(volume_id)
        self._require(volume_id)
        return self._bytes / volume_id if self._bytes is not None else None

    @contextlib.contextmanager
    def point_in_time(self, volume_id: str) -> Iterator[Path]:
        check_volume_id(volume_id)
        self._scratch.mkdir(parents=True, exist_ok=True)
        target = self._scratch / f"{volume_id}.{secrets.token_hex(4)}.pit"
        try:
            with self._lock:
                size = self._require(volume_id) * GIB
                with open(target, "wb") as f:
                    if self._bytes is not None:
                        _copy_sparse(self._bytes / volume_id, f)
                    f.truncate(size)
            yield target
        finally:
            target.unlink(missing_ok=True)

    def teardown(self) -> None:
        with self._lock:  # the "servers" stop, so every export goes with them
            self._state.exports.clear()
            self._save()

    def _require(self, volume_id: str) -> int:
        size = self._state.volumes.get(volume_id)
        if size is None:
            raise VolumeNotFound(f"no volume {volume_id}")
        return size

    def _save(self) -> None:
        if self._file is not None:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self._file, msgspec.json.encode(self._state), 0o600, fsync=True)


def _copy_sparse(source: Path, dst: BinaryIO) -> None:
    with open(source, "rb") as src:
        while block := src.read(len(_ZEROS)):
            if block != _ZEROS[: len(block)]:
                dst.write(block)
            else:
                dst.seek(len(block), os.SEEK_CUR)
