"""Object bytes as files on a local disk: `<root>/blobs/ab/<uuid>`.

A write goes to `<root>/incoming/<uuid>`, is fsynced, then renamed into place (and the directory
fsynced), so a crash leaves at most an orphan in `incoming/`, never a partial blob under `blobs/`.
Each blob gets a new name: renaming over a live file makes ext4 write back inside the rename.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mallee.core.context import FileBody
from mallee.core.files import fsync_dir
from mallee.drivers.objectstore.base import BlobNotFound, BlobWriter, ObjectStore, StoredBlob


class _FileWriter(BlobWriter):
    def __init__(self, store: FilesystemObjectStore) -> None:
        self._store = store
        self._name = uuid.uuid4().hex
        self._tmp = store.incoming / self._name
        self._file: BinaryIO | None = open(self._tmp, "xb", buffering=0)  # noqa: SIM115 - closed in commit/abort
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        assert self._file is not None, "write after commit/abort"
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            view = view[written or 0 :]
        self._size += len(data)

    def commit(self) -> StoredBlob:
        assert self._file is not None, "commit twice"
        try:
            os.fsync(self._file.fileno())
        finally:
            self._file.close()
            self._file = None
        relative = f"{self._name[:2]}/{self._name}"
        final = self._store.blobs / relative
        final.parent.mkdir(exist_ok=True)
        os.rename(self._tmp, final)
        fsync_dir(final.parent)
        return StoredBlob(relative, self._size)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)


class FilesystemObjectStore(ObjectStore):
    capabilities = {"file_body": True}

    def __init__(self, root: Path, incoming: str = "incoming") -> None:
        """`incoming`: where this process writes blobs until they are whole (one per process of
        a root, since `cleanup_incomplete` empties it)."""
        self.root = root
        self.blobs = root / "blobs"
        self.incoming = root / incoming
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(parents=True, exist_ok=True)

    def _path(self, locator: str) -> Path:
        # Locators are ours ("ab/<32 hex>"); refuse anything else so none can point outside the root.
        head, sep, name = locator.partition("/")
        if not (sep and len(head) == 2 and len(name) == 32 and name.isalnum() and name.startswith(head)):
            raise BlobNotFound(locator)
        return self.blobs / head / name

    def writer(self) -> BlobWriter:
        return _FileWriter(self)

    def read(self, locator: str, offset: int, length: int) -> FileBody | Iterator[bytes]:
        path = self._path(locator)
        if not path.exists():
            raise BlobNotFound(locator)
        return FileBody(path, offset, length)

    def delete(self, locator: str) -> None:
        with contextlib.suppress(BlobNotFound):  # not one of ours: nothing to delete
            self._path(locator).unlink(missing_ok=True)

    def exists(self, locator: str) -> bool:
        try:
            return self._path(locator).exists()
        except BlobNotFound:
            return False

    def cleanup_incomplete(self) -> int:
        removed = 0
        for leftover in self.incoming.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed
