"""The machine's own limits for bench/s3.py, measured with the same client as Walrus.

Run as a process (`python bench/_s3limits.py PORT FILE DIR`), it is a tiny one-connection-at-a-time
HTTP server:

- GET: answers 200 and sends FILE with `os.sendfile`, or for the path COPY_PATH by reading it into
  one 1 MiB buffer and sending that (on loopback, either can be the faster): the loopback limit,
  what a server that does nothing but send the bytes achieves.
- PUT: reads the body from the socket in 1 MiB chunks (`recv_into`), MD5s it, writes it to a new
  file in DIR and fsyncs it at the end, then answers 200 with the ETag: the read+MD5+write limit,
  the least work a PUT that stores an object durably and returns its ETag must do.

`md5_rate` measures raw MD5 throughput on one core, and `make_file` writes the test objects.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from pathlib import Path

CHUNK = 1024 * 1024
MAX_HEAD = 64 * 1024
MIB = 1024 * 1024
COPY_PATH = "copy"


def make_file(path: Path, size: int) -> str:
    """`size` bytes of incompressible data (one random MiB, repeated); their MD5 in hex."""
    block = os.urandom(CHUNK)
    digest = hashlib.md5()
    with open(path, "wb") as out:
        left = size
        while left > 0:
            piece = block[: min(CHUNK, left)]
            digest.update(piece)
            left -= out.write(piece)
    return digest.hexdigest()


def md5_rate(total: int = 512 * MIB) -> float:
    """MD5 MB/s (MiB/s) on one core, over `total` bytes in 1 MiB updates."""
    block = memoryview(os.urandom(CHUNK))
    digest = hashlib.md5()
    started = time.perf_counter()
    for _ in range(total // CHUNK):
        digest.update(block)
    return total / MIB / (time.perf_counter() - started)


def _read_head(conn: socket.socket) -> tuple[str, str, int, bytes]:
    """Method, path, Content-Length and any body bytes that came with the head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(MAX_HEAD)
        if not chunk:
            raise ConnectionError("client closed before a complete request head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    method, target = lines[0].split(" ")[:2]
    return method, target, length, rest


def _answer(conn: socket.socket, headers: str, body: bytes = b"") -> None:
    conn.sendall(
        f"HTTP/1.1 200 OK\r\n{headers}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


def _send_file(conn: socket.socket, path: Path, copy: bool) -> None:
    size = path.stat().st_size
    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode())
    with open(path, "rb", buffering=0) as source:
        if not copy:
            offset = 0
            while offset < size:
                offset += os.sendfile(conn.fileno(), source.fileno(), offset, size - offset)
            return
        buffer = memoryview(bytearray(CHUNK))
        while count := source.readinto(buffer):
            conn.sendall(buffer[:count])


def _store(conn: socket.socket, length: int, first: bytes, target: Path) -> str:
    """Read `length` body bytes (`first` already came), MD5 them, write and fsync `target`."""
    digest = hashlib.md5(first)
    buffer = memoryview(bytearray(CHUNK))
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, first)
        left = length - len(first)
        while left > 0:
            count = conn.recv_into(buffer[: min(CHUNK, left)])
            if count == 0:
                raise ConnectionError("client closed mid-body")
            chunk = buffer[:count]
            digest.update(chunk)
            written = 0
            while written < count:
                written += os.write(fd, chunk[written:])
            left -= count
        os.fsync(fd)
    finally:
        os.close(fd)
    return digest.hexdigest()


def serve(port: int, path: Path, directory: Path) -> None:
    with socket.create_server(("127.0.0.1", port)) as server:
        while True:
            conn, _ = server.accept()
            with conn:
                try:
                    _handle(conn, path, directory)
                except OSError as exc:  # a readiness probe, or a client that went away
                    print(f"connection failed: {exc}", file=sys.stderr)


def _handle(conn: socket.socket, path: Path, directory: Path) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    method, target_path, length, first = _read_head(conn)
    if method == "GET":
        _send_file(conn, path, copy=target_path.strip("/") == COPY_PATH)
        return
    target = directory / f"limit-put-{time.monotonic_ns()}"
    try:
        _answer(conn, f'ETag: "{_store(conn, length, first, target)}"\r\n')
    finally:
        target.unlink(missing_ok=True)  # measured: the copy is not needed


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
