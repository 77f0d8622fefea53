"""Request bodies from the event loop to a handler thread, with back-pressure, never whole.

The loop side (`feed`) appends chunks as the client sends them and pauses past `limit` buffered
bytes; the handler thread (`read`) blocks until data arrives. A client that disconnects mid-body
makes `read` raise, so a half-received object is never committed; so does one that pauses longer than
the door waits (`BodyTimedOut`).
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from mallee.rpc.transport import BodyTimeout, receive_within

Receive = Callable[[], Awaitable[dict[str, Any]]]


class ClientDisconnected(Exception):
    pass


class BodyTimedOut(ClientDisconnected):
    """The client stopped sending its body for longer than the door waits."""


class SmallBodies:
    """Reads small request bodies whole, giving up on one that has not come within `seconds`.

    A timer per request (what `asyncio.timeout` sets) costs ~4 µs, 2-3% of a small PUT's CPU; here
    a request only notes its deadline in a dict, and once a second one sweep cancels the reads
    past theirs."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeping = False

    async def read(self, receive: Receive) -> bytes | None:
        """The whole body, or None when it did not come in time."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(1.0, self._sweep, loop)
        self._deadlines[task] = loop.time() + self.seconds
        body: bytes = b""
        try:
            while True:
                message = await receive()
                body += bytes(message.get("body", b""))
                if not message.get("more_body") or message["type"] == "http.disconnect":
                    return body
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            task.uncancel()
            return None
        finally:
            self._deadlines.pop(task, None)
            self._expired.discard(task)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in list(self._deadlines.items()):
            if deadline < now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        loop.call_later(1.0, self._sweep, loop)


class BridgeStream:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, limit: int = 8 * 1024 * 1024, idle_seconds: float = 20.0
    ) -> None:
        self._loop = loop
        self._limit = limit
        self._idle_seconds = idle_seconds
        self._timed_out = False
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
                try:
                    message = await receive_within(receive, self._idle_seconds)
                except BodyTimeout:
                    self._timed_out = True
                    self._finish(broken=True)
                    return
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

    @property
    def timed_out(self) -> bool:
        return self._timed_out

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
                if self._timed_out:
                    raise BodyTimedOut(f"no part of the body came within {self._idle_seconds:g} s")
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
