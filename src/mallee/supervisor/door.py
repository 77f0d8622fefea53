"""The public endpoint's HTTP protocol: uvicorn's, with the limits a door facing every client needs.

uvicorn alone waits forever for a head that never completes, answers malformed HTTP in plain text,
lets one address open every descriptor the process has, and closes a connection (a reset, to the
client) while it is still sending a body the answer made moot. Here, on the CLC's and Walrus's
public connections:

- a request head must arrive whole within `header_seconds` (give or take the half-second sweep)
  and fit in `max_header_bytes`;
- between requests a connection may idle `keep_alive_seconds` (uvicorn's own timer);
- one client address holds at most `connections_per_address` connections in each process;
- malformed HTTP (bad framing, conflicting Content-Length and Transfer-Encoding, control
  characters, a head too large or too slow) is answered as AWS would, in the error shape of the
  service the head points to, with a request id;
- an answer given before the request's body was read closes the connection gracefully: the write
  side is shut after the answer, and what the client still sends is read and dropped for a while
  (`LINGER_BYTES`, `LINGER_SECONDS`), so that it reads the answer instead of a reset.

Body timeouts and body sizes are the apps' (they read bodies); every value is a cloud property
(core/config.py, "The door's limits").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import logging
import os
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from mallee.core import ids
from mallee.core.config import Config
from mallee.core.context import WRITE_BODY, HttpRequest
from mallee.core.errors import CloudError
from mallee.protocol import routing
from mallee.protocol.serializer import serialize_error
from mallee.protocol.specs import load_service
from mallee.rpc.transport import REQUEST_TIMEOUT, request_from_scope

log = logging.getLogger(__name__)

LINGER_BYTES = 8 * 1024 * 1024  # what is read and dropped of a body after its request was answered
LINGER_SECONDS = 10.0  # and for how long at most
# A body written from a thread (see DoorProtocol.write_body) gives up when the client takes no
# bytes for this long; the connection then closes.
WRITE_SECONDS = 60.0

# Open public connections per client address, in this process.
_open: Counter[str] = Counter()
# Connections waiting for a request head, and when it must have come (loop time). One sweep a
# SWEEP_SECONDS for all of them, rather than a timer per request (~2 µs each on the hot path).
_heads: dict[DoorProtocol, float] = {}
SWEEP_SECONDS = 0.5
_sweeping: list[asyncio.AbstractEventLoop] = []


def _sweep() -> None:
    loop = asyncio.get_running_loop()
    loop.call_later(SWEEP_SECONDS, _sweep)
    now = loop.time()
    for protocol, deadline in list(_heads.items()):
        if deadline <= now:
            try:
                protocol.head_too_slow()
            except Exception:  # one broken connection must not stop the sweep of the others
                log.exception("closing a connection whose head was late failed")
                _heads.pop(protocol, None)


def _ensure_sweeping(loop: asyncio.AbstractEventLoop) -> None:
    if loop not in _sweeping:
        _sweeping.append(loop)
        loop.call_later(SWEEP_SECONDS, _sweep)


@dataclass(frozen=True)
class Door:
    """What a door protocol needs to know: its limits, and whose errors it answers by default."""

    header_seconds: float
    max_header_bytes: int
    connections_per_address: int
    s3_domain: str
    default_service: str  # the shape of an answer given before any head came: "ec2" or "s3"

    @classmethod
    def of(cls, cfg: Config, default_service: str) -> Door:
        return cls(
            header_seconds=cfg.header_seconds,
            max_header_bytes=cfg.max_header_bytes,
            connections_per_address=cfg.connections_per_address,
            s3_domain=cfg.s3_domain,
            default_service=default_service,
        )

    def answer(self, request: HttpRequest | None, err: CloudError) -> bytes:
        """A whole HTTP/1.1 error response that closes its connection, in the shape of the service
        the (partial) head points to."""
        service = self.default_service
        if request is not None:
            try:
                service = routing.classify(request, self.s3_domain).shape
            except Exception:  # a head too broken to route: the door's own shape
                log.debug("no service for a malformed head", exc_info=True)
        response = serialize_error(load_service(service), err, ids.request_id())
        lines = [f"HTTP/1.1 {response.status} {http.HTTPStatus(response.status).phrase}"]
        lines += [f"{name}: {value}" for name, value in response.headers]
        lines += [f"Content-Length: {len(response.body)}", "Connection: close", "", ""]
        return "\r\n".join(lines).encode("latin-1") + response.body


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a head the door refuses (`err` says why)."""

    def __init__(self, err: CloudError) -> None:
        super().__init__(err.message)
        self.err = err


