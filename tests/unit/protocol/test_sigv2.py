"""SigV2 verification (query SigV2 and S3's REST authentication), checked against botocore's signers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth, SigV2Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from mallee.core.context import Headers, HttpRequest
from mallee.protocol import auth, sigv2
from mallee.protocol.auth import AuthError, SignatureInfo

AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
FORM = "application/x-www-form-urlencoded; charset=utf-8"


def to_http_request(aws_request: AWSRequest, *, keep_headers: bool = True) -> HttpRequest:
    """What our server would see for the request botocore signed: the URL split as sent."""
    prepared = aws_request.prepare()
    url = urlsplit(prepared.url)
    headers = [(k, v) for k, v in prepared.headers.items()] if keep_headers else []
    if not any(k.lower() == "host" for k, _ in headers):
        headers.insert(0, ("Host", url.netloc))
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return HttpRequest(prepared.method, url.path, url.query, Headers(headers), body)


def check(
    request: HttpRequest, secret: str = SECRET, now: datetime | None = None, bucket: str | None = None
) -> SignatureInfo:
    info = auth.extract(request)
    assert info is not None
    auth.verify(request, info, secret, now or datetime.now(UTC), virtual_host_bucket=bucket)
    return info


def refused(
    request: HttpRequest,
    kind: str,
    secret: str = SECRET,
    now: datetime | None = None,
    bucket: str | None = None,
) -> AuthError:
    with pytest.raises(AuthError) as caught:
        check(request, secret, now, bucket)
    assert caught.value.kind == kind, caught.value.message
    return caught.value


def with_(request: HttpRequest, **changes: object) -> HttpRequest:
    fields = {
        "method": request.method,
        "raw_path": request.raw_path,
        "query_string": request.query_string,
        "headers": Headers(request.headers.items()),
        "body": request.body,
    }
    fields.update(changes)
    return HttpRequest(**fields)  # type: ignore[arg-type]


def replace_header(request: HttpRequest, name: str, value: str) -> HttpRequest:
    headers = Headers(request.headers.items())
    headers.set(name, value)
    return with_(request, headers=headers)


# -- query SigV2 (EC2, IAM, STS) ------------------------------------------------------------------


def ec2_post(token: str | None = None) -> HttpRequest:
    request = AWSRequest(
        "POST",
        "https://ec2.us-east-1.amazonaws.com/",
        data={
            "Action": "DescribeImages",
            "Version": "2016-11-15",
            "Owner.1": "self",
            "Filter.1.Value.1": "a b+c/é*",
        },
        headers={"Content-Type": FORM},
    )
    SigV2Auth(Credentials(AKID, SECRET, token)).add_auth(request)
    return to_http_request(request)


def iam_get() -> HttpRequest:
    request = AWSRequest(
        "GET",
        "https://iam.amazonaws.com:8773/services/Euare",
        params={"Action": "ListUsers", "Version": "2010-05-08", "PathPrefix": "/division abc/"},
    )
    SigV2Auth(Credentials(AKID, SECRET)).add_auth(request)
    return to_http_request(request)


def test_botocore_query_sigv2_post_verifies() -> None:
    info = check(ec2_post())
    assert info == SignatureInfo("v2-query", AKID, None, None, None)


def test_botocore_query_sigv2_get_with_port_and_path_verifies() -> None:
    assert check(iam_get()).scheme == "v2-query"


def test_query_sigv2_session_token() -> None:
    info = check(ec2_post(token="session+token/=="))
    assert info.session_token == "session+token/=="


def test_query_sigv2_tampering() -> None:
    request = ec2_post()
    refused(request, "signature", "another secret")
    refused(with_(request, body=request.body.replace(b"DescribeImages", b"DeregisterImage")), "signature")
    refused(replace_header(request, "Host", "ec2.elsewhere.example.com"), "signature")
    refused(with_(request, method="GET"), "signature")
    refused(with_(request, raw_path="/other"), "signature")
    refused(with_(request, query_string="Extra=1"), "signature")
    get = iam_get()
    refused(with_(get, query_string=get.query_string.replace("ListUsers", "ListGroups")), "signature")


def _manual_query_request(method: str, extra: dict[str, str], secret: str = SECRET) -> HttpRequest:
    """Sign by the EC2 documentation's recipe, independently of botocore (e.g. for HmacSHA1)."""
    params = {
        "Action": "DescribeRegions",
        "Version": "2016-11-15",
        "AWSAccessKeyId": AKID,
        "SignatureVersion": "2",
        **extra,
    }
    encoded = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
    digest = hashlib.sha1 if params["SignatureMethod"] == "HmacSHA1" else hashlib.sha256
    text = f"{method}\nec2.example.com\n/\n{encoded}"
    signature = base64.b64encode(hmac.new(secret.encode(), text.encode(), digest).digest()).decode()
    return HttpRequest(
        method,
        "/",
        f"{encoded}&Signature={quote(signature, safe='')}",
        Headers([("Host", "EC2.Example.com")]),
    )


