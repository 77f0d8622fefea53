"""The metadata proxy serves each VPC of the applied network on the driver's listener for it, names
the VPC in what it asks the CLC, and binds IMDSv2 tokens to the VPC as well as the address."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from mallee.drivers.network.vpc_contract import NodeNetwork, NodeUnderlay, Subnet, Vpc
from mallee.drivers.network.vpc_fake import FakeVpcDriver
from mallee.rpc import cloud
from mallee.services.node.metadata_proxy import MetadataProxy
from support.loops import running_loop

KEY = b"k" * 32


class FakeClc:
    def __init__(self) -> None:
        self.asked: list[cloud.MetadataRequest] = []

    def call(self, operation: Any, request: cloud.MetadataRequest) -> cloud.MetadataAnswer:
        assert operation is cloud.METADATA
        self.asked.append(request)
        return cloud.MetadataAnswer(status=200, body=f"{request.vpc_id} {request.path}".encode())


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    with running_loop() as loop:
        yield loop


def _driver(*vpc_ids: str) -> FakeVpcDriver:
    driver = FakeVpcDriver()
    vpcs = tuple(
        Vpc(v, n + 1, "172.31.0.0/16", (Subnet(f"subnet-{n}", "172.31.0.0/20"),), (), ())
        for n, v in enumerate(vpc_ids)
    )
    driver.apply(NodeNetwork(NodeUnderlay("m0", "127.0.0.1", "mpub0", "198.51.100.0/24"), vpcs))
    return driver


def _ask(port: int, request: str) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request.encode())
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    head, _, body = answer.decode().partition("\r\n\r\n")
    return int(head.split(" ")[1]), body


def _port(proxy: MetadataProxy, vpc_id: str) -> int:
    return int(proxy.servers[vpc_id].sockets[0].getsockname()[1])


def test_each_vpc_is_served_on_its_own_listener_and_named_to_the_clc(loop: asyncio.AbstractEventLoop) -> None:
    clc = FakeClc()
    proxy = MetadataProxy(KEY, clc)  # type: ignore[arg-type]
    proxy.bind(loop)
    driver = _driver("vpc-1", "vpc-2")
    proxy.follow(["vpc-1", "vpc-2"], lambda vpc_id: driver.metadata_listener(vpc_id, 80))
    get = "GET /latest/meta-data/local-ipv4 HTTP/1.1\r\nConnection: close\r\n\r\n"
    assert _ask(_port(proxy, "vpc-2"), get) == (200, "vpc-2 /latest/meta-data/local-ipv4")
    assert [(r.vpc_id, r.private_ip) for r in clc.asked] == [("vpc-2", "127.0.0.1")]

    port = _port(proxy, "vpc-1")
    proxy.follow(["vpc-2"], lambda vpc_id: driver.metadata_listener(vpc_id, 80))  # vpc-1 left the node
    assert list(proxy.servers) == ["vpc-2"]
    with pytest.raises(OSError):
        _ask(port, get)
    asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(5)
    assert proxy.servers == {}


def test_a_token_from_one_vpc_is_refused_in_another(loop: asyncio.AbstractEventLoop) -> None:
    """Both VPCs have a guest at the same address (here, both 127.0.0.1)."""
    proxy = MetadataProxy(KEY, FakeClc())  # type: ignore[arg-type]
    proxy.bind(loop)
    driver = _driver("vpc-1", "vpc-2")
    proxy.follow(["vpc-1", "vpc-2"], lambda vpc_id: driver.metadata_listener(vpc_id, 80))
    ttl = "X-aws-ec2-metadata-token-ttl-seconds: 60"
    put = f"PUT /latest/api/token HTTP/1.1\r\n{ttl}\r\nConnection: close\r\n\r\n"
    status, token = _ask(_port(proxy, "vpc-1"), put)
    assert status == 200
    get = f"GET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\nConnection: close\r\n\r\n"
    assert _ask(_port(proxy, "vpc-1"), get)[0] == 200
    assert _ask(_port(proxy, "vpc-2"), get)[0] == 401
    asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(5)


def test_a_vpc_without_a_listener_is_tried_again_with_the_next_network(
    loop: asyncio.AbstractEventLoop,
) -> None:
    proxy = MetadataProxy(KEY, FakeClc())  # type: ignore[arg-type]
    proxy.bind(loop)
    driver = _driver("vpc-1")

    def failing(vpc_id: str) -> socket.socket:
        raise OSError("no namespace yet")

    proxy.follow(["vpc-1"], failing)
    assert proxy.servers == {}
    proxy.follow(["vpc-1"], lambda vpc_id: driver.metadata_listener(vpc_id, 80))
    assert list(proxy.servers) == ["vpc-1"]
    asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(5)