class _Lingering:
    """The connection as uvicorn sees it: closing it while the request's body is still coming
    lingers (see DoorProtocol.close_gracefully) instead of resetting the client."""

    def __init__(self, real: asyncio.Transport, protocol: DoorProtocol) -> None:
        self.real = real
        self.protocol = protocol
        # What uvicorn calls on every request, bound once (not looked up through __getattr__).
        self.write = real.write
        self.get_extra_info = real.get_extra_info
        self.pause_reading = real.pause_reading
        self.resume_reading = real.resume_reading

    def close(self) -> None:
        self.protocol.close_gracefully()

    def is_closing(self) -> bool:
        return self.real.is_closing() or self.protocol.lingering

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class DoorProtocol(HttpToolsProtocol):
    """uvicorn's protocol with the door's limits; `door` is set on a subclass by `door_protocol`."""

    door: Door

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url = b""  # uvicorn sets it at the first request's start
        self.real: asyncio.Transport | None = None
        self.address: str | None = None  # counted in _open while set
        self.head_bytes = 0  # of the head being read, as far as counted (see data_received)
        self.lingering = False
        self.linger_left = LINGER_BYTES

    # -- the connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.real = transport
        super().connection_made(cast(asyncio.Transport, _Lingering(transport, self)))
        address = self.client[0] if self.client else ""
        if _open[address] >= self.door.connections_per_address:
            code = "SlowDown" if self.door.default_service == "s3" else "RequestLimitExceeded"
            message = f"Too many open connections from {address}; close some and retry."
            self._refuse(None, CloudError(code, message), linger=False)
            return
        self.address = address
        _open[address] += 1
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self.address is not None:
            _open[self.address] -= 1
            if _open[self.address] <= 0:
                del _open[self.address]
            self.address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:  # the answer is out: drop what the client still sends, up to a point
            self.linger_left -= len(data)
            if self.linger_left < 0 and self.real is not None:
                self.real.close()
            return
        self._unset_keepalive_if_required()
        reading_head = self in _heads
        if reading_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol upgrades here: the request is served as plain HTTP
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a parser callback raised
            if isinstance(cause, _HeadRefused):
                err = cause.err
            elif isinstance(exc, httptools.HttpParserInvalidURLError):
                err = CloudError("InvalidURI", "Couldn't parse the specified URI.")
            else:
                err = CloudError("InvalidRequest", f"The request is not valid HTTP/1.1: {exc}.")
            self._refuse(self._partial_request(), err)
            return
        if reading_head and self in _heads and self.head_bytes > self.door.max_header_bytes:
            self._refuse(self._partial_request(), self._head_too_large())  # and it still comes

    def send_400_response(self, msg: str) -> None:  # uvicorn's plain-text answer, in AWS's shape
        self._refuse(self._partial_request(), CloudError("InvalidRequest", msg))

    def close_gracefully(self) -> None:
        """Close, or linger when the client is still sending a body the answer made moot."""
        if self.real is None or self.real.is_closing() or self.lingering:
            return
        if self.cycle is None or not self.cycle.more_body or self.parser is None:
            self.real.close()
        else:
            self._linger()

    def _linger(self) -> None:
        """Shut the write side after what was written, then drop what the client still sends (up
        to LINGER_BYTES, for LINGER_SECONDS at most) before closing: closing with unread bytes
        would reset the connection, and the client might never read its answer."""
        real = self.real
        assert real is not None
        self.lingering = True
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        try:
            real.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            real.close()
            return
        with contextlib.suppress(RuntimeError):
            real.resume_reading()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, real.close)

    # -- the head ------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_bytes = 0
        if self not in _heads:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.door.max_header_bytes:
            raise _HeadRefused(self._head_too_large())
        try:
            self.url.decode("ascii")
        except UnicodeDecodeError:
            raise _HeadRefused(CloudError("InvalidURI", "Couldn't parse the specified URI.")) from None
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope["method"] == "GET":
            offer: dict[str, Any] = {WRITE_BODY: functools.partial(self.write_body, cycle)}
            cycle.scope["extensions"] = cast(dict[str, dict[object, object]], offer)

    def _head_too_large(self) -> CloudError:
        message = f"Your request's headers exceed the maximum of {self.door.max_header_bytes} bytes."
        return CloudError("RequestHeaderSectionTooLarge", message)

    def _arm_head_timer(self) -> None:
        loop = asyncio.get_running_loop()
        _heads[self] = loop.time() + self.door.header_seconds
        _ensure_sweeping(loop)

    def _cancel_head_timer(self) -> None:
        _heads.pop(self, None)

    def head_too_slow(self) -> None:
        """The sweep found this connection's head late."""
        _heads.pop(self, None)
        if self.real is None or self.real.is_closing():
            return
        if self.url or self.headers:  # part of a head came: say why the connection closes
            err = CloudError("RequestTimeout", REQUEST_TIMEOUT)
            self._refuse(self._partial_request(), err, linger=False)
        else:
            self.real.close()

    # -- bodies written from a thread -----------------------------------------------------------

    async def write_body(
        self, cycle: RequestResponseCycle, fill: Callable[[Callable[[memoryview], None]], None], length: int
    ) -> bool:
        """Write the next `length` bytes of `cycle`'s body on a thread: `fill(write)` runs there and
        calls `write` with them, in order, which sends them straight to the socket (blocking).

        For a body that costs CPU to make (Walrus decrypting an object): made and sent on one
        thread, each chunk goes to the socket while it is still in the CPU's cache, and neither the
        making nor the copying holds the event loop or waits for it. False when it cannot be done
        now (the caller sends the bytes as usual): the head is not out yet, the body is chunked or
        shorter. When the client goes or stops reading, the connection closes and the response
        counts as cut off (True)."""
        real = self.real
        if (
            real is None
            or real.is_closing()
            or cycle.disconnected
            or not cycle.response_started
            or cycle.response_complete
            or cycle.chunked_encoding is not False
            or length > cycle.expected_content_length
            or real.get_write_buffer_size()  # the head must be out before the thread writes
        ):
            return False
        loop = asyncio.get_running_loop()
        done: asyncio.Future[BaseException | None] = loop.create_future()
        stop = threading.Event()
        # A descriptor of its own: the transport may close the connection's meanwhile (the client
        # left), and a reused number must never receive these bytes.
        sock = socket.socket(fileno=os.dup(real.get_extra_info("socket").fileno()))
        sock.settimeout(WRITE_SECONDS)  # it stays non-blocking underneath: the loop's reads go on

        sent = 0

        def write(data: memoryview) -> None:
            nonlocal sent
            if stop.is_set():
                raise ConnectionAbortedError("the response was abandoned")
            if sent + len(data) > length:
                raise RuntimeError(f"a body of {length} bytes was given more")
            sock.sendall(data)
            sent += len(data)

        def run() -> None:
            failure: BaseException | None = None
            try:
                fill(write)
                if sent != length:
                    raise RuntimeError(f"a body of {length} bytes was given {sent}")
            except BaseException as exc:  # noqa: BLE001 - reported on the loop
                failure = exc
            finally:
                sock.close()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, done, failure)

        threading.Thread(target=run, name="door-body", daemon=True).start()
        try:
            failure = await asyncio.shield(done)
        finally:
            stop.set()  # cancelled (the server stops): the thread ends at its next chunk
        if failure is None:
            cycle.expected_content_length -= length
            return True
        if not isinstance(failure, OSError):
            raise failure
        log.debug("a body written from a thread was cut off: %s", failure)
        cycle.disconnected = True  # as uvicorn marks it when the connection is lost
        real.close()
        return True

    # -- answers -------------------------------------------------------------------------------

    def _partial_request(self) -> HttpRequest | None:
        """What came of the current request's head, for choosing its error's shape."""
        if not self.url and not self.headers:
            return None
        try:
            method = self.parser.get_method().decode("ascii")
        except Exception:
            method = "GET"
        path, _, query = (self.url or b"/").partition(b"?")
        scope = {
            "method": method,
            "raw_path": path,
            "path": path.decode("latin-1"),
            "query_string": query,
            "headers": list(self.headers or []),
            "client": self.client,
        }
        try:
            return request_from_scope(scope)
        except Exception:
            return None

    def _refuse(self, request: HttpRequest | None, err: CloudError, linger: bool = True) -> None:
        """Answer `err` and close (no keep-alive after a refused head: its framing is unknown);
        `linger` while the client may still be sending the rest of its request."""
        real = self.real
        if real is None or real.is_closing() or self.lingering:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # An answer to an earlier request is still being written: no error can go in between.
            # The stream's framing is lost, so the connection closes once that answer is out.
            self.cycle.keep_alive = False
            self._cancel_head_timer()
            return
        log.debug("refused at the door (%s): %s", err.code, err.message)
        real.write(self.door.answer(request, err))
        if not linger or self.address is None:
            real.close()
        else:
            self._linger()


def _settle(done: asyncio.Future[BaseException | None], failure: BaseException | None) -> None:
    if not done.done():
        done.set_result(failure)


def door_protocol(door: Door, base: type[DoorProtocol] = DoorProtocol) -> type[DoorProtocol]:
    """`base` (DoorProtocol or a subclass) with `door`'s limits."""
    return cast(type[DoorProtocol], type(base.__name__, (base,), {"door": door}))