def test_query_sigv2_hmac_sha1_and_expires() -> None:
    expires = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    request = _manual_query_request("GET", {"SignatureMethod": "HmacSHA1", "Expires": expires})
    check(request)
    refused(request, "expired", now=datetime.now(UTC) + timedelta(minutes=6))


def test_query_sigv2_timestamp_skew() -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    request = _manual_query_request("GET", {"SignatureMethod": "HmacSHA256", "Timestamp": stamp})
    check(request)
    check(request, now=datetime.now(UTC) + timedelta(minutes=14))
    refused(request, "skewed", now=datetime.now(UTC) + timedelta(minutes=16))
    refused(request, "skewed", now=datetime.now(UTC) - timedelta(minutes=16))


def test_query_sigv2_unencoded_plus_in_signature_is_tolerated() -> None:
    # Old clients put the base64 signature in the URL without encoding '+', which then reads as ' '.
    for _ in range(20):
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        request = _manual_query_request(
            "GET", {"SignatureMethod": "HmacSHA256", "Timestamp": stamp, "Nonce": str(random.random())}
        )
        query = request.query_string.replace("%2B", "+").replace("%2F", "/").replace("%3D", "=")
        check(with_(request, query_string=query))


def test_signature_starting_with_plus_sent_unencoded_is_tolerated() -> None:
    """Regression: a leading '+' read as ' ' used to be stripped before being turned back."""
    expected = bytes.fromhex("fb" + "00" * 31)  # base64 starts with '+'
    text = base64.b64encode(expected).decode()
    assert text.startswith("+")
    sigv2._compare_base64(expected, " " + text[1:])


@pytest.mark.parametrize(
    ("params", "kind"),
    [
        (
            "SignatureVersion=2&SignatureMethod=HmacSHA256&Timestamp=2015-01-01T00:00:00Z&Signature=x",
            "incomplete",
        ),
        ("AWSAccessKeyId=A&SignatureVersion=2&SignatureMethod=HmacSHA256&Signature=x", "incomplete"),
        (
            "AWSAccessKeyId=A&SignatureVersion=2&SignatureMethod=HmacSHA256&Timestamp=t&Expires=e&Signature=x",
            "incomplete",
        ),
        (
            "AWSAccessKeyId=A&SignatureVersion=1&SignatureMethod=HmacSHA256&Timestamp=t&Signature=x",
            "unsupported",
        ),
        (
            "AWSAccessKeyId=A&SignatureVersion=2&SignatureMethod=HmacMD5&Timestamp=t&Signature=x",
            "unsupported",
        ),
        ("AWSAccessKeyId=A&SignatureVersion=2&SignatureMethod=HmacSHA256&Timestamp=t", "incomplete"),
    ],
)
def test_malformed_query_sigv2(params: str, kind: str) -> None:
    with pytest.raises(AuthError) as caught:
        auth.extract(HttpRequest("GET", "/", params, Headers([("Host", "ec2.example.com")])))
    assert caught.value.kind == kind


