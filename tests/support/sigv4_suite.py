"""AWS's SigV4 test suite as data: the requests and the signatures AWS computed for them (the
suite's tests are in tests/unit/protocol/test_sigv4.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from mallee.core.context import Headers, HttpRequest

AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

# From the AWS Signature Version 4 test suite (as shipped in awslabs/aws-c-auth,
# tests/aws-signing-test-suite/v4/<name>/header-signed-request.txt): the request and the signature
# AWS computed for it. Service "service", region us-east-1, 20150830T123600Z. The suite's request
# line holds the path as given to the signer (`/ሴ`, `/example space/`), which is how it arrives
# in `raw_path` here: a non-S3 signer encodes the path it is given once.

SUITE_NOW = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)
DATE = ("X-Amz-Date", "20150830T123600Z")
HOST = ("Host", "example.amazonaws.com")
UNRESERVED = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

SUITE = {
    # name: (method, raw path, query, headers, body, signed headers, signature)
    "get-vanilla": (
        "GET",
        "/",
        "",
        [HOST, DATE],
        b"",
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    "get-vanilla-query-order-key-case": (
        "GET",
        "/",
        "Param2=value2&Param1=value1",
        [HOST, DATE],
        b"",
        "host;x-amz-date",
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    ),
    "get-vanilla-query-unreserved": (
        "GET",
        "/",
        f"{UNRESERVED}={UNRESERVED}",
        [HOST, DATE],
        b"",
        "host;x-amz-date",
        "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
    ),
    "get-vanilla-utf8-query": (
        "GET",
        "/",
        "%E1%88%B4=bar",
        [HOST, DATE],
        b"",
        "host;x-amz-date",
        "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
    ),
    "get-utf8": (
        "GET",
        "/\u1234",
        "",
        [HOST, DATE],
        b"",
        "host;x-amz-date",
        "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
    ),
    "get-unreserved": (
        "GET",
        f"/{UNRESERVED}",
        "",
        [HOST, DATE],
        b"",
        "host;x-amz-date",
        "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
    ),
    "get-space-normalized": (
        "GET",
        "/example space/",
        "",
        [HOST, DATE],
        b"",
        "host;x-amz-date",
        "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
    ),
    "get-slashes-normalized": (
        "GET",
        "//example//",
        "",
        [HOST, DATE],
        b"",
        "host;x-amz-date",
        "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
    ),
    "get-relative-relative-normalized": (
        "GET",
        "/example1/example2/../..",
        "",
        [HOST, DATE],
        b"",
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    "get-header-key-duplicate": (
        "GET",
        "/",
        "",
        [HOST, ("My-Header1", "value2"), ("My-Header1", "value2"), ("My-Header1", "value1"), DATE],
        b"",
        "host;my-header1;x-amz-date",
        "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
    ),
    "get-header-value-trim": (
        "GET",
        "/",
        "",
        [HOST, ("My-Header1", " value1"), ("My-Header2", ' "a   b   c"'), DATE],
        b"",
        "host;my-header1;my-header2;x-amz-date",
        "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
    ),
    "get-vanilla-with-session-token": (
        "GET",
        "/",
        "",
        [
            HOST,
            DATE,
            ("X-Amz-Security-Token", "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"),
        ],
        b"",
        "host;x-amz-date;x-amz-security-token",
        "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
    ),
    "post-x-www-form-urlencoded": (
        "POST",
        "/",
        "",
        [
            ("Content-Type", "application/x-www-form-urlencoded"),
            HOST,
            ("Content-Length", "13"),
            ("x-amz-content-sha256", "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"),
            DATE,
        ],
        b"Param1=value1",
        "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
        "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
    ),
}


def suite_request(name: str, signature: str | None = None) -> HttpRequest:
    method, path, query, headers, body, signed, expected = SUITE[name]
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={AKID}/20150830/us-east-1/service/aws4_request, "
        f"SignedHeaders={signed}, Signature={signature or expected}"
    )
    return HttpRequest(method, path, query, Headers([*headers, ("Authorization", authorization)]), body)
