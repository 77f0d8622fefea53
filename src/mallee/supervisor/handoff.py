"""Handing a client's connection from the front door to Walrus.

The public endpoint is the CLC's port, but S3 bodies are large and S3 calls are many: relaying them
through the CLC costs a second copy of every byte and a second request parse. So the CLC reads the
first request head of each new connection and, when it is S3, passes the socket itself (with the
bytes it already read) to a Walrus worker process over a local unix socket (SCM_RIGHTS), the
workers in turn. That worker then serves the connection as if it had accepted it, with the
client's own address. A connection the
CLC keeps (hand-off refused, Walrus elsewhere or down, or S3 only after a query-API request) still
works: its S3 requests are relayed (rpc/relay.py), and Walrus relays the query APIs it sees on a
handed-over connection back to the CLC.
"""

from __future__ import annotations

import array
import asyncio
import errno
import hashlib
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from uvicorn.config import Config as ServerConfig
from uvicorn.server import ServerState

from mallee.core.config import Config
from mallee.core.context import HttpRequest
from mallee.rpc.transport import request_from_scope
from mallee.supervisor.door import Door, DoorProtocol, door_protocol

log = logging.getLogger(__name__)

# What one message may carry: the head plus the body bytes read with it (uvloop reads 256 KiB at
# most). The sender's buffer is raised to fit it (root may exceed net.core.wmem_max).
MAX_MESSAGE = 512 * 1024
SEND_BUFFER = 4 * MAX_MESSAGE
SO_SNDBUFFORCE = 32  # Linux; not in Python's socket module


def socket_name(cfg: Config, worker: int) -> bytes:
    """A Walrus worker's hand-off socket, in the abstract namespace (no path-length limit, nothing
    left on disk); unique per data directory, port and worker, and only the same user may use it
    (SO_PEERCRED)."""
    digest = hashlib.sha256(f"{cfg.data_dir}:{cfg.port('walrus')}".encode()).hexdigest()[:20]
    return f"\0mallee-walrus-handoff-{digest}-{worker}".encode()


def socket_names(cfg: Config) -> list[bytes]:
    """Every Walrus worker's hand-off socket on this host."""
    return [socket_name(cfg, worker) for worker in range(cfg.walrus_worker_count)]


