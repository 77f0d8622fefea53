"""SigV4 verification, checked against botocore's own signers and AWS's published test vectors."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from mallee.core.context import Headers, HttpRequest
from mallee.protocol import auth, sigv4
from mallee.protocol.auth import AuthError, SignatureInfo
from support.sigv4_suite import AKID, HOST, SECRET, SUITE, SUITE_NOW, suite_request

FORM = "application/x-www-form-urlencoded; charset=utf-8"


def to_http_request(aws_request: AWSRequest, *, drop: tuple[str, ...] = ()) -> HttpRequest:
    """What our server would see for the request botocore signed: the URL split as sent."""
    prepared = aws_request.prepare()
    url = urlsplit(prepared.url)
    headers = [(k, v) for k, v in prepared.headers.items() if k.lower() not in drop]
    if not any(k.lower() == "host" for k, _ in headers):
        headers.insert(0, ("Host", url.netloc))  # urllib3 adds it on the wire
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return HttpRequest(prepared.method, url.path, url.query, Headers(headers), body)


def sign(
    signer: type[SigV4Auth],
    service: str,
    method: str,
    url: str,
    *,
    data: bytes | dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    token: str | None = None,
    **kwargs: object,
) -> HttpRequest:
    creds = Credentials(AKID, SECRET, token)
    request = AWSRequest(method, url, data=data, headers=headers or {})
    signer(creds, service, "us-east-1", **kwargs).add_auth(request)  # type: ignore[arg-type]
    # Presigned: botocore also leaves its date headers on the request object; a browser or curl
    # fetching the URL would not send them.
    drop = ("x-amz-date",) if "expires" in kwargs else ()
    return to_http_request(request, drop=drop)


def check(request: HttpRequest, secret: str = SECRET, now: datetime | None = None) -> SignatureInfo:
    info = auth.extract(request)
    assert info is not None
    auth.verify(request, info, secret, now or datetime.now(UTC))
    return info


def refused(request: HttpRequest, kind: str, secret: str = SECRET, now: datetime | None = None) -> AuthError:
    with pytest.raises(AuthError) as caught:
        check(request, secret, now)
    assert caught.value.kind == kind, caught.value.message
    return caught.value


def replace_header(request: HttpRequest, name: str, value: str) -> HttpRequest:
    headers = Headers(request.headers.items())
    headers.set(name, value)
    return HttpRequest(request.method, request.raw_path, request.query_string, headers, request.body)


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


# -- botocore as the reference signer ----------------------------------------------------------


def ec2_post() -> HttpRequest:
    return sign(
        SigV4Auth,
        "ec2",
        "POST",
        "https://ec2.us-east-1.amazonaws.com/",
        data={
            "Action": "DescribeInstances",
            "Version": "2016-11-15",
            "Filter.1.Name": "tag:Name",
            "Filter.1.Value.1": "a b/c*",
        },
        headers={"Content-Type": FORM},
    )


def s3_put() -> HttpRequest:
    # botocore's serializer percent-encodes the key (quote(key, safe="/~")) before signing.
    return sign(
        S3SigV4Auth,
        "s3",
        "PUT",
        "https://s3.us-east-1.amazonaws.com/bucket/a%20b%21c%28d%29%2A~.txt",
        data=b"hello world",
        headers={"Content-Type": "text/plain", "x-amz-meta-note": "  two   spaces "},
    )


SIGNED_BY_BOTOCORE = {
    "ec2 form POST": ec2_post,
    "iam GET with encoded query": lambda: sign(
        SigV4Auth,
        "iam",
        "GET",
        "https://iam.amazonaws.com/?Version=2010-05-08&Action=ListUsers&PathPrefix=%2Fdivision%20abc%2F",
    ),
    "sts POST with session token": lambda: sign(
        SigV4Auth,
        "sts",
        "POST",
        "https://sts.amazonaws.com/",
        data={"Action": "GetCallerIdentity", "Version": "2011-06-15"},
        headers={"Content-Type": FORM},
        token="FQoGZXIvYXdzE//token+/=",
    ),
    # Not S3: the (already encoded) path is encoded once more when signed.
    "rest path, double-encoded": lambda: sign(
        SigV4Auth,
        "lambda",
        "POST",
        "https://lambda.us-east-1.amazonaws.com/2015-03-31/functions/my%20func%3Av1/invocations",
        data=b'{"a": 1}',
        headers={"Content-Type": "application/json"},
    ),
    # Not S3: dot segments and double slashes are normalized away when signed, not on the wire.
    "rest path, normalized": lambda: sign(
        SigV4Auth,
        "execute-api",
        "GET",
        "https://api.example.com//a/./b/../c/",
    ),
    "Date header instead of X-Amz-Date": lambda: sign(
        SigV4Auth,
        "ec2",
        "GET",
        "https://ec2.us-east-1.amazonaws.com/?Action=DescribeRegions",
        headers={"Date": "placeholder"},
    ),
    "s3 PUT, odd key": s3_put,
    # S3 signs the path as sent: '//' and '..' are part of the key.
    "s3 GET, unnormalized key": lambda: sign(
        S3SigV4Auth,
        "s3",
        "GET",
        "https://s3.us-east-1.amazonaws.com/bucket/x//y/../z",
    ),
    "s3 list with query": lambda: sign(
        S3SigV4Auth,
        "s3",
        "GET",
        "https://bucket.s3.us-east-1.amazonaws.com/?list-type=2&prefix=a%2Fb&delimiter=%2F&encoding-type=url",
    ),
    "s3 unsigned payload": lambda: sign(
        S3SigV4Auth,
        "s3",
        "PUT",
        "https://s3.us-east-1.amazonaws.com/bucket/key",
        data=b"data",
        headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"},
        token="session-token",
    ),
    "sts presigned": lambda: sign(
        SigV4QueryAuth,
        "sts",
        "GET",
        "https://sts.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15",
        expires=900,
    ),
    "s3 presigned with token": lambda: sign(
        S3SigV4QueryAuth,
        "s3",
        "GET",
        "https://s3.us-east-1.amazonaws.com/bucket/some%20key?versionId=v1&response-content-type=text%2Fplain",
        expires=3600,
        token="tok/with+chars=",
    ),
}


@pytest.mark.parametrize("make", SIGNED_BY_BOTOCORE.values(), ids=SIGNED_BY_BOTOCORE.keys())
def test_botocore_signed_requests_verify(make) -> None:
    request = make()
    info = check(request)
    assert info.access_key_id == AKID
    assert info.region == "us-east-1"
    assert info.scheme == ("v4-query" if "X-Amz-Signature" in request.query_string else "v4-header")
    assert auth.payload_hash_matches(request)


def test_extract_reports_scope_and_session_token() -> None:
    info = check(SIGNED_BY_BOTOCORE["sts POST with session token"]())
    assert info == SignatureInfo("v4-header", AKID, "us-east-1", "sts", "FQoGZXIvYXdzE//token+/=")
    info = check(SIGNED_BY_BOTOCORE["s3 presigned with token"]())
    assert info == SignatureInfo("v4-query", AKID, "us-east-1", "s3", "tok/with+chars=")


def test_anonymous_requests_have_no_signature() -> None:
    request = HttpRequest("GET", "/bucket/key", "versionId=1", Headers([("Host", "s3.example.com")]))
    assert auth.extract(request) is None


TAMPERING = {
    "wrong secret": lambda r: (r, "another secret"),
    "signed header changed": lambda r: (replace_header(r, "Host", "evil.example.com"), SECRET),
    "path changed": lambda r: (with_(r, raw_path=r.raw_path + "x"), SECRET),
    "query added": lambda r: (
        with_(r, query_string=(r.query_string + "&" if r.query_string else "") + "x=1"),
        SECRET,
    ),
    "method changed": lambda r: (with_(r, method="DELETE"), SECRET),
    "signature altered": lambda r: (
        replace_header(r, "Authorization", r.headers.get("authorization")[:-4] + "0000"),
        SECRET,
    ),
}


@pytest.mark.parametrize("base", ["ec2 form POST", "s3 PUT, odd key", "rest path, double-encoded"])
@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=TAMPERING.keys())
def test_tampering_breaks_the_signature(base: str, tamper) -> None:
    request, secret = tamper(SIGNED_BY_BOTOCORE[base]())
    refused(request, "signature", secret)


def test_changed_body_outside_s3_breaks_the_signature() -> None:
    request = ec2_post()
    refused(
        with_(request, body=request.body.replace(b"DescribeInstances", b"TerminateInstances")), "signature"
    )


def test_lying_content_sha256_outside_s3_is_refused() -> None:
    request = replace_header(ec2_post(), "x-amz-content-sha256", "0" * 64)
    refused(request, "signature")


def test_changed_body_in_s3_is_left_to_the_payload_hash() -> None:
    # The header's hash is what S3 signs; the body is checked against it by the caller.
    request = with_(s3_put(), body=b"hello w0rld")
    check(request)
    assert not auth.payload_hash_matches(request)


def test_changed_signed_meta_header_in_s3() -> None:
    refused(replace_header(s3_put(), "x-amz-meta-note", "other"), "signature")
    # Whitespace is canonicalized: trimming and collapsing does not change what is signed.
    check(replace_header(s3_put(), "x-amz-meta-note", "two spaces"))


def test_path_encoding_matters() -> None:
    s3 = SIGNED_BY_BOTOCORE["s3 GET, unnormalized key"]()
    refused(with_(s3, raw_path="/bucket/x/z"), "signature")
    rest = SIGNED_BY_BOTOCORE["rest path, double-encoded"]()
    refused(with_(rest, raw_path=rest.raw_path.replace("%20", "+")), "signature")


def test_presigned_tampering() -> None:
    request = SIGNED_BY_BOTOCORE["s3 presigned with token"]()
    refused(
        with_(request, query_string=request.query_string.replace("versionId=v1", "versionId=v2")), "signature"
    )
    refused(
        with_(request, query_string=request.query_string.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200")),
        "signature",
    )
    refused(with_(request, raw_path="/bucket/other"), "signature")
    refused(request, "signature", "another secret")


def test_session_token_is_signed() -> None:
    request = SIGNED_BY_BOTOCORE["sts POST with session token"]()
    refused(replace_header(request, "X-Amz-Security-Token", "other-token"), "signature")


# -- time ---------------------------------------------------------------------------------------


def test_header_signatures_must_be_close_to_the_clock() -> None:
    request = ec2_post()
    now = datetime.now(UTC)
    check(request, now=now + timedelta(minutes=14))
    check(request, now=now - timedelta(minutes=14))
    error = refused(request, "skewed", now=now + timedelta(minutes=16))
    assert error.message.startswith("Signature expired")
    error = refused(request, "skewed", now=now - timedelta(minutes=16))
    assert error.message.startswith("Signature not yet current")
    # A naive `now` is taken as UTC.
    check(request, now=datetime.now(UTC).replace(tzinfo=None))


def test_presigned_requests_expire() -> None:
    request = SIGNED_BY_BOTOCORE["sts presigned"]()  # X-Amz-Expires=900
    now = datetime.now(UTC)
    check(request, now=now + timedelta(seconds=880))
    refused(request, "expired", now=now + timedelta(seconds=920))
    request = SIGNED_BY_BOTOCORE["s3 presigned with token"]()  # X-Amz-Expires=3600
    check(request, now=now + timedelta(minutes=59))  # long past the header-signature skew
    refused(request, "expired", now=now + timedelta(minutes=61))


def test_presigned_requests_from_the_future_are_skewed() -> None:
    request = SIGNED_BY_BOTOCORE["s3 presigned with token"]()
    now = datetime.now(UTC)
    check(request, now=now - timedelta(minutes=14))
    refused(request, "skewed", now=now - timedelta(minutes=16))


@pytest.mark.parametrize("expires", ["0", "604801", "-5", "ten", ""])
def test_presigned_expiry_must_be_a_week_at_most(expires: str) -> None:
    request = SIGNED_BY_BOTOCORE["s3 presigned with token"]()
    query = request.query_string.replace("X-Amz-Expires=3600", f"X-Amz-Expires={expires}")
    with pytest.raises(AuthError) as caught:
        auth.extract(with_(request, query_string=query))
    assert caught.value.kind == "incomplete"


# -- AWS's SigV4 test suite (its requests: support/sigv4_suite.py) -------------------------------


@pytest.mark.parametrize("name", SUITE)
def test_aws_test_suite(name: str) -> None:
    check(suite_request(name), now=SUITE_NOW)
    refused(suite_request(name, signature="0" * 64), "signature", now=SUITE_NOW)


def test_aws_test_suite_query_order_presigned() -> None:
    # get-vanilla-query-order-key-case, query-signed-request.txt
    query = (
        "Param2=value2&Param1=value1&X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request"
        "&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600"
        "&X-Amz-Signature=86012e2c9ad4d77369f5d81c11f75158aae4f895a085212cc6d3f923d300bed5"
    )
    request = HttpRequest("GET", "/", query, Headers([HOST]))
    assert check(request, now=SUITE_NOW + timedelta(minutes=59)).scheme == "v4-query"
    refused(request, "expired", now=SUITE_NOW + timedelta(minutes=61))


def test_s3_documentation_examples() -> None:
    # S3 API reference, "Signature Calculations for the Authorization Header: Transferring Payload
    # in a Single Chunk", GET Object example, and "Authenticating Requests: Using Query
    # Parameters", its presigned URL example.
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    now = datetime(2013, 5, 24, tzinfo=UTC)
    get_object = HttpRequest(
        "GET",
        "/test.txt",
        "",
        Headers(
            [
                ("Host", "examplebucket.s3.amazonaws.com"),
                (
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                    "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                    "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
                ),
                ("Range", "bytes=0-9"),
                ("x-amz-content-sha256", sigv4.EMPTY_SHA256),
                ("x-amz-date", "20130524T000000Z"),
            ]
        ),
    )
    check(get_object, secret, now)
    presigned = HttpRequest(
        "GET",
        "/test.txt",
        (
            "X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
            "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
            "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        ),
        Headers([("Host", "examplebucket.s3.amazonaws.com")]),
    )
    check(presigned, secret, now + timedelta(hours=23))


# -- building blocks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "s3", "canonical"),
    [
        ("", False, "/"),
        ("/a/./b/../c", False, "/a/c"),
        ("/a//b/", False, "/a/b/"),
        ("/..", False, "/"),
        ("/a%20b", False, "/a%2520b"),
        ("/a%20b", True, "/a%20b"),
        ("/a//b/../c", True, "/a//b/../c"),
        ("/a b!", True, "/a%20b%21"),
    ],
)
def test_canonical_uri(raw: str, s3: bool, canonical: str) -> None:
    assert sigv4.canonical_uri(raw, s3=s3) == canonical


def test_canonical_query() -> None:
    assert sigv4.canonical_query("b=2&a=2&a=1&c") == "a=1&a=2&b=2&c="
    assert sigv4.canonical_query("k=a+b&x=%7e&y=%2f%FF") == "k=a%2Bb&x=~&y=%2F%FF"
    assert sigv4.canonical_query("X-Amz-Signature=abc&a=1", exclude=("X-Amz-Signature",)) == "a=1"


def test_signing_key_matches_the_documented_derivation() -> None:
    # IAM user guide, "Signature Version 4 signing process" example signing key.
    key = sigv4.signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_payload_hash_matches() -> None:
    request = s3_put()
    assert auth.payload_hash_matches(request)
    assert not auth.payload_hash_matches(with_(request, body=b"other"))
    assert auth.payload_hash_matches(replace_header(request, "x-amz-content-sha256", "UNSIGNED-PAYLOAD"))
    assert auth.payload_hash_matches(HttpRequest("GET", "/", "", Headers()))


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        AuthError("no-such-kind", "m")


# get-vanilla's Authorization header (AWS SigV4 test suite), reused where only its shape matters.
GOOD_AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
    "SignedHeaders=host;x-amz-date, "
    "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
)


def test_missing_date() -> None:
    request = HttpRequest("GET", "/", "", Headers([HOST, ("Authorization", GOOD_AUTH)]))
    refused(request, "incomplete", now=SUITE_NOW)
    request = HttpRequest(
        "GET", "/", "", Headers([HOST, ("Date", "not a date"), ("Authorization", GOOD_AUTH)])
    )
    refused(request, "incomplete", now=SUITE_NOW)


def test_s3_needs_a_valid_content_sha256() -> None:
    request = s3_put()
    headers = Headers([(k, v) for k, v in request.headers if k != "x-amz-content-sha256"])
    refused(with_(request, headers=headers), "incomplete")
    refused(replace_header(request, "x-amz-content-sha256", "abc"), "incomplete")
    refused(
        replace_header(request, "x-amz-content-sha256", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"),
        "unsupported",
    )


@pytest.mark.parametrize(
    "query",
    [
        "X-Amz-Signature=abc",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a&X-Amz-Date=x&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=00",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20150830%2Fr%2Fs3%2Faws4_request"
        "&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Signature=00",  # s3 without expiry
    ],
)
def test_malformed_presigned_queries(query: str) -> None:
    with pytest.raises(AuthError) as caught:
        auth.extract(HttpRequest("GET", "/", query, Headers([HOST])))
    assert caught.value.kind == "incomplete"


def test_a_malformed_signature_is_refused_alike_each_time_it_is_read() -> None:
    request = HttpRequest("GET", "/", "X-Amz-Signature=abc", Headers([HOST]))
    errors = []
    for _ in range(2):  # the second reading comes from the request's memo
        with pytest.raises(AuthError) as caught:
            auth.extract(request)
        errors.append((caught.value.kind, caught.value.message))
    assert errors[0] == errors[1] and errors[0][0] == "incomplete"


def test_two_signatures_are_refused() -> None:
    presigned = SIGNED_BY_BOTOCORE["sts presigned"]()
    both = replace_header(presigned, "Authorization", GOOD_AUTH)
    with pytest.raises(AuthError) as caught:
        auth.extract(both)
    assert caught.value.kind == "incomplete"


def _mutate(text: str, rng: random.Random) -> str:
    alphabet = "AWS4-HMAC-SHA256 ,;=/%&+?:é\x00\t\r\n0123456789abcdefXYZ"
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        action = rng.randrange(3)
        position = rng.randrange(len(chars) + 1)
        if action == 0 and chars:
            del chars[min(position, len(chars) - 1)]
        elif action == 1:
            chars.insert(position, rng.choice(alphabet))
        elif chars:
            chars[min(position, len(chars) - 1)] = rng.choice(alphabet)
    return "".join(chars)


def test_fuzzed_requests_only_raise_auth_errors() -> None:
    rng = random.Random(20150830)
    header_signed = suite_request("get-vanilla-query-order-key-case")
    presigned = SIGNED_BY_BOTOCORE["s3 presigned with token"]()
    for _ in range(1500):
        request = with_(header_signed)
        target = rng.randrange(4)
        if target == 0:
            request = replace_header(
                request, "Authorization", _mutate(request.headers.get("authorization"), rng)
            )
        elif target == 1:
            request = replace_header(request, "X-Amz-Date", _mutate("20150830T123600Z", rng))
        elif target == 2:
            request = with_(presigned, query_string=_mutate(presigned.query_string, rng))
        else:
            request = with_(request, raw_path=_mutate("/a/../b%2", rng), query_string=_mutate("a=%E1&b", rng))
        try:
            info = auth.extract(request)
            if info is not None:
                auth.verify(request, info, SECRET, SUITE_NOW)
        except AuthError:
            pass


def test_botocore_presigned_query_url_for_a_query_service_verifies() -> None:
    """A GET of a presigned STS URL, as Kubernetes' aws-iam-authenticator tokens are used."""
    import botocore.session

    client = botocore.session.get_session().create_client(
        "sts", region_name="us-east-1", endpoint_url="http://localhost:8773",
        aws_access_key_id=AKID, aws_secret_access_key=SECRET,
    )  # fmt: skip
    url = client.generate_presigned_url("get_caller_identity", ExpiresIn=300, HttpMethod="GET")
    path, _, query = url.removeprefix("http://localhost:8773").partition("?")
    request = HttpRequest("GET", path or "/", query, Headers([("Host", "localhost:8773")]))
    info = auth.extract(request)
    assert info is not None
    auth.verify(request, info, SECRET, datetime.now(UTC))
    with pytest.raises(AuthError):
        auth.verify(request, info, "wrong" + SECRET, datetime.now(UTC))
