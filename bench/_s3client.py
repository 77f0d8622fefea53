"""A raw-socket S3 client for large objects that stays out of the CPU's way.

Requests are signed once with botocore (SigV4, `x-amz-content-sha256: UNSIGNED-PAYLOAD`, so the
client never hashes a body). A PUT streams its body from a file with `os.sendfile`; a GET reads
its body with `recv_into` into one reused buffer and discards it. The same code talks to Mallee's
public endpoint, to Walrus's own port and to the limit server in bench/_s3limits.py, so their
figures compare like with like. Every transfer uses a new connection.
"""

from __future__ import annotations

import socket
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from _harness import Target
from _loadgen import SignedRequest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials

RECV_BUFFER = 1024 * 1024
MAX_HEAD = 64 * 1024
IO_TIMEOUT = 120.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class Transfer:
    """One large-object request: its answer and how long it took, first byte sent to last received."""

    status: int
    nbytes: int  # body bytes sent (PUT) or received (GET)
    seconds: float
    answer: bytes  # the response body of a PUT (small XML); empty for a GET
    etag: str = ""  # a PUT's ETag, quotes removed

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / MIB / self.seconds if self.seconds else 0.0


def sign_s3(target: Target, method: str, path: str, endpoint: str | None = None) -> SignedRequest:
    """A path-style S3 request for `target`, signed with SigV4 and UNSIGNED-PAYLOAD. `endpoint`
    overrides where it goes (Walrus's own port); the signature covers that Host."""
    url = (endpoint or target.endpoint).rstrip("/") + quote(path)
    headers = {"Host": urlsplit(url).netloc}
    request = AWSRequest(method=method, url=url, headers=headers)
    request.context["client_config"] = BotoConfig(s3={"payload_signing_enabled": False})
    S3SigV4Auth(Credentials(target.access_key, target.secret_key), "s3", target.region).add_auth(request)
    signed = {name: str(value) for name, value in request.headers.items()}
    if signed.get("X-Amz-Content-SHA256") != "UNSIGNED-PAYLOAD":
        raise RuntimeError(f"botocore did not sign with UNSIGNED-PAYLOAD: {signed}")
    return SignedRequest(url, signed, "", method)


def presign_s3(target: Target, method: str, path: str, expires: int = 900) -> str:
    """A presigned URL (query-string SigV4; the payload is always UNSIGNED-PAYLOAD) for `path`."""
    url = target.endpoint.rstrip("/") + quote(path)
    request = AWSRequest(method=method, url=url, headers={"Host": urlsplit(url).netloc})
    credentials = Credentials(target.access_key, target.secret_key)
    S3SigV4QueryAuth(credentials, "s3", target.region, expires=expires).add_auth(request)
    return str(request.url)


def _head(request: SignedRequest, content_length: int) -> bytes:
    lines = [f"{request.method} {request.path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    lines += [f"Content-Length: {content_length}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _connect(request: SignedRequest) -> socket.socket:
    sock = socket.create_connection((request.host, request.port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_head(sock: socket.socket, buffer: memoryview) -> tuple[int, dict[str, str], bytes]:
    """Status, lower-cased headers, and the body bytes that arrived with the head."""
    received = 0
    while True:
        count = sock.recv_into(buffer[received:MAX_HEAD])
        if count == 0:
            raise ConnectionError("connection closed before a complete response head")
        received += count
        end = bytes(buffer[:received]).find(b"\r\n\r\n")
        if end >= 0:
            break
        if received >= MAX_HEAD:
            raise ConnectionError("response head too large")
    head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, bytes(buffer[end + 4 : received])


def _read_rest(sock: socket.socket, buffer: memoryview, headers: dict[str, str], already: int) -> int:
    """Read (and discard) the rest of the body; the number of body bytes read in all."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        raise ConnectionError("chunked response bodies are not expected here")
    length = headers.get("content-length")
    left = int(length) - already if length is not None else -1  # -1: until the server closes
    total = already
    while left != 0:
        count = sock.recv_into(buffer if left < 0 else buffer[: min(len(buffer), left)])
        if count == 0:
            if left > 0:
                raise ConnectionError(f"connection closed with {left} body bytes still to come")
            break
        total += count
        left -= count if left > 0 else 0
    return total


def _read_small_body(sock: socket.socket, buffer: memoryview) -> tuple[int, dict[str, str], bytes]:
    status, headers, first = _read_head(sock, buffer)
    chunks = [first]
    length = int(headers.get("content-length", "-1"))
    while length < 0 or sum(map(len, chunks)) < length:
        data = sock.recv(65536)
        if not data:
            break
        chunks.append(data)
    return status, headers, b"".join(chunks)


def put_file(request: SignedRequest, path: Path, size: int) -> Transfer:
    """PUT `size` bytes of `path` with sendfile; timed until the server's answer has arrived."""
    buffer = memoryview(bytearray(MAX_HEAD))
    with open(path, "rb") as source, _connect(request) as sock:
        started = time.perf_counter()
        sock.sendall(_head(request, size))
        sent = 0
        # An error answer can come before the whole body was sent: then read what the server said.
        with suppress(BrokenPipeError, ConnectionResetError):
            sent = sock.sendfile(source, 0, size)  # os.sendfile, waiting while the socket is full
        status, headers, answer = _read_small_body(sock, buffer)
        elapsed = time.perf_counter() - started
    return Transfer(status, sent, elapsed, answer, headers.get("etag", "").strip('"'))


def get_discard(request: SignedRequest, buffer: memoryview) -> Transfer:
    """GET the object, reading its body into `buffer` over and over; timed to the last byte."""
    with _connect(request) as sock:
        started = time.perf_counter()
        sock.sendall(_head(request, 0))
        status, headers, first = _read_head(sock, buffer)
        if status != 200:
            return Transfer(status, 0, time.perf_counter() - started, first)
        total = _read_rest(sock, buffer, headers, len(first))
        elapsed = time.perf_counter() - started
    return Transfer(status, total, elapsed, b"")


def new_buffer() -> memoryview:
    return memoryview(bytearray(RECV_BUFFER))
