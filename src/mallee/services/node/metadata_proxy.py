"""The metadata service as guests see it (169.254.169.254 in each VPC).

A small HTTP/1.1 server per VPC of the node's applied network, on the socket the network driver
gives for it (`metadata_listener`: inside the VPC's router namespace), so the VPC is known by the
socket and the guest by its source address (addresses repeat across VPCs). It issues IMDSv2
session tokens itself (HMAC of the VPC, the guest's address and the expiry with the deployment key,
so no state is kept) once the CLC allows it, sent with the instance's hop limit as their IP TTL;
it accepts IMDSv1 requests too, and asks the CLC for every answer.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from mallee.rpc import cloud
from mallee.rpc.transport import Client, RpcError

log = logging.getLogger(__name__)

MAX_TTL = 21600
MAX_HEAD = 16 * 1024


def issue_token(key: bytes, vpc_id: str, ip: str, ttl: int, now: float | None = None) -> str:
    """A session token for guest `ip` of `vpc_id`, valid for `ttl` seconds."""
    expires = int((now if now is not None else time.time()) + ttl)
    return f"{expires}.{_token_mac(key, vpc_id, ip, str(expires))}"


def _token_mac(key: bytes, vpc_id: str, ip: str, expires: str) -> str:
    return hmac.new(key, f"{vpc_id}\n{ip}\n{expires}".encode(), hashlib.sha256).hexdigest()[:32]


def token_valid(key: bytes, vpc_id: str, ip: str, token: str, now: float | None = None) -> bool:
    expires, _, mac = token.partition(".")
    if not (expires.isascii() and expires.isdigit()) or int(expires) < (
        now if now is not None else time.time()
    ):
        return False  # (isascii: "²" is a digit int() cannot read)
    expected = _token_mac(key, vpc_id, ip, expires)
    # As bytes: compare_digest raises TypeError for a str with non-ASCII characters.
    return hmac.compare_digest(expected.encode(), mac.encode("utf-8", "surrogateescape"))


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
MAX_HOPS = 64  # HttpPutResponseHopLimit is 1..64


class Reply(NamedTuple):
    """The answer to one request; `hops`: send it, and the rest of the connection, with this IP TTL."""

    status: int
    body: bytes
    close: bool
    hops: int | None = None


def _response_head(status: int, length: int, close: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
        "Content-Type: text/plain",
        f"Content-Length: {length}",
        f"Connection: {'close' if close else 'keep-alive'}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _limit_hops(writer: asyncio.StreamWriter, hops: int) -> None:
    """Send what follows on this connection with IP TTL `hops`. EC2 sends the answer to a token PUT
    with the instance's HttpPutResponseHopLimit as its TTL, so at the default of 1 a container or
    namespace routed behind the instance gets no token (its packets are one hop further; see
    https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instance-metadata-v2-how-it-works.html).

    Set before the write (asyncio sends at once when it can) and left so for the rest of the
    connection: the kernel stamps the TTL on each segment as it sends it, a retransmission too, so
    putting it back after the write could let the token out further. Later answers on a kept-alive
    connection are held to the limit too: a client beyond it got no token on that connection."""
    hops = min(max(hops, 1), MAX_HOPS)  # never -1, which setsockopt takes as "the system default"
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_IP, socket.IP_TTL, hops)


class MetadataProxy:
    """One HTTP server per VPC. `bind(loop)` first; then `follow(vpc_ids, listen)` from any thread
    but the loop's serves exactly those VPCs, each on the socket `listen(vpc_id)` makes."""

    def __init__(self, key: bytes, clc: Client) -> None:
        self.key = key
        self.clc = clc
        self.loop: asyncio.AbstractEventLoop | None = None
        self.servers: dict[str, asyncio.AbstractServer] = {}  # by VPC; changed on the loop only

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def follow(self, vpc_ids: Iterable[str], listen: Callable[[str], socket.socket]) -> None:
        """Serve the VPCs in `vpc_ids` (new ones on a socket from `listen`, made in a worker thread)
        and close the servers of the others. Blocks until done; never call it on the loop."""
        if self.loop is None:
            raise RuntimeError("the metadata proxy is not bound to an event loop")
        wanted = set(vpc_ids)
        asyncio.run_coroutine_threadsafe(self._follow(wanted, listen), self.loop).result(timeout=60)

    async def _follow(self, wanted: set[str], listen: Callable[[str], socket.socket]) -> None:
        for vpc_id in sorted(set(self.servers) - wanted):
            await self._close(vpc_id)
            log.info("metadata service of %s closed", vpc_id)
        loop = asyncio.get_running_loop()
        for vpc_id in sorted(wanted - set(self.servers)):
            try:
                sock = await loop.run_in_executor(None, listen, vpc_id)
            except Exception as exc:  # the next applied network tries again
                log.warning("no metadata service for %s: %s", vpc_id, exc)
                continue
            sock.setblocking(False)
            self.servers[vpc_id] = await asyncio.start_server(
                functools.partial(self._serve, vpc_id), sock=sock
            )
            log.info("metadata service of %s on %s", vpc_id, sock.getsockname())

    async def _close(self, vpc_id: str) -> None:
        server = self.servers.pop(vpc_id)
        server.close()
        await server.wait_closed()

    async def stop(self) -> None:
        for vpc_id in list(self.servers):
            await self._close(vpc_id)

    async def _serve(self, vpc_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ip = str(writer.get_extra_info("peername")[0])
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
                if len(head) > MAX_HEAD:
                    break
                reply = await self._answer(vpc_id, ip, head, reader)
                if reply.hops is not None:
                    _limit_hops(writer, reply.hops)
                writer.write(_response_head(reply.status, len(reply.body), reply.close) + reply.body)
                await writer.drain()
                if reply.close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, vpc_id: str, ip: str, head: bytes, reader: asyncio.StreamReader) -> Reply:
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, path, version = lines[0].split(" ", 2)
        except ValueError:
            return Reply(400, b"Bad Request", True)
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        close = version == "HTTP/1.0" or headers.get("connection", "").lower() == "close"
        declared = headers.get("content-length", "0") or "0"
        if not (declared.isascii() and declared.isdigit()):
            return Reply(400, b"Bad Request", True)
        length = int(declared)
        if length:
            await reader.readexactly(min(length, MAX_HEAD))
        if method == "PUT" and path.rstrip("/") == "/latest/api/token":
            ttl = headers.get("x-aws-ec2-metadata-token-ttl-seconds", "")
            if not (ttl.isascii() and ttl.isdigit()) or not 1 <= int(ttl) <= MAX_TTL:
                return Reply(400, b"Bad Request", close)
            if "x-forwarded-for" in headers:  # EC2's guard against a proxy on the instance
                return Reply(403, b"Forbidden", close)
            # The CLC refuses a token to an address that is no instance (404) and to an instance
            # whose endpoint is disabled (403), as EC2 does; it gives the hop limit otherwise.
            allowed = await self._ask(
                cloud.MetadataRequest(private_ip=ip, path=path, vpc_id=vpc_id, token_request=True)
            )
            if allowed.status != 200:
                return Reply(allowed.status, allowed.body, close)
            issued = issue_token(self.key, vpc_id, ip, int(ttl)).encode()
            return Reply(200, issued, close, hops=allowed.hop_limit)
        if method != "GET":
            return Reply(400, b"Bad Request", close)
        token = headers.get("x-aws-ec2-metadata-token")
        if token is not None and not token_valid(self.key, vpc_id, ip, token):
            return Reply(401, b"Unauthorized", close)
        request = cloud.MetadataRequest(
            private_ip=ip, path=path.split("?", 1)[0], vpc_id=vpc_id, with_token=token is not None
        )
        answer = await self._ask(request)
        return Reply(answer.status, answer.body, close)

    async def _ask(self, request: cloud.MetadataRequest) -> cloud.MetadataAnswer:
        """The CLC's answer; 404 when it does not answer (the guest may ask again)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: self.clc.call(cloud.METADATA, request)
            )
        except (OSError, RpcError) as exc:
            log.warning(
                "metadata for %s in %s: CLC did not answer: %s", request.private_ip, request.vpc_id, exc
            )
            return cloud.MetadataAnswer(status=404, body=b"Not Found")
