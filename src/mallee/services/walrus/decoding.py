"""Sending a file stored transformed (encrypted at rest): its bytes mapped a window at a time and
decoded a chunk at a time, so that a large object never holds much memory.

A large one is decoded and sent on a thread of its own, which writes to the connection's socket
itself (the door's `write_body`): each 1 MiB chunk is decrypted into one reused buffer and goes to
the socket while it is still in the CPU's cache, and neither step holds the event loop or waits
for it. The cipher and the socket both release Python's lock. A 256 MiB GET runs 1.16-1.34x as
fast as when a thread decrypted ahead and the loop wrote the socket (bench/README.md).
A small one, or any once `MAX_THREADS` such threads are busy or the server offers no
`write_body`, is decoded on the loop between sends.
"""

from __future__ import annotations

import mmap
from collections.abc import Awaitable, Callable, Generator, Iterator
from typing import BinaryIO

from mallee.core.context import FileBody

WINDOW = 4 * 1024 * 1024  # mapped at once (see `mapped`)
# Decoded at once: on the loop, small enough that the loop is never held long (~70 us) and the
# output is still in the CPU's cache when the socket copies it; on a thread, larger (fewer calls).
LOOP_CHUNK = 256 * 1024
THREAD_CHUNK = 1024 * 1024
THREADED_FROM = 4 * 1024 * 1024  # smaller files: starting a thread costs more than it saves
MAX_THREADS = 8  # per worker process; more large encrypted GETs at once decode on the loop
SLACK = 15  # what a cipher's update_into needs beyond the input's length (an AES block less one)

Write = Callable[[memoryview], None]
# The door's offer (supervisor/door.py, DoorProtocol.write_body): run fill(write) on a thread
# writing `length` bytes of the body to the socket; False when it cannot now.
WriteBody = Callable[[Callable[[Write], None], int], Awaitable[bool]]

_threads = 0  # sending threads of this process, counted on the event loop's thread only


def mapped(f: BinaryIO, offset: int, length: int) -> memoryview:
    """Bytes offset..offset+length of `f`, mapped rather than read: the socket copies them from
    the page cache once (a read would copy them twice), about 20 % more GET throughput here. Blobs
    are never truncated, so the mapping cannot fault; it is unmapped when the last view goes."""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    window = mmap.mmap(
        f.fileno(),
        offset + length - start,
        flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
        prot=mmap.PROT_READ,
        offset=start,
    )
    return memoryview(window)[offset - start :]


async def send_on_a_thread(file: FileBody, f: BinaryIO, write_body: WriteBody | None) -> bool:
    """Send the bytes `file` names, decoded (`file.decode` is set), from a thread that writes to
    the socket; False when that is not worth it or not possible (send `decoded` from the loop)."""
    global _threads
    if write_body is None or file.length < THREADED_FROM or _threads >= MAX_THREADS:
        return False
    _threads += 1
    try:
        return await write_body(lambda write: _write_decoded(file, f, write), file.length)
    finally:
        _threads -= 1


def decoded(file: FileBody, f: BinaryIO) -> Generator[bytes, None, None]:
    """The bytes `file` names, decoded, `LOOP_CHUNK` at a time (each a new bytes object)."""
    assert file.decode is not None
    decoder = file.decode(file.offset)
    for view in _views(file, f, LOOP_CHUNK):
        yield decoder.update(view)


def _write_decoded(file: FileBody, f: BinaryIO, write: Write) -> None:
    """On the sending thread: decode into one buffer, reused, and write it out chunk by chunk."""
    assert file.decode is not None
    decoder = file.decode(file.offset)
    out = bytearray(THREAD_CHUNK + SLACK)
    view = memoryview(out)
    for chunk in _views(file, f, THREAD_CHUNK):
        write(view[: decoder.update_into(chunk, out)])


def _views(file: FileBody, f: BinaryIO, size: int) -> Iterator[memoryview]:
    end = file.offset + file.length
    for window in range(file.offset, end, WINDOW):
        view = mapped(f, window, min(WINDOW, end - window))
        try:
            for start in range(0, len(view), size):
                yield view[start : start + size]
        finally:
            view.release()
