"""IMDSv2 session tokens issued by the node: bound to the guest's address and expiring, issued only
when the CLC allows it (refused for a disabled endpoint or an unknown address), and sent with the
instance's hop limit as their IP TTL."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import msgspec

from mallee.rpc import cloud
from mallee.rpc.contract import Message, encode
from mallee.services.node.metadata_proxy import MetadataProxy, Reply, issue_token, token_valid

KEY = b"k" * 32


def test_token_is_valid_for_its_guest_until_it_expires() -> None:
    token = issue_token(KEY, "vpc-1", "10.111.0.5", 60, now=1000)
    assert token_valid(KEY, "vpc-1", "10.111.0.5", token, now=1059)
    assert not token_valid(KEY, "vpc-1", "10.111.0.5", token, now=1061)


def test_token_of_another_guest_or_forged_is_refused() -> None:
    token = issue_token(KEY, "vpc-1", "10.111.0.5", 60, now=1000)
    assert not token_valid(KEY, "vpc-1", "10.111.0.6", token, now=1001)
    assert not token_valid(b"x" * 32, "vpc-1", "10.111.0.5", token, now=1001)
    assert not token_valid(KEY, "vpc-1", "10.111.0.5", "garbage", now=1001)
    assert not token_valid(KEY, "vpc-1", "10.111.0.5", "99999999999.", now=1001)
    # Found looking for the fuzz suite's bug class: these raised (TypeError, ValueError).
    assert not token_valid(KEY, "vpc-1", "10.111.0.5", "99999999999.\xe9\xe9", now=1001)
    assert not token_valid(KEY, "vpc-1", "10.111.0.5", "\xb2.abc", now=1001)


def test_token_of_the_same_address_in_another_vpc_is_refused() -> None:
    """Private addresses repeat across VPCs: a token is bound to the VPC as well as the address."""
    token = issue_token(KEY, "vpc-1", "172.31.0.10", 60, now=1000)
    assert token_valid(KEY, "vpc-1", "172.31.0.10", token, now=1001)
    assert not token_valid(KEY, "vpc-2", "172.31.0.10", token, now=1001)


def test_a_content_length_that_is_no_number_is_bad_request() -> None:
    """It made int() raise, and the guest's connection closed without an answer."""
    proxy = MetadataProxy(KEY, clc=None)  # type: ignore[arg-type]  # never reached

    async def answer() -> Any:
        head = "GET /latest/meta-data/ HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n".encode("latin-1")
        return await proxy._answer("vpc-1", "10.111.0.5", head, asyncio.StreamReader())

    reply = asyncio.run(answer())
    assert reply.status == 400 and reply.close


class TokenClc:
    """Answers a token request with `status` (and `hop_limit` when 200), a GET with 200."""

    def __init__(self, status: int = 200, hop_limit: int = 1) -> None:
        self.status, self.hop_limit = status, hop_limit
        self.asked: list[cloud.MetadataRequest] = []

    def call(self, operation: Any, request: cloud.MetadataRequest) -> cloud.MetadataAnswer:
        assert operation is cloud.METADATA
        self.asked.append(request)
        if not request.token_request:
            return cloud.MetadataAnswer(status=200, body=b"i-0123")
        if self.status != 200:
            return cloud.MetadataAnswer(status=self.status, body=b"refused")
        return cloud.MetadataAnswer(status=200, body=b"", hop_limit=self.hop_limit)


class SilentClc:
    def call(self, operation: Any, request: cloud.MetadataRequest) -> cloud.MetadataAnswer:
        raise ConnectionRefusedError("the CLC is down")


def _put(ttl: str | None = "60") -> bytes:
    header = f"X-aws-ec2-metadata-token-ttl-seconds: {ttl}\r\n" if ttl is not None else ""
    return f"PUT /latest/api/token HTTP/1.1\r\n{header}\r\n".encode("latin-1")


def _answer(proxy: MetadataProxy, head: bytes) -> Reply:
    async def answer() -> Reply:
        return await proxy._answer("vpc-1", "10.111.0.5", head, asyncio.StreamReader())

    return asyncio.run(answer())


