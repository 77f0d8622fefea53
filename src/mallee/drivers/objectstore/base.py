"""The object-store driver contract: where Walrus keeps object bytes (metadata lives in its DB).

Walrus writes every stored version (and every multipart part) as a new blob with a locator of the
driver's choosing, records the locator in its database in the same transaction that makes the
object visible, and deletes blobs only after the database no longer points at them. So a driver
never overwrites: it creates, reads and deletes whole blobs.

Contract for every implementation (checked by tests/unit/drivers/test_objectstore_contract.py):
- `writer()` returns a BlobWriter; nothing is visible until `commit()`, which returns the locator
  only once the bytes are durable. `abort()` (or a crash) leaves nothing readable behind.
- `read(locator, offset, length)` returns the bytes' location; a missing blob raises BlobNotFound.
- `delete(locator)` is idempotent: deleting a missing blob succeeds.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from mallee.core.context import FileBody


class BlobNotFound(Exception):
    pass


@dataclass(frozen=True)
class StoredBlob:
    locator: str
    size: int


class BlobWriter(abc.ABC):
    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def commit(self) -> StoredBlob:
        """Make the bytes durable and return where they are."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Forget what was written (idempotent; also fine after a failed commit)."""

    @property
    @abc.abstractmethod
    def size(self) -> int: ...


class ObjectStore(abc.ABC):
    # What the driver can do: "file_body" - reads are files the server can send directly.
    capabilities: Mapping[str, bool] = {}

    @abc.abstractmethod
    def writer(self) -> BlobWriter: ...

    @abc.abstractmethod
    def read(self, locator: str, offset: int, length: int) -> FileBody | Iterator[bytes]: ...

    @abc.abstractmethod
    def delete(self, locator: str) -> None: ...

    @abc.abstractmethod
    def exists(self, locator: str) -> bool: ...

    def cleanup_incomplete(self) -> int:
        """Remove what crashed writers left behind; returns how many were removed."""
        return 0
