"""Reading an object's bytes while other requests may replace it.

A version's blobs are deleted right after the commit that replaced or deleted the version, so a
request that read a version's row must open its blobs before that happens, and read the key again
when it lost the race. `open_body` opens every blob (range) at once, `reading` retries the read of
row + blobs, and `chunks` (or `copy_blob`) streams from the open files (an open file stays
readable after its name is gone). The row must come from `objects.read_version`: each call is a
fresh snapshot, where the request's own session would keep seeing the row that is gone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from mallee.core.context import FileBody
from mallee.core.errors import CloudError
from mallee.drivers.objectstore.base import BlobNotFound, StoredBlob
from mallee.services.walrus.checksums import Hashers
from mallee.services.walrus.runtime import object_store
from mallee.services.walrus.tables import ObjectVersion

READ_ATTEMPTS = 3
CHUNK = 1024 * 1024

T = TypeVar("T")


def segments(version: ObjectVersion) -> list[tuple[str, int]]:
    """(locator, size) of each blob holding the object's bytes, in order (several for multipart)."""
    if version.locator is not None:
        return [(version.locator, version.size)]
    return [(part[0], int(part[1])) for part in json.loads(version.parts or "[]")]


def open_blob(locator: str, offset: int, length: int) -> FileBody:
    """Bytes offset..offset+length of one blob, its file open; BlobNotFound when it is gone."""
    found = object_store().read(locator, offset, length)
    if not isinstance(found, FileBody):
        raise CloudError("NotImplemented", "this object store cannot stream from files yet", 501)
    try:
        return dataclasses.replace(found, file=found.open())
    except FileNotFoundError:
        raise BlobNotFound(locator) from None


def open_body(version: ObjectVersion, offset: int, length: int) -> tuple[FileBody, ...]:
    """The blobs (or blob ranges) holding bytes offset..offset+length of the object, all open."""
    pieces: list[FileBody] = []
    start = 0
    try:
        for locator, size in segments(version):
            end = start + size
            if end > offset and start < offset + length:
                first = max(offset, start) - start
                pieces.append(open_blob(locator, first, min(offset + length, end) - start - first))
            start = end
    except BaseException:
        close(pieces)
        raise
    return tuple(pieces)


def reading(attempt: Callable[[], T]) -> T:
    """`attempt()` (read a version, then open its blobs), again when an overwrite or delete
    committed in between: the request then answers for the key as it is now, as if it had come a
    moment later."""
    for number in range(READ_ATTEMPTS):
        try:
            return attempt()
        except BlobNotFound:
            if number + 1 == READ_ATTEMPTS:
                raise CloudError(
                    "SlowDown", "The object kept changing while it was read; try again."
                ) from None
    raise AssertionError("unreachable")


def chunks(pieces: Sequence[FileBody]) -> Iterator[bytes]:
    """The bytes of open pieces in order, `CHUNK` at a time; the files are closed at the end."""
    try:
        for piece in pieces:
            f = piece.open()
            position, end = piece.offset, piece.offset + piece.length
            while position < end:
                data = os.pread(f.fileno(), min(CHUNK, end - position), position)
                if not data:
                    raise OSError(f"{piece.path} is shorter than its recorded size")
                position += len(data)
                yield data
    finally:
        close(pieces)


def copy_blob(pieces: Sequence[FileBody], hashers: Hashers) -> tuple[StoredBlob, str]:
    """Write the bytes of open pieces to a new blob (CopyObject, UploadPartCopy), feeding
    `hashers` on the way: (blob, md5 hex). Nothing is left behind when it fails."""
    md5 = hashlib.md5()
    writer = object_store().writer()
    try:
        for chunk in chunks(pieces):
            md5.update(chunk)
            hashers.update(chunk)
            writer.write(chunk)
        return writer.commit(), md5.hexdigest()
    except BaseException:
        writer.abort()
        raise


def close(pieces: Sequence[FileBody]) -> None:
    for piece in pieces:
        if piece.file is not None:
            piece.file.close()