def parse_head(head: bytes, client: tuple[str, int] | None) -> HttpRequest | None:
    """The request line and headers of a raw HTTP/1.x head (without its blank line), or None when
    it is not one (the HTTP server will answer it)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    target = parts[1]
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            return None
        headers.append((name.lower(), value.strip()))
    path, _, query = target.partition(b"?")
    scope: dict[str, Any] = {
        "method": parts[0].decode("latin-1"),
        "raw_path": path,
        "path": path.decode("latin-1"),
        "query_string": query,
        "headers": headers,
        "client": client,
    }
    return request_from_scope(scope)


class HandoffSender:
    """The CLC's end: one connection to each Walrus worker's hand-off socket, opened on first use
    and again after that worker restarts; new connections go to the workers in turn, skipping one
    that is down or behind. Never blocks the event loop: any difficulty means "keep the connection"."""

    def __init__(self, names: Sequence[bytes]) -> None:
        self.names = list(names)
        self.socks: list[socket.socket | None] = [None] * len(self.names)
        self.turn = 0

    def _connect(self, name: bytes) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SEND_BUFFER)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            sock.connect(name)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def send(self, fd: int, data: bytes) -> bool:
        """Pass the connection `fd` and the bytes already read from it; True when a worker has it."""
        if len(data) > MAX_MESSAGE:
            return False
        for _ in range(len(self.names)):
            worker, self.turn = self.turn, (self.turn + 1) % len(self.names)
            if self._send_to(worker, fd, data):
                return True
        return False

    def _send_to(self, worker: int, fd: int, data: bytes) -> bool:
        fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]
        for attempt in range(2):  # a second try on a fresh connection if the worker restarted
            try:
                sock = self.socks[worker]
                if sock is None:
                    sock = self.socks[worker] = self._connect(self.names[worker])
                return sock.sendmsg([data], fds) == len(data)
            except BlockingIOError:
                return False  # this worker is behind
            except OSError as exc:
                self._drop(worker)
                if attempt or exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.EMSGSIZE):
                    return False
        return False

    def _drop(self, worker: int) -> None:
        sock = self.socks[worker]
        if sock is not None:
            sock.close()
            self.socks[worker] = None

    def close(self) -> None:
        for worker in range(len(self.names)):
            self._drop(worker)


def sending_protocol(
    wanted: Callable[[HttpRequest], bool], sender: HandoffSender, door: Door
) -> type[DoorProtocol]:
    """The front door's HTTP protocol: the door's (supervisor/door.py), except that a new
    connection whose first request `wanted` says belongs to Walrus is handed to it before anything
    is parsed."""

    class FrontDoorProtocol(DoorProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.first: bytes | None = b""  # the connection's first bytes, until it is decided

        def data_received(self, data: bytes) -> None:
            if self.first is None:
                super().data_received(data)
                return
            self.first += data
            end = self.first.find(b"\r\n\r\n")
            if end < 0 and len(self.first) <= self.door.max_header_bytes:
                return  # the head is not complete yet
            buffered, self.first = self.first, None
            if end >= 0 and self._hand_off(buffered, end):
                return
            super().data_received(buffered)

        def head_too_slow(self) -> None:
            if self.first:  # what came of the first head, parsed for the answer's shape
                buffered, self.first = self.first, None
                super().data_received(buffered)
            super().head_too_slow()

        def _hand_off(self, buffered: bytes, end: int) -> bool:
            try:
                request = parse_head(buffered[:end], self.client)
                if request is None or not wanted(request):
                    return False
            except Exception:  # a head we cannot route here: the CLC serves (and judges) it
                log.exception("could not route a connection's first request head")
                return False
            sock = self.transport.get_extra_info("socket")
            if sock is None or not sender.send(sock.fileno(), buffered):
                return False
            # Walrus holds its own descriptor now: closing ours neither resets nor shuts down the
            # connection (no shutdown(), no lingering abort).
            self.transport.close()
            return True

    return door_protocol(door, FrontDoorProtocol)


class PrimedProtocol(DoorProtocol):
    """uvicorn's protocol for a handed-over connection: the bytes the CLC already read are parsed
    first, before anything the socket delivers later."""

    def __init__(self, *args: Any, first: bytes, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first = first

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.data_received(self.first)


class HandoffReceiver:
    """Walrus's end: accepts the CLC's connection(s) to its hand-off socket and serves every socket
    passed on them with the HTTP server's own protocol."""

    def __init__(self, name: bytes, door: Door) -> None:
        self.name = name
        self.protocol = door_protocol(door, PrimedProtocol)
        self.listener: socket.socket | None = None
        self.peers: list[socket.socket] = []
        self.make_protocol: Callable[[bytes], asyncio.Protocol] | None = None

    def start(self, config: ServerConfig, state: ServerState, app_state: dict[str, Any]) -> None:
        def make_protocol(first: bytes) -> asyncio.Protocol:
            return self.protocol(config=config, server_state=state, app_state=app_state, first=first)

        self.make_protocol = make_protocol
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            listener.bind(self.name)
        except OSError as exc:  # another Walrus of this data directory: the CLC relays instead
            log.warning("no connection hand-off from the front door: %s", exc)
            listener.close()
            return
        listener.listen(8)
        listener.setblocking(False)
        self.listener = listener
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)

    def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in [*self.peers, *([self.listener] if self.listener else [])]:
            loop.remove_reader(sock.fileno())
            sock.close()
        self.peers, self.listener = [], None

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            peer, _ = self.listener.accept()
        except BlockingIOError:
            return
        creds = peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        if int.from_bytes(creds[4:8], "little") != os.getuid():
            log.warning("refused a hand-off connection from another user")
            peer.close()
            return
        peer.setblocking(False)
        self.peers.append(peer)
        asyncio.get_running_loop().add_reader(peer.fileno(), self._receive, peer)

    def _receive(self, peer: socket.socket) -> None:
        try:
            data, fds, flags, _ = socket.recv_fds(peer, MAX_MESSAGE, 1)
        except BlockingIOError:
            return
        except OSError:
            data, fds, flags = b"", [], 0
        if not data and not fds:  # the CLC went away
            asyncio.get_running_loop().remove_reader(peer.fileno())
            self.peers.remove(peer)
            peer.close()
            return
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != 1:
            for fd in fds:
                os.close(fd)  # the client sees its connection close; never serve a mangled stream
            return
        conn = socket.socket(fileno=fds[0])
        conn.setblocking(False)
        asyncio.get_running_loop().create_task(self._serve(conn, data))

    async def _serve(self, conn: socket.socket, first: bytes) -> None:
        assert self.make_protocol is not None
        make = self.make_protocol
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: make(first), conn)
        except OSError:
            conn.close()
