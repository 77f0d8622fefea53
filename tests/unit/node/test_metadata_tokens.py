"""IMDSv2 session tokens issued by the node: bound to the guest's address and expiring."""

from __future__ import annotations

import asyncio
from typing import Any

from mallee.services.node.metadata_proxy import MetadataProxy, issue_token, token_valid

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

    status, _, close = asyncio.run(answer())
    assert status == 400 and close
