"""Routing on the one public endpoint, from the head alone where possible."""

from __future__ import annotations

import pytest

from mallee.core.context import Headers, HttpRequest
from mallee.protocol.routing import is_s3_from_head, route


def req(method: str, path: str = "/", query: str = "", headers: list[tuple[str, str]] | None = None,
        body: bytes = b"") -> HttpRequest:  # fmt: skip
    return HttpRequest(method, path, query, Headers(headers or []), body)


DATE = ("X-Amz-Date", "20260101T000000Z")
FORM = [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")]
V4 = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/mallee-1/{svc}/aws4_request, "
    "SignedHeaders=host, Signature=" + "0" * 64
)


@pytest.mark.parametrize(
    ("request_", "s3"),
    [
        (req("POST", headers=FORM), False),
        (req("GET", query="Action=DescribeRegions&Version=2016-11-15"), False),
        (req("GET", "/bucket/key"), True),
        (req("PUT", "/bucket/key", headers=FORM), True),  # a PUT is never a query-API call
        (req("POST", "/bucket?delete", headers=[("Content-Type", "application/xml")]), True),
        (req("POST", headers=[("Authorization", V4.format(svc="s3")), DATE, *FORM]), True),
        (req("GET", headers=[("Authorization", V4.format(svc="ec2")), DATE]), False),
        (req("GET", "/services/objectstorage/bucket"), True),
        (req("POST", "/services/compute", headers=FORM), False),
    ],
)
def test_is_s3_from_head(request_: HttpRequest, s3: bool) -> None:
    assert is_s3_from_head(request_) is s3


def test_route_by_action_and_version() -> None:
    assert route(req("POST", headers=FORM, body=b"Action=ListUsers&Version=2010-05-08"), None) == "iam"
    assert (
        route(req("POST", headers=FORM, body=b"Action=GetCallerIdentity&Version=2011-06-15"), None) == "sts"
    )
    assert route(req("POST", headers=FORM, body=b"Action=DescribeRegions"), None) == "ec2"
    assert route(req("GET", "/bucket"), None) == "s3"


@pytest.mark.parametrize("junk", [b"\xff\xfe", b"%FF%FE"])
def test_a_form_that_is_not_utf8_is_routed_by_its_action_not_taken_for_s3(junk: bytes) -> None:
    """Found by the fuzz suite: a SigV2 IAM request with `Signature=%FF` was answered in S3's shape."""
    body = b"Action=ListUsers&Version=2010-05-08&Signature=" + junk
    assert route(req("POST", headers=FORM, body=body), None) == "iam"