def test_a_token_is_issued_once_the_clc_allows_it_with_the_instances_hop_limit() -> None:
    clc = TokenClc(hop_limit=2)
    reply = _answer(MetadataProxy(KEY, clc), _put())  # type: ignore[arg-type]
    assert reply.status == 200 and reply.hops == 2
    assert token_valid(KEY, "vpc-1", "10.111.0.5", reply.body.decode())
    assert [(r.token_request, r.vpc_id, r.private_ip) for r in clc.asked] == [(True, "vpc-1", "10.111.0.5")]


def test_a_disabled_endpoint_or_an_unknown_address_gets_no_token() -> None:
    """EC2 answers 403 when the instance's metadata endpoint is disabled, 404 for no instance."""
    for status in (403, 404):
        reply = _answer(MetadataProxy(KEY, TokenClc(status=status)), _put())  # type: ignore[arg-type]
        assert (reply.status, reply.body, reply.hops) == (status, b"refused", None)


def test_no_token_while_the_clc_does_not_answer() -> None:
    reply = _answer(MetadataProxy(KEY, SilentClc()), _put())  # type: ignore[arg-type]
    assert (reply.status, reply.hops) == (404, None)


def test_a_token_put_without_a_valid_ttl_is_bad_request_and_asks_no_one() -> None:
    clc = TokenClc()
    for ttl in (None, "", "0", "21601", "-5", "sixty", "\xb2"):  # "²" is a digit int() cannot read
        assert _answer(MetadataProxy(KEY, clc), _put(ttl)).status == 400, ttl  # type: ignore[arg-type]
    assert clc.asked == []


def test_a_token_put_through_a_proxy_is_refused_and_asks_no_one() -> None:
    """EC2 refuses a token PUT carrying X-Forwarded-For: an open proxy on the instance (SSRF) must
    not hand out tokens."""
    clc = TokenClc()
    head = b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n"
    reply = _answer(MetadataProxy(KEY, clc), head + b"X-Forwarded-For: 203.0.113.9\r\n\r\n")  # type: ignore[arg-type]
    assert (reply.status, reply.hops, clc.asked) == (403, None, [])


def test_a_get_is_answered_with_no_hop_limit() -> None:
    clc = TokenClc(hop_limit=2)
    get = b"GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n"
    reply = _answer(MetadataProxy(KEY, clc), get)  # type: ignore[arg-type]
    assert (reply.status, reply.body, reply.hops) == (200, b"i-0123", None)
    assert not clc.asked[0].token_request


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    length = int(head.lower().split("content-length:", 1)[1].split("\r\n", 1)[0])
    return int(head.split(" ")[1]), await reader.readexactly(length)


def test_the_token_answer_leaves_with_the_hop_limit_as_its_ip_ttl() -> None:
    """On the connection's socket, set before the answer is written and kept for the connection
    (tests/e2e/test_metadata_hop_limit.py shows it on the wire)."""
    proxy = MetadataProxy(KEY, TokenClc(hop_limit=3))  # type: ignore[arg-type]
    with socket.socket() as fresh:
        default = fresh.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
    assert default != 3

    async def exchange() -> list[int]:
        served: list[Any] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            served.append(writer.get_extra_info("socket"))
            await proxy._serve("vpc-1", reader, writer)

        def ttl() -> int:
            return int(served[0].getsockopt(socket.IPPROTO_IP, socket.IP_TTL))

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
            writer.write(b"GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n")
            assert await _read_answer(reader) == (200, b"i-0123")
            ttls = [ttl()]
            writer.write(_put())
            status, _ = await _read_answer(reader)
            assert status == 200
            ttls.append(ttl())
            writer.close()
            await writer.wait_closed()
        return ttls

    assert asyncio.run(exchange()) == [default, 3]


def test_requests_and_answers_without_a_token_read_as_before() -> None:
    """The token fields are left off the wire at their defaults: a CLC or node that predates them
    (and refuses unknown fields) still reads every other metadata request and answer."""

    class OldRequest(Message):
        private_ip: str
        path: str
        vpc_id: str = ""
        with_token: bool = False

    class OldAnswer(Message):
        status: int
        body: bytes

    request = cloud.MetadataRequest(private_ip="10.111.0.5", path="/", vpc_id="vpc-1", with_token=True)
    assert msgspec.json.decode(encode(request), type=OldRequest).with_token
    answer = cloud.MetadataAnswer(status=200, body=b"x")
    assert msgspec.json.decode(encode(answer), type=OldAnswer).body == b"x"
    assert b"token_request" in encode(cloud.MetadataRequest(private_ip="", path="", token_request=True))
