"""A body written from a thread straight to the socket (DoorProtocol.write_body), on a real uvicorn
server with the door's protocol over loopback: the bytes arrive whole and in order between what
the loop sends, the connection serves the next request, a client that leaves or stops reading
ends the thread and closes the connection, and an error in making the body reaches the app."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from mallee.core.context import WRITE_BODY
from mallee.supervisor import door

BODY = os.urandom(24 * 1024 * 1024)
PREFIX, SUFFIX = b"<head of the body>", b"<its tail>"
CHUNK = 1024 * 1024
LIMITS = door.Door(
    header_seconds=5, max_header_bytes=16384, connections_per_address=64, s3_domain="", default_service="s3"
)


class App:
    """Answers GET /?n with PREFIX, then BODY[:n] from a thread, then SUFFIX; records how."""

    def __init__(self) -> None:
        self.offered: list[bool] = []
        self.written: list[bool | BaseException] = []
        self.source = BODY  # what the thread writes (its first n bytes)
        self.pause = 0.0  # after each chunk
        self.broken = False  # raise after the first chunk
        self.finished = threading.Event()
        self.instead: Callable[..., Any] | None = None  # another app, for one test

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if self.instead is not None:
            await self.instead(scope, receive, send)
            return
        write_body = scope.get("extensions", {}).get(WRITE_BODY)
        self.offered.append(write_body is not None)
        n = int(scope["query_string"] or len(self.source))
        headers = [(b"content-length", str(len(PREFIX) + n + len(SUFFIX)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["method"] == "GET":
            await send({"type": "http.response.body", "body": PREFIX, "more_body": True})
            try:
                written = await write_body(fill_from(self.source[:n], self.pause, self.broken), n)
            except Exception as exc:
                self.written.append(exc)
                raise
            self.written.append(written)
            if not written:
                await send({"type": "http.response.body", "body": self.source[:n], "more_body": True})
            await send({"type": "http.response.body", "body": SUFFIX, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        self.finished.set()


def fill_from(
    data: bytes, pause: float = 0.0, broken: bool = False
) -> Callable[[Callable[[memoryview], None]], None]:
    def fill(write: Callable[[memoryview], None]) -> None:
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            write(view[start : start + CHUNK])
            if broken:
                raise ValueError("the blob is damaged")
            time.sleep(pause)

    return fill


@pytest.fixture
def served() -> Iterator[tuple[App, int]]:
    """The app behind uvicorn with the door's protocol, on a loop of its own thread."""
    app = App()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, http=door.door_protocol(LIMITS), lifespan="off", log_level="warning", loop="asyncio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[listener])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield app, listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    return s


def request(s: socket.socket, method: str = "GET", n: int | None = None) -> None:
    query = "" if n is None else f"?{n}"
    s.sendall(f"{method} /{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def response(s: socket.socket, method: str = "GET") -> tuple[bytes, bytes]:
    """(head, body) of one response on `s`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "closed before the head"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[
            1
        ]
    )
    if method == "HEAD":
        return head, body
    buf = bytearray(body)
    while len(buf) < length:
        chunk = s.recv(1024 * 1024)
        assert chunk, f"closed after {len(buf)} of {length} bytes"
        buf += chunk
    assert len(buf) == length
    return head, bytes(buf)


def body_threads() -> int:
    return sum(t.name == "door-body" for t in threading.enumerate())


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_the_body_arrives_whole_between_the_loops_bytes_and_the_connection_goes_on(
    served: tuple[App, int],
) -> None:
    app, port = served
    with connect(port) as s:
        request(s)
        assert response(s)[1] == PREFIX + BODY + SUFFIX
        request(s, n=5 * CHUNK + 17)  # the same connection: keep-alive after a thread's body
        assert response(s)[1] == PREFIX + BODY[: 5 * CHUNK + 17] + SUFFIX
        request(s, "HEAD")
        assert response(s, "HEAD")[1] == b""
    assert app.offered == [True, True, False]  # only to GET requests
    assert app.written == [True, True]
    assert wait_for(lambda: body_threads() == 0)


def test_more_than_the_content_length_is_refused_to_the_thread(served: tuple[App, int]) -> None:
    """uvicorn's count of the body still holds: a thread may not write past Content-Length."""
    app, port = served

    async def too_long(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        app.written.append(await scope["extensions"][WRITE_BODY](fill_from(b"x" * 11), 11))
        await send({"type": "http.response.body", "body": b"0123456789"})

    app.instead = too_long
    with connect(port) as s:
        request(s)
        assert response(s)[1] == b"0123456789"
    assert app.written == [False]


@pytest.mark.parametrize("written", [CHUNK - 1, CHUNK + 1])
def test_a_fill_that_writes_another_length_than_promised_cuts_the_response_off(
    served: tuple[App, int], written: int
) -> None:
    """The framing must hold: more bytes than promised are never sent, fewer end the connection."""
    app, port = served

    async def wrong(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % CHUNK)]}
        )
        try:
            app.written.append(await scope["extensions"][WRITE_BODY](fill_from(BODY[:written]), CHUNK))
        except RuntimeError as exc:
            app.written.append(exc)
            raise

    app.instead = wrong
    with connect(port) as s:
        request(s)
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(1024 * 1024):
                got += chunk
    body = got.partition(b"\r\n\r\n")[2]
    assert body == BODY[: min(written, CHUNK)]  # and then the connection closed
    assert wait_for(lambda: len(app.written) == 1)
    assert isinstance(app.written[0], RuntimeError)


def test_a_client_that_leaves_ends_the_thread_and_the_response(served: tuple[App, int]) -> None:
    app, port = served
    app.source, app.pause = BODY * 4, 0.001
    with connect(port) as s:
        request(s)
        assert s.recv(65536)
    # The client is gone: the thread's next sends fail, the connection closes, and the app ends
    # normally (its remaining sends are dropped, as uvicorn drops them after a disconnect).
    assert app.finished.wait(10)
    assert app.written == [True]
    assert wait_for(lambda: body_threads() == 0)
    with connect(port) as s:  # the server goes on
        request(s, n=100)
        assert response(s)[1] == PREFIX + app.source[:100] + SUFFIX


def test_a_client_that_stops_reading_is_given_up_on(
    served: tuple[App, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, port = served
    monkeypatch.setattr(door, "WRITE_SECONDS", 0.5)
    with connect(port) as s:
        request(s)
        s.recv(100)  # and no more: the socket's buffers fill and the thread's send times out
        assert app.finished.wait(10)
        assert app.written == [True]
        assert wait_for(lambda: body_threads() == 0)
        s.settimeout(5)
        got = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(1024 * 1024):
                got += len(chunk)
        assert got < len(BODY)  # cut off, and closed


def test_an_error_making_the_body_reaches_the_app_and_closes_the_connection(
    served: tuple[App, int],
) -> None:
    app, port = served
    app.broken = True
    with connect(port) as s:
        request(s)
        s.settimeout(10)
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(1024 * 1024):
                got += chunk
    assert len(got) < len(PREFIX) + len(BODY)  # cut off, and the connection closed
    assert wait_for(lambda: len(app.written) == 1)
    assert isinstance(app.written[0], ValueError)
    assert wait_for(lambda: body_threads() == 0)
