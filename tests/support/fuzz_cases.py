"""Every case of the fuzz suite: each operation's (support/fuzz_query.py, support/fuzz_s3.py) and
the services' general ones, all of them (`--fuzz-full`) or a fixed sample of each operation's (CI)."""

from __future__ import annotations

import random
from collections.abc import Iterator

from mallee.protocol.specs import load_service
from support.fuzz import SAMPLE_IMPLEMENTED, SAMPLE_PER_OPERATION, SEED, SERVICES, Case, sample
from support.fuzz_query import QueryCases, general_cases
from support.fuzz_s3 import S3Cases


def cases(
    service: str, operation: str, bucket: str = "bucket", missing_bucket: str = "nobucket"
) -> list[Case]:
    """Every malformed request of one operation."""
    model = load_service(service).operation_model(operation)
    if service == "s3":
        return S3Cases(model, bucket, missing_bucket).all()
    return QueryCases(service, model).all()


_ACTIONS = {"ec2": "DescribeRegions", "iam": "ListUsers", "sts": "GetCallerIdentity"}
_SCOPE = "AKIAFUZZ/20260101/mallee-1/{service}/aws4_request"
_V4 = "AWS4-HMAC-SHA256 Credential="
_AUTHORIZATIONS = (
    ("bare-scheme", "AWS4-HMAC-SHA256"),
    ("empty-credential", _V4 + ", SignedHeaders=, Signature="),
    ("bad-signature", _V4 + "{scope}, SignedHeaders=host;x-amz-date, Signature=zz"),
    ("short-scope", _V4 + "AKIAFUZZ/20260101, SignedHeaders=host, Signature=00"),
    ("bad-date", _V4 + "AKIAFUZZ/20261399/x/{service}/aws4_request, SignedHeaders=host, Signature=00"),
    ("huge-credential", _V4 + "A" * 20_000 + ", SignedHeaders=host, Signature=00"),
    ("latin1-credential", _V4 + "\xff\xfe/20260101/mallee-1/{service}/aws4_request, SignedHeaders=host"),
    ("many-signed-headers", _V4 + "{scope}, SignedHeaders=" + ";".join(["x"] * 5000) + ", Signature=00"),
    ("duplicate-fields", _V4 + "{scope}, Credential={scope}, SignedHeaders=host, Signature=00"),
    ("sigv2-header", "AWS AKIAFUZZ:c2lnbmF0dXJl"),
    ("sigv2-no-colon", "AWS AKIAFUZZ"),
    ("sigv2-empty", "AWS :"),
    ("other-scheme", "Bearer token"),
    ("control-chars", _V4 + "\x01\x02, SignedHeaders=\x7f, Signature=\x1b"),
)
_V4_QUERY = {
    "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
    "X-Amz-Credential": "{scope}",
    "X-Amz-Date": "20260101T000000Z",
    "X-Amz-Expires": "60",
    "X-Amz-SignedHeaders": "host",
    "X-Amz-Signature": "00",
}
_PRESIGNED: tuple[tuple[str, dict[str, str]], ...] = (
    ("expires-negative", {"X-Amz-Expires": "-1"}),
    ("expires-huge", {"X-Amz-Expires": "9" * 20}),
    ("date-garbage", {"X-Amz-Date": "garbage"}),
    ("credential-not-utf8", {"X-Amz-Credential": "%FF%FE"}),
    ("unknown-algorithm", {"X-Amz-Algorithm": "AWS4-HMAC-MD5"}),
    ("signed-headers-empty", {"X-Amz-SignedHeaders": ""}),
    ("no-signature", {"X-Amz-Signature": ""}),
)
_PRESIGNED_RAW = (
    (
        "duplicated",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Algorithm=x&X-Amz-Signature=00&X-Amz-Signature=11",
    ),
    ("sigv2-expires-garbage", "AWSAccessKeyId=AKIAFUZZ&Expires=soon&Signature=%FF"),
    ("sigv2-expires-huge", "AWSAccessKeyId=AKIAFUZZ&Expires=" + "9" * 40 + "&Signature=x"),
)
_SIGV2 = "SignatureVersion=2&SignatureMethod=HmacSHA256&"
_SIGV2_FORMS = (
    ("timestamp-garbage", _SIGV2 + "Timestamp=garbage"),
    ("expires-garbage", _SIGV2 + "Expires=" + "9" * 40),
    ("unknown-version", "SignatureVersion=99&SignatureMethod=HmacSHA256&Timestamp=2026-01-01T00:00:00Z"),
    ("unknown-method", "SignatureVersion=2&SignatureMethod=HmacMD5&Timestamp=2026-01-01T00:00:00Z"),
    ("signature-not-base64", _SIGV2 + "Timestamp=2026-01-01T00:00:00Z&Signature=%FF"),
)


def auth_cases(service: str, bucket: str) -> list[Case]:
    """Requests whose signature is broken (sent unsigned, with these headers or parameters): the
    authentication code's hostile input."""
    scope = _SCOPE.format(service=service)
    date = ("X-Amz-Date", "20260101T000000Z")
    found: list[Case] = []
    if service == "s3":
        target = f"/{bucket}/fuzz-key"
        for detail, value in _AUTHORIZATIONS:
            headers = (("Authorization", value.format(scope=scope, service=service)), date)
            found.append(Case(service, "-", "auth", detail, "GET", target, headers, signed=False))
        queries = [
            (detail, "&".join(f"{k}={v}" for k, v in {**_V4_QUERY, **spoiled}.items()).format(scope=scope))
            for detail, spoiled in _PRESIGNED
        ]
        for detail, query in [*queries, *_PRESIGNED_RAW]:
            found.append(Case(service, "-", "auth", detail, "GET", f"{target}?{query}", signed=False))
        return found
    version = load_service(service).api_version
    body = f"Action={_ACTIONS[service]}&Version={version}".encode()
    for detail, value in _AUTHORIZATIONS:
        if detail == "control-chars":
            continue  # not HTTP: refused from the head, which cannot tell IAM from EC2 (raw-socket cases)
        headers = (("Authorization", value.format(scope=scope, service=service)), date)
        found.append(Case(service, "-", "auth", detail, headers=headers, body=body, signed=False))
    for detail, form in _SIGV2_FORMS:
        sigv2 = body + b"&AWSAccessKeyId=AKIAFUZZ&" + form.encode()
        found.append(Case(service, "-", "auth", detail, body=sigv2, signed=False))
    return found


def all_cases(
    full: bool,
    seed: int = SEED,
    bucket: str = "bucket",
    missing_bucket: str = "nobucket",
    implemented: frozenset[str] = frozenset(),
) -> Iterator[Case]:
    """Every case of every operation (full), or a sample of each operation's (larger for the
    `implemented` ones, named "service:Operation")."""
    for service in SERVICES:
        yield from service_cases(service, full, seed, bucket, missing_bucket, implemented)


def service_cases(
    service: str,
    full: bool,
    seed: int = SEED,
    bucket: str = "bucket",
    missing_bucket: str = "nobucket",
    implemented: frozenset[str] = frozenset(),
) -> Iterator[Case]:
    """`all_cases`' cases of one service, in the same order."""
    yield from general_cases(service)
    yield from auth_cases(service, bucket)
    for operation in load_service(service).operation_names:
        found = cases(service, operation, bucket, missing_bucket)
        if not full:
            rng = random.Random(f"{seed}:{service}:{operation}")
            size = (
                SAMPLE_IMPLEMENTED
                if f"{service}:{operation}" in implemented
                else SAMPLE_PER_OPERATION[service]
            )
            found = sample(found, size, rng)
        yield from found
