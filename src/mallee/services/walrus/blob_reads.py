"""Reading an object's bytes while other requests may replace it.

A version's blobs are deleted right after the commit that replaced or deleted the version, so a
request that read a version's row must open its blobs before that happens, and read the key again
when it lost the race. `open_body` opens every blob (range) at once, `reading` retries the read of
row + blobs, and `chunks` (or `copy_body`) streams from the open files (an open file stays
readable after its name is gone). The row must come from `ObjectLayer.read`: each call is a
fresh snapshot, where the request's own session would keep seeing the row that is gone.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

from mallee.core.context import FileBody
from mallee.core.errors import CloudError
from mallee.drivers.objectstore.base import BlobNotFound
from mallee.services.walrus.bodies import BodySink, Cipher, ReceivedBody
from mallee.services.walrus.checksums import Hashers
from mallee.services.walrus.encryption import SegmentKeys, crypt, in_clear, positioned
from mallee.services.walrus.runtime import object_store
from mallee.services.walrus.tables import ObjectVersion

READ_ATTEMPTS = 3
CHUNK = 1024 * 1024

T = TypeVar("T")


# An object's bytes, opened: a small object's bytes themselves (kept in its row), or its blobs
# (blob ranges) with their files open.
Opened = bytes | tuple[FileBody, ...]


def is_multipart(version: ObjectVersion) -> bool:
    """Whether the object was made by a multipart upload (its bytes are its parts' blobs)."""
    return version.locator is None and version.body is None


def segments(version: ObjectVersion) -> list[tuple[str, int]]:
    """(locator, size) of each blob holding the object's bytes, in order (several for multipart,
    none when the bytes are in the row)."""
    if version.locator is not None:
        return [(version.locator, version.size)]
    return [(part[0], int(part[1])) for part in json.loads(version.parts or "[]")]


def part_sizes(version: ObjectVersion) -> list[int]:
    """The size of each of the object's parts (GetObject partNumber): one unless multipart."""
    return [size for _, size in segments(version)] if is_multipart(version) else [version.size]


def open_blob(locator: str, offset: int, length: int, key: bytes | None = None) -> FileBody:
    """Bytes offset..offset+length of one blob, its file open, decrypted as read under `key` (its
    data key when it is stored encrypted); BlobNotFound when it is gone."""
    found = object_store().read(locator, offset, length)
    if not isinstance(found, FileBody):
        raise CloudError("NotImplemented", "this object store cannot stream from files yet", 501)
    decode = functools.partial(positioned, key) if key is not None else None
    try:
        return dataclasses.replace(found, file=found.open(), decode=decode)
    except FileNotFoundError:
        raise BlobNotFound(locator) from None


def open_body(version: ObjectVersion, offset: int, length: int, keys: SegmentKeys = in_clear) -> Opened:
    """Bytes offset..offset+length of the object: from its row, or the blobs (blob ranges) holding
    them, all open; `keys`: the data key of each segment (see ObjectLayer.data_keys)."""
    if version.body is not None:
        data = version.body[offset : offset + length]
        key = keys(0)
        return crypt(key, offset, data) if key is not None else data
    pieces: list[FileBody] = []
    start = 0
    try:
        for number, (locator, size) in enumerate(segments(version)):
            end = start + size
            if end > offset and start < offset + length:
                first = max(offset, start) - start
                key = keys(number)
                pieces.append(open_blob(locator, first, min(offset + length, end) - start - first, key))
            start = end
    except BaseException:
        close(tuple(pieces))
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


def chunks(pieces: Opened) -> Iterator[bytes]:
    """The bytes of open pieces in order, `CHUNK` at a time; the files are closed at the end."""
    if isinstance(pieces, bytes):
        yield pieces
        return
    try:
        for piece in pieces:
            f = piece.open()
            position, end = piece.offset, piece.offset + piece.length
            decoder = piece.decode(position) if piece.decode is not None else None
            while position < end:
                data = os.pread(f.fileno(), min(CHUNK, end - position), position)
                if not data:
                    raise OSError(f"{piece.path} is shorter than its recorded size")
                if decoder is not None:
                    data = decoder.update(data)
                position += len(data)
                yield data
    finally:
        close(pieces)


def copy_body(
    pieces: Opened, hashers: Hashers, keep_up_to: int | None = None, cipher: Cipher | None = None
) -> ReceivedBody:
    """Store the bytes of open pieces anew (CopyObject, UploadPartCopy; `keep_up_to`, `cipher`:
    see BodySink), feeding `hashers` on the way. Nothing is left behind when it fails."""
    md5 = hashlib.md5()
    sink = BodySink(object_store(), keep_up_to, cipher)
    try:
        for chunk in chunks(pieces):
            md5.update(chunk)
            hashers.update(chunk)
            sink.write(chunk)
        stored = sink.commit()
    except BaseException:
        sink.abort()
        raise
    return ReceivedBody(stored, md5.hexdigest(), hashers.values(), sink.stored_md5)


def close(pieces: Opened) -> None:
    if isinstance(pieces, bytes):
        return
    for piece in pieces:
        if piece.file is not None:
            piece.file.close()