@pytest.mark.parametrize("signature", ["", "!!!", "é", "AAAA", "=" * 8])
def test_garbage_query_sigv2_signatures(signature: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    request = _manual_query_request("GET", {"SignatureMethod": "HmacSHA256", "Timestamp": stamp})
    query = request.query_string.rsplit("&Signature=", 1)[0] + "&Signature=" + quote(signature)
    kind = "incomplete" if not signature else "signature"
    refused(with_(request, query_string=query), kind)


def test_bad_query_sigv2_dates() -> None:
    request = _manual_query_request("GET", {"SignatureMethod": "HmacSHA256", "Timestamp": "yesterday"})
    refused(request, "incomplete")


# -- S3 SigV2: Authorization header ---------------------------------------------------------------


def s3_signed(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    auth_path: str | None = None,
    token: str | None = None,
) -> HttpRequest:
    request = AWSRequest(method, url, headers=headers or {}, data=data)
    request.auth_path = auth_path
    HmacV1Auth(Credentials(AKID, SECRET, token)).add_auth(request)
    return to_http_request(request)


S3_HEADER_CASES = {
    "get object": lambda: s3_signed("GET", "https://s3.amazonaws.com/bucket/photos/puppy%20dog.jpg"),
    "put with metadata": lambda: s3_signed(
        "PUT",
        "https://s3.amazonaws.com/bucket/key",
        headers={
            "Content-Type": "image/jpeg",
            "Content-MD5": "XrY7u+Ae7tCTyyK7j1rNww==",
            "x-amz-meta-Reviewed-By": "joe@example.com",
            "X-Amz-Acl": "public-read",
        },
        data=b"jpeg bytes",
    ),
    "acl sub-resource": lambda: s3_signed("PUT", "https://s3.amazonaws.com/bucket/key?acl", data=b"<x/>"),
    "multipart part": lambda: s3_signed(
        "PUT", "https://s3.amazonaws.com/bucket/key?uploadId=abc%2Fdef&partNumber=3", data=b"part"
    ),
    "versioned with overrides": lambda: s3_signed(
        "GET",
        "https://s3.amazonaws.com/bucket/key?versionId=3%2F4&response-content-type=text%2Fplain&foo=bar",
    ),
    "session token": lambda: s3_signed("GET", "https://s3.amazonaws.com/bucket/key", token="tok"),
}


@pytest.mark.parametrize("make", S3_HEADER_CASES.values(), ids=S3_HEADER_CASES.keys())
def test_botocore_s3_header_signatures_verify(make) -> None:
    assert check(make()).scheme == "v2-s3-header"


def test_s3_header_extract() -> None:
    info = check(S3_HEADER_CASES["session token"]())
    assert info == SignatureInfo("v2-s3-header", AKID, None, None, "tok")


def test_s3_virtual_hosted_bucket_is_part_of_the_resource() -> None:
    request = s3_signed("GET", "https://bucket.s3.example.com/key?tagging", auth_path="/bucket/key")
    check(request, bucket="bucket")
    refused(request, "signature")  # without the bucket, the resource is /key
    refused(request, "signature", bucket="other")
    listing = s3_signed("GET", "https://bucket.s3.example.com/", auth_path="/bucket/")
    check(listing, bucket="bucket")


def test_s3_header_tampering() -> None:
    put = S3_HEADER_CASES["put with metadata"]()
    refused(put, "signature", "another secret")
    refused(replace_header(put, "x-amz-meta-reviewed-by", "eve@example.com"), "signature")
    refused(replace_header(put, "Content-Type", "text/html"), "signature")
    refused(replace_header(put, "Content-MD5", "1B2M2Y8AsgTpgAmY7PhCfg=="), "signature")
    refused(with_(put, raw_path="/bucket/other"), "signature")
    refused(with_(put, method="POST"), "signature")
    acl = S3_HEADER_CASES["acl sub-resource"]()
    refused(with_(acl, query_string="policy"), "signature")
    part = S3_HEADER_CASES["multipart part"]()
    refused(with_(part, query_string=part.query_string.replace("partNumber=3", "partNumber=4")), "signature")
    # Query parameters that are not sub-resources are not signed in SigV2.
    versioned = S3_HEADER_CASES["versioned with overrides"]()
    check(with_(versioned, query_string=versioned.query_string.replace("foo=bar", "foo=baz")))


def test_s3_header_date_skew_and_x_amz_date() -> None:
    request = S3_HEADER_CASES["get object"]()
    now = datetime.now(UTC)
    check(request, now=now + timedelta(minutes=14))
    refused(request, "skewed", now=now + timedelta(minutes=16))
    # With x-amz-date the Date line of the string to sign is empty.
    date = request.headers.get("date")
    headers = Headers([(k, v) for k, v in request.headers if k != "date"] + [("x-amz-date", date)])
    text = sigv2.s3_string_to_sign(with_(request, headers=headers), "", presigned=False)
    signature = base64.b64encode(hmac.new(SECRET.encode(), text.encode(), hashlib.sha1).digest()).decode()
    headers.set("authorization", f"AWS {AKID}:{signature}")
    check(with_(request, headers=headers))
    assert text.split("\n")[3] == "" and f"x-amz-date:{date}\n" in text


def test_s3_header_needs_a_date() -> None:
    request = S3_HEADER_CASES["get object"]()
    headers = Headers([(k, v) for k, v in request.headers if k != "date"])
    refused(with_(request, headers=headers), "incomplete")
    refused(replace_header(request, "Date", "someday"), "incomplete")


@pytest.mark.parametrize("value", ["AWS", "AWS AKID", "AWS :sig", "AWS AKID:", "AWS  "])
def test_malformed_s3_header(value: str) -> None:
    request = HttpRequest("GET", "/b/k", "", Headers([("Host", "s3.example.com"), ("Authorization", value)]))
    with pytest.raises(AuthError) as caught:
        auth.extract(request)
    assert caught.value.kind == "incomplete"


def test_garbage_s3_signature() -> None:
    request = S3_HEADER_CASES["get object"]()
    for garbage in ("!!!!", "é", "AAAA", "x" * 200):
        refused(replace_header(request, "Authorization", f"AWS {AKID}:{garbage}"), "signature")


def test_canonical_resource_order_and_values() -> None:
    request = HttpRequest("GET", "/b/k", "versionId=a%2Fb&acl&x=1&response-expires=Thu%2C%2001", Headers())
    assert sigv2.canonical_resource(request) == "/b/k?acl&response-expires=Thu, 01&versionId=a/b"


# -- S3 SigV2: presigned URLs ----------------------------------------------------------------------


def s3_presigned(
    url: str, *, expires: int = 3600, token: str | None = None, headers: dict[str, str] | None = None
) -> HttpRequest:
    request = AWSRequest("GET", url, headers=headers or {})
    HmacV1QueryAuth(Credentials(AKID, SECRET, token), expires=expires).add_auth(request)
    # Only the URL is handed out: whoever uses it sends none of botocore's headers.
    return to_http_request(request, keep_headers=False)


def test_botocore_s3_presigned_urls_verify() -> None:
    request = s3_presigned("https://s3.amazonaws.com/bucket/some%20key?response-content-disposition=inline")
    assert check(request) == SignatureInfo("v2-s3-query", AKID, None, None, None)
    with_token = s3_presigned("https://s3.amazonaws.com/bucket/key?versionId=7", token="tok+/=")
    assert check(with_token).session_token == "tok+/="


def test_s3_presigned_content_type_travels_in_the_query() -> None:
    request = s3_presigned("https://s3.amazonaws.com/bucket/key", headers={"Content-Type": "text/plain"})
    assert "content-type=text%2Fplain" in request.query_string
    check(request)


def test_s3_presigned_urls_expire() -> None:
    request = s3_presigned("https://s3.amazonaws.com/bucket/key", expires=60)
    now = datetime.now(UTC)
    check(request, now=now + timedelta(seconds=50))
    refused(request, "expired", now=now + timedelta(seconds=70))


def test_s3_presigned_tampering() -> None:
    request = s3_presigned("https://s3.amazonaws.com/bucket/key?versionId=7", token="tok")
    refused(request, "signature", "another secret")
    refused(with_(request, raw_path="/bucket/other"), "signature")
    refused(
        with_(request, query_string=request.query_string.replace("versionId=7", "versionId=8")), "signature"
    )
    refused(
        with_(
            request,
            query_string=request.query_string.replace(
                "x-amz-security-token=tok", "x-amz-security-token=other"
            ),
        ),
        "signature",
    )
    expires = int(request.query_string.split("Expires=")[1].split("&")[0])
    longer = request.query_string.replace(f"Expires={expires}", f"Expires={expires + 3600}")
    refused(with_(request, query_string=longer), "signature")


@pytest.mark.parametrize(
    "query",
    [
        "AWSAccessKeyId=A",
        "Signature=abc",
        "AWSAccessKeyId=A&Signature=abc",
        "AWSAccessKeyId=A&Signature=a&Expires=x",
        "AWSAccessKeyId=A&Signature=a&Expires=-1",
        "AWSAccessKeyId=A&Signature=a&Expires=%EF%BC%91",
    ],
)
def test_malformed_s3_presigned(query: str) -> None:
    with pytest.raises(AuthError) as caught:
        auth.extract(HttpRequest("GET", "/b/k", query, Headers([("Host", "s3.example.com")])))
    assert caught.value.kind == "incomplete"


def test_fuzzed_sigv2_requests_only_raise_auth_errors() -> None:
    rng = random.Random(2)
    bases = [
        ec2_post(),
        S3_HEADER_CASES["put with metadata"](),
        s3_presigned("https://s3.amazonaws.com/b/k?acl", token="t"),
    ]
    alphabet = "AWS :=&%+/?é\x00\r\n0123456789abcdef"
    for _ in range(1500):
        base = rng.choice(bases)
        field = rng.choice(["authorization", "query", "body", "date"])
        text = {
            "authorization": base.headers.get("authorization") or "",
            "query": base.query_string,
            "body": base.body.decode("utf-8", "replace"),
            "date": base.headers.get("date") or "",
        }[field]
        chars = list(text)
        for _ in range(rng.randint(1, 4)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(alphabet))
            if chars and rng.random() < 0.5:
                del chars[rng.randrange(len(chars))]
        mutated = "".join(chars)
        if field == "query":
            request = with_(base, query_string=mutated)
        elif field == "body":
            request = with_(base, body=mutated.encode("utf-8"))
        else:
            request = replace_header(base, field, mutated)
        try:
            info = auth.extract(request)
            if info is not None:
                auth.verify(request, info, SECRET, datetime.now(UTC))
        except AuthError:
            pass
