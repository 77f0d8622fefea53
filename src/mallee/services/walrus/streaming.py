"""Request bodies from the event loop to a handler thread, with back-pressure, never whole.

The loop side (`feed`) appends chunks as the client sends them and pauses past `limit` buffered
bytes; the handler thread (`read`) blocks until data arrives. A client that disconnects mid-body
makes `read` raise, so a half-received object is never committed.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]


class ClientDisconnected(Exception):
    pass


class BridgeStream:
    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = 8 * 1024 * 1024) -> None:
        self._loop = loop
        self._limit = limit
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._done = False
        self._broken = False
        self._cond = threading.Condition()
        self._space = asyncio.Event()
        self._space.set()

    # -- event loop side ---------------------------------------------------------------------

    async def feed(self, receive: Receive) -> None:
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self._finish(broken=True)
                    return
                body = message.get("body", b"")
                if body:
                    with self._cond:
                        self._chunks.append(body)
                        self._buffered += len(body)
                        self._cond.notify_all()
                if not message.get("more_body"):
                    self._finish(broken=False)
                    return
                if self._buffered > self._limit:
                    self._space.clear()
                    if self._buffered > self._limit:
                        await self._space.wait()
        except asyncio.CancelledError:
            self._finish(broken=True)
            raise

    def _finish(self, broken: bool) -> None:
        with self._cond:
            self._done = True
            self._broken = broken
            self._cond.notify_all()

    # -- handler thread side -------------------------------------------------------------------

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while not self._chunks and not self._done:
                self._cond.wait()
            if not self._chunks:
                if self._broken:
                    raise ClientDisconnected("the client went away before sending the whole body")
                return b""
            if size < 0:
                data = b"".join(self._chunks)
                self._chunks.clear()
            else:
                data = self._take(size)
            self._buffered -= len(data)
            if self._buffered <= self._limit // 2:
                self._loop.call_soon_threadsafe(self._space.set)
            return data

    def _take(self, size: int) -> bytes:
        first = self._chunks.popleft()
        if len(first) > size:
            self._chunks.appendleft(first[size:])
            return first[:size]
        return first  # one chunk at a time: no copying to merge


class BytesStream:
    """A body already in memory, read like a stream."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else min(len(self._view), self._pos + size)
        data = bytes(self._view[self._pos : end])
        self._pos = end
        return data
