"""The public endpoint hands a new connection whose first request is S3 to Walrus, which serves it
from then on; the query APIs on such a connection are relayed back to the CLC, and S3 on a
connection the CLC kept is relayed to Walrus. One keep-alive connection per test, raw HTTP."""

from __future__ import annotations

import http.client
import os
import secrets
import signal
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from support.cloud import Cloud

QUERY = b"Action=DescribeRegions&Version=2016-11-15"


class Connection:
    """One keep-alive connection to the endpoint sending requests signed with the admin's key."""

    def __init__(self, cloud: Cloud) -> None:
        self.endpoint = cloud.endpoint
        self.region = cloud.region
        self.creds = Credentials(cloud.admin.access_key_id, cloud.admin.secret_access_key)
        url = urlsplit(cloud.endpoint)
        self.conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=15)
        self.sockets: set[int] = set()

    def s3(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        req = AWSRequest(method=method, url=self.endpoint + path, data=body)
        S3SigV4Auth(self.creds, "s3", self.region).add_auth(req)
        return self._send(req)

    def ec2(self) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        req = AWSRequest(method="POST", url=self.endpoint + "/", data=QUERY, headers=headers)
        SigV4Auth(self.creds, "ec2", self.region).add_auth(req)
        return self._send(req)

    def _send(self, req: AWSRequest) -> tuple[int, bytes]:
        path = urlsplit(req.url).path
        self.conn.request(req.method, path, body=req.body, headers=dict(req.headers.items()))
        if self.conn.sock is not None:
            self.sockets.add(id(self.conn.sock))
        answer = self.conn.getresponse()
        return answer.status, answer.read()


@pytest.fixture
def conn(cloud: Cloud) -> Iterator[Connection]:
    c = Connection(cloud)
    yield c
    c.conn.close()


@pytest.fixture
def bucket(cloud: Cloud) -> str:
    name = f"handoff-{secrets.token_hex(4)}"
    cloud.client("s3").create_bucket(Bucket=name)
    return name


def test_s3_connection_is_served_by_walrus_without_the_clc(
    cloud: Cloud, conn: Connection, bucket: str
) -> None:
    assert conn.s3("PUT", f"/{bucket}/k", b"first")[0] == 200
    clc = cloud.service_pid("clc")
    os.kill(clc, signal.SIGSTOP)  # a relayed request would now wait forever
    try:
        status, body = conn.s3("GET", f"/{bucket}/k")
    finally:
        os.kill(clc, signal.SIGCONT)
    assert (status, body) == (200, b"first")
    assert len(conn.sockets) == 1  # the same connection throughout


def test_query_api_after_s3_on_one_connection(conn: Connection, bucket: str) -> None:
    assert conn.s3("PUT", f"/{bucket}/k", b"body")[0] == 200
    status, body = conn.ec2()  # relayed back to the CLC by Walrus
    assert status == 200 and b"<DescribeRegionsResponse" in body
    assert conn.s3("GET", f"/{bucket}/k") == (200, b"body")
    status, body = conn.ec2()
    assert status == 200 and b"<DescribeRegionsResponse" in body
    assert len(conn.sockets) == 1


def test_s3_after_query_api_on_one_connection(conn: Connection, bucket: str) -> None:
    status, body = conn.ec2()  # the CLC keeps this connection
    assert status == 200 and b"<DescribeRegionsResponse" in body
    data = os.urandom(3 * 1024 * 1024)
    assert conn.s3("PUT", f"/{bucket}/big", data)[0] == 200  # relayed to Walrus
    assert conn.s3("GET", f"/{bucket}/big") == (200, data)
    assert len(conn.sockets) == 1


def test_first_request_with_a_large_body_is_handed_over_whole(conn: Connection, bucket: str) -> None:
    data = os.urandom(5 * 1024 * 1024)  # arrives with its head in the front door's first reads
    assert conn.s3("PUT", f"/{bucket}/first-big", data)[0] == 200
    assert conn.s3("GET", f"/{bucket}/first-big") == (200, data)
