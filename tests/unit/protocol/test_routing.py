"""Routing on the one public endpoint: from the head alone where possible, decided once."""

from __future__ import annotations

import pytest

from mallee.core.context import Headers, HttpRequest
from mallee.protocol.routing import classify


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
        (req("POST", headers=[*FORM, ("Content-Length", "20")]), False),
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
    assert classify(request_).is_s3 is s3


def route(request: HttpRequest) -> str | None:
    return classify(request).service


def test_route_by_action_and_version() -> None:
    assert route(req("POST", headers=FORM, body=b"Action=ListUsers&Version=2010-05-08")) == "iam"
    assert route(req("POST", headers=FORM, body=b"Action=GetCallerIdentity&Version=2011-06-15")) == "sts"
    assert route(req("POST", headers=FORM, body=b"Action=DescribeRegions")) == "ec2"
    assert route(req("GET", "/bucket")) == "s3"


@pytest.mark.parametrize("junk", [b"\xff\xfe", b"%FF%FE"])
def test_a_form_that_is_not_utf8_is_routed_by_its_action_not_taken_for_s3(junk: bytes) -> None:
    """Found by the fuzz suite: a SigV2 IAM request with `Signature=%FF` was answered in S3's shape."""
    body = b"Action=ListUsers&Version=2010-05-08&Signature=" + junk
    assert route(req("POST", headers=FORM, body=body)) == "iam"


def test_a_form_post_is_undecided_until_its_body_is_read_and_then_routed_by_it() -> None:
    request = req("POST", headers=[*FORM, ("Content-Length", "35")])
    route_ = classify(request)
    assert route_.service is None and not route_.is_s3
    assert route_.shape == "ec2"  # refused before its body came: the query APIs' default shape
    request.body = b"Action=ListUsers&Version=2010-05-08"
    assert classify(request).service == "iam"
    # An empty form (nothing to come) is decided at once, by its query.
    assert classify(req("POST", query="Action=GetCallerIdentity", headers=FORM)).service == "sts"


def test_classified_once_while_the_request_stays_the_same() -> None:
    request = req("GET", "/bucket/key", headers=[("Authorization", V4.format(svc="s3")), DATE])
    first = classify(request)
    assert classify(request) is first
    assert classify(request, "s3.test") is not first  # asked with other options
    request.headers.set("Authorization", V4.format(svc="ec2"))
    assert classify(request).service == "ec2"  # a header changed: read again


@pytest.mark.parametrize(
    ("path", "host", "domain", "bucket", "has_key", "prefix", "parsed_path"),
    [
        ("/bucket/a/b", "h", "", "bucket", True, "", "/bucket/a/b"),
        ("/bucket", "h", "", "bucket", False, "", "/bucket"),
        ("/bucket/", "h", "", "bucket", False, "", "/bucket/"),
        ("/", "h", "", "", False, "", "/"),
        ("/services/objectstorage/bucket/k", "h", "", "bucket", True, "/services/objectstorage", "/bucket/k"),
        ("/services/Walrus", "h", "", "", False, "/services/Walrus", "/"),
        ("/key", "my.bucket.s3.test:8773", "s3.test", "my.bucket", True, "", "/key"),
        ("/", "my.bucket.s3.test", "s3.test", "my.bucket", False, "", "/"),
        ("/b%2Dx/k", "h", "", "b-x", True, "", "/b%2Dx/k"),
    ],
)
def test_s3_addressing(
    path: str, host: str, domain: str, bucket: str, has_key: bool, prefix: str, parsed_path: str
) -> None:
    route_ = classify(req("GET", path, headers=[("Host", host)]), domain)
    assert (route_.bucket, route_.has_key, route_.prefix, route_.path) == (
        bucket,
        has_key,
        prefix,
        parsed_path,
    )
    assert route_.is_s3


def test_an_unreadable_signature_is_routed_as_if_unsigned_and_kept_for_the_gateway() -> None:
    broken = "AWS4-HMAC-SHA256 Credential=nonsense"
    route_ = classify(req("PUT", "/bucket/key", headers=[("Authorization", broken)]))
    assert route_.is_s3 and route_.signature is None
    assert route_.signature_error is not None and route_.signature_error.kind == "incomplete"


def test_an_api_this_endpoint_does_not_serve_is_named_and_answered_in_ec2s_shape() -> None:
    route_ = classify(req("GET", headers=[("Authorization", V4.format(svc="dynamodb")), DATE]))
    assert route_.foreign_service == "dynamodb" and route_.service == "ec2"


def test_an_unsigned_bare_get_of_metrics_is_the_metrics_page_not_s3() -> None:
    route_ = classify(req("GET", "/metrics", headers=[("Host", "127.0.0.1:8773")]), "s3.test")
    assert route_.is_metrics and not route_.is_s3
    assert route_.shape == "s3"  # an error before it is answered: in the shape it would otherwise have


@pytest.mark.parametrize(
    ("request_", "domain"),
    [
        (req("GET", "/metrics", headers=[("Authorization", V4.format(svc="s3")), DATE]), ""),
        (req("GET", "/metrics", "list-type=2"), ""),  # any query: ListObjectsV2 and the like
        (req("GET", "/metrics", "X-Amz-Algorithm=AWS4-HMAC-SHA256"), ""),  # presigned (or half so)
        (req("GET", "/metrics/"), ""),
        (req("GET", "/metrics/key"), ""),
        (req("HEAD", "/metrics"), ""),
        (req("PUT", "/metrics"), ""),
        (req("GET", "/Metrics"), ""),
        (req("GET", "/services/objectstorage/metrics"), ""),
        (req("GET", "/metrics", headers=[("Host", "metrics.s3.test")]), "s3.test"),  # virtual-hosted
        (req("GET", "/metrics", headers=[("Authorization", "AWS4-HMAC-SHA256 Credential=x")]), ""),
    ],
)
def test_every_other_request_for_metrics_is_s3s_bucket_of_that_name(
    request_: HttpRequest, domain: str
) -> None:
    route_ = classify(request_, domain)
    assert route_.is_s3 and not route_.is_metrics
    assert route_.bucket == ("Metrics" if request_.raw_path == "/Metrics" else "metrics")
