"""Sending a file stored transformed (encrypted at rest): its bytes mapped a window at a time and
decoded a chunk at a time, so that a large object never holds much memory.

A large one is decoded on a thread of its own, a few chunks ahead of the event loop that sends
them: the cipher releases Python's lock while it works, so decoding the next chunk overlaps the
loop's copy of this one into the socket (~20 % more MiB/s for a 256 MiB GET here; bench/README.md).
The overlap is partial because the loop holds Python's lock while it writes to the socket, and the
thread needs it between chunks. A small one, or any once `MAX_THREADS` such threads are busy, is
decoded on the loop between sends. The socket is always written by the loop (the HTTP server's
transport), never by the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import threading
from collections.abc import AsyncGenerator, Generator
from typing import BinaryIO

from mallee.core.context import FileBody

WINDOW = 4 * 1024 * 1024  # mapped at once (see `mapped`)
# Decoded at once: on the loop, small enough that the loop is never held long (~70 us) and the
# output is still in the CPU's cache when the socket copies it; on a thread, larger (fewer hand-offs).
LOOP_CHUNK = 256 * 1024
THREAD_CHUNK = 1024 * 1024
AHEAD = 3  # chunks a thread decodes before the loop has sent them: its memory is 3 MiB at most
THREADED_FROM = 4 * 1024 * 1024  # smaller files: starting a thread costs more than it saves
MAX_THREADS = 8  # per worker process; more large encrypted GETs at once decode on the loop

_threads = 0  # decoding threads of this process, counted on the event loop's thread only


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


async def decoded(file: FileBody, f: BinaryIO) -> AsyncGenerator[bytes, None]:
    """The bytes `file` names, decoded (`file.decode` is set), chunk by chunk. Use it with
    `contextlib.aclosing`, so that a send that fails stops the decoding at once."""
    global _threads
    if file.length < THREADED_FROM or _threads >= MAX_THREADS:
        with contextlib.closing(_decode(file, f, LOOP_CHUNK)) as chunks:
            for chunk in chunks:
                yield chunk
        return
    _threads += 1
    try:
        async with contextlib.aclosing(_decoded_on_a_thread(file, f)) as chunks:
            async for chunk in chunks:
                yield chunk
    finally:
        _threads -= 1


def _decode(file: FileBody, f: BinaryIO, size: int) -> Generator[bytes, None, None]:
    assert file.decode is not None
    end = file.offset + file.length
    for window in range(file.offset, end, WINDOW):
        view = mapped(f, window, min(WINDOW, end - window))
        try:
            for start in range(0, len(view), size):
                yield file.decode(window + start, view[start : start + size])
        finally:
            view.release()


async def _decoded_on_a_thread(file: FileBody, f: BinaryIO) -> AsyncGenerator[bytes, None]:
    loop = asyncio.get_running_loop()
    ready: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
    room = threading.Semaphore(AHEAD)  # a chunk decoded takes one; the loop gives it back once sent
    stop = threading.Event()

    def post(item: bytes | BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(ready.put_nowait, item)

    def produce() -> None:
        try:
            with contextlib.closing(_decode(file, f, THREAD_CHUNK)) as chunks:
                while True:
                    room.acquire()
                    if stop.is_set():
                        return
                    chunk = next(chunks, None)
                    post(chunk)
                    if chunk is None:
                        return
        except BaseException as exc:  # noqa: BLE001 - raised on the loop, where the response is
            post(exc)

    threading.Thread(target=produce, name="walrus-decode", daemon=True).start()
    try:
        while (item := await ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            room.release()
            yield item
    finally:
        stop.set()
        room.release()  # wakes it if it waits for room
