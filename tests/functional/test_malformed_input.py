"""Bad input gets a 4xx AWS error, never a 500, a hang or a dead service."""

from __future__ import annotations

import contextlib
import http.client
import socket
import urllib.parse

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from support.cloud import Cloud


def _conn(cloud: Cloud) -> http.client.HTTPConnection:
    parsed = urllib.parse.urlparse(cloud.endpoint)
    return http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)


def signed(
    cloud: Cloud, service: str, body: bytes | str, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """POST a body signed correctly by botocore, whatever nonsense it holds."""
    request = AWSRequest(
        method="POST",
        url=cloud.endpoint + "/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", **(headers or {})},
    )
    SigV4Auth(
        Credentials(cloud.admin.access_key_id, cloud.admin.secret_access_key), service, cloud.region
    ).add_auth(request)
    conn = _conn(cloud)
    raw = body.encode() if isinstance(body, str) else body
    conn.request("POST", "/", body=raw, headers=dict(request.headers.items()))
    response = conn.getresponse()
    return response.status, response.read().decode(errors="replace")


def assert_alive(cloud: Cloud) -> None:
    assert cloud.client("ec2").describe_regions()["Regions"]


@pytest.mark.parametrize(
    ("service", "body", "code"),
    [
        ("ec2", "Version=2016-11-15", "MissingAction"),
        ("ec2", "Action=NoSuchThing&Version=2016-11-15", "InvalidAction"),
        ("ec2", "Action=DescribeInstanceTypes&Version=2016-11-15&MaxResults=lots", "InvalidParameterValue"),
        ("ec2", "Action=DescribeRegions&Version=2016-11-15&Filter.abc.Name=x", None),
        (
            "ec2",
            "Action=DescribeRegions&Version=2016-11-15&RegionName.99999999999=x",
            "InvalidParameterValue",
        ),
        ("ec2", "Action=ModifyInstanceTypeAttribute&Version=2016-11-15", "MissingParameter"),
        ("iam", "Action=CreateUser&Version=2010-05-08", "ValidationError"),
        ("iam", "Action=ListUsers&Version=2010-05-08&MaxItems=-5", "ValidationError"),
        ("iam", "Action=GetUser&Version=2010-05-08&UserName=" + "x" * 200, "ValidationError"),
        (
            "iam",
            "Action=PutUserPolicy&Version=2010-05-08&UserName=a&PolicyName=p&PolicyDocument=%7Bjunk",
            None,
        ),
        ("sts", "Action=GetSessionToken&Version=2011-06-15&DurationSeconds=abc", "ValidationError"),
    ],
)
def test_bad_parameters_are_4xx_aws_errors(cloud: Cloud, service: str, body: str, code: str | None) -> None:
    status, text = signed(cloud, service, body)
    assert 400 <= status < 500, text
    assert "<Code>" in text
    if code:
        assert f"<Code>{code}</Code>" in text
    assert_alive(cloud)


def test_unknown_and_junk_parameters_are_ignored_as_on_aws(cloud: Cloud) -> None:
    status, text = signed(cloud, "ec2", "Action=DescribeRegions&Version=2016-11-15&%ZZ=%%%&Bogus.1.x=y")
    assert status == 200, text
    assert "<regionName>mallee-1</regionName>" in text


def test_non_utf8_body_is_a_4xx(cloud: Cloud) -> None:
    status, text = signed(cloud, "ec2", b"Action=DescribeRegions&Version=2016-11-15&RegionName.1=\xff\xfe")
    assert 400 <= status < 500, text
    assert_alive(cloud)


def test_unsigned_request_is_missing_authentication_token(cloud: Cloud) -> None:
    conn = _conn(cloud)
    conn.request(
        "POST",
        "/",
        body="Action=DescribeRegions&Version=2016-11-15",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    response = conn.getresponse()
    assert response.status == 403
    assert "<Code>MissingAuthenticationToken</Code>" in response.read().decode()


def test_oversize_body_is_refused_with_413(cloud: Cloud) -> None:
    status, text = signed(
        cloud, "ec2", "Action=DescribeRegions&Version=2016-11-15&x=" + "a" * (2 * 1024 * 1024)
    )
    assert status == 413, text
    assert_alive(cloud)


def test_oversize_headers_are_refused(cloud: Cloud) -> None:
    parsed = urllib.parse.urlparse(cloud.endpoint)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (200 * 1024) + b"\r\n\r\n")
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    # The door answers once the head passes its limit and drops the rest: the client reads it.
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert b"<Code>RequestHeaderSectionTooLarge</Code>" in reply
    assert_alive(cloud)


def test_junk_xml_to_s3_is_a_4xx(cloud: Cloud) -> None:
    request = AWSRequest(
        method="PUT",
        url=cloud.endpoint + "/bucket",
        data=b"<CreateBucketConfiguration><oops",
        headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"},
    )
    from botocore.auth import S3SigV4Auth

    S3SigV4Auth(
        Credentials(cloud.admin.access_key_id, cloud.admin.secret_access_key), "s3", cloud.region
    ).add_auth(request)
    conn = _conn(cloud)
    conn.request(
        "PUT", "/bucket", body=b"<CreateBucketConfiguration><oops", headers=dict(request.headers.items())
    )
    response = conn.getresponse()
    text = response.read().decode()
    assert 400 <= response.status < 500 or response.status == 501, text
    assert "<Error>" in text
    assert_alive(cloud)


def test_garbage_request_line_does_not_kill_the_service(cloud: Cloud) -> None:
    parsed = urllib.parse.urlparse(cloud.endpoint)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as s:
        s.sendall(b"\x00\x01\x02 NOT HTTP AT ALL\r\n\r\n")
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            s.recv(1024)
    assert_alive(cloud)
