"""The metadata service as guests see it (169.254.169.254, redirected here by the network driver).

A small HTTP/1.1 server on the node's bridge address: it issues IMDSv2 session tokens itself
(HMAC of the guest's address and expiry with the deployment key, so no state is kept), accepts
IMDSv1 requests too, and asks the CLC for the answer, naming the guest by its source address.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time

from mallee.rpc import cloud
from mallee.rpc.transport import Client, RpcError

log = logging.getLogger(__name__)

MAX_TTL = 21600
MAX_HEAD = 16 * 1024


def issue_token(key: bytes, ip: str, ttl: int, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + ttl)
    mac = hmac.new(key, f"{ip}\n{expires}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{expires}.{mac}"


def token_valid(key: bytes, ip: str, token: str, now: float | None = None) -> bool:
    expires, _, mac = token.partition(".")
    if not (expires.isascii() and expires.isdigit()) or int(expires) < (
        now if now is not None else time.time()
    ):
        return False  # (isascii: "²" is a digit int() cannot read)
    expected = hmac.new(key, f"{ip}\n{expires}".encode(), hashlib.sha256).hexdigest()[:32]
    # As bytes: compare_digest raises TypeError for a str with non-ASCII characters.
    return hmac.compare_digest(expected.encode(), mac.encode("utf-8", "surrogateescape"))


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}


def _response_head(status: int, length: int, close: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
        "Content-Type: text/plain",
        f"Content-Length: {length}",
        f"Connection: {'close' if close else 'keep-alive'}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class MetadataProxy:
    def __init__(self, key: bytes, clc: Client) -> None:
        self.key = key
        self.clc = clc
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, host, port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ip = str(writer.get_extra_info("peername")[0])
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
                if len(head) > MAX_HEAD:
                    break
                status, body, close = await self._answer(ip, head, reader)
                writer.write(_response_head(status, len(body), close) + body)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, ip: str, head: bytes, reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, path, version = lines[0].split(" ", 2)
        except ValueError:
            return 400, b"Bad Request", True
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        close = version == "HTTP/1.0" or headers.get("connection", "").lower() == "close"
        declared = headers.get("content-length", "0") or "0"
        if not (declared.isascii() and declared.isdigit()):
            return 400, b"Bad Request", True
        length = int(declared)
        if length:
            await reader.readexactly(min(length, MAX_HEAD))
        if method == "PUT" and path.rstrip("/") == "/latest/api/token":
            ttl = headers.get("x-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= MAX_TTL:
                return 400, b"Bad Request", close
            return 200, issue_token(self.key, ip, int(ttl)).encode(), close
        if method != "GET":
            return 400, b"Bad Request", close
        token = headers.get("x-aws-ec2-metadata-token")
        if token is not None and not token_valid(self.key, ip, token):
            return 401, b"Unauthorized", close
        request = cloud.MetadataRequest(private_ip=ip, path=path.split("?", 1)[0])
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                None, lambda: self.clc.call(cloud.METADATA, request)
            )
        except (OSError, RpcError) as exc:
            log.warning("metadata for %s: CLC did not answer: %s", ip, exc)
            return 404, b"Not Found", close
        return answer.status, answer.body, close
