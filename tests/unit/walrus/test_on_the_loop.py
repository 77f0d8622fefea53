"""Which requests Walrus answers on its event loop (one object read, nothing that can wait on the
network) and which go to a handler thread."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from mallee.core import config as config_mod
from mallee.core.context import Headers, HttpRequest
from mallee.services.walrus.app import Walrus
from mallee.services.walrus.identity import KnownKey

KNOWN, UNKNOWN = "AKIAKNOWNKNOWNKNOWN1", "AKIAUNKNOWNUNKNOWN01"


@pytest.fixture
def walrus(tmp_path: Path) -> Iterator[Walrus]:
    cfg = config_mod.load(tmp_path, environ={"MALLEE_S3_DOMAIN": "s3.example"})
    cfg.deployment_key_file.write_text(secrets.token_hex(32))
    app = Walrus(cfg)
    entry = KnownKey(credential=None, policies=(), token_expires=None, fetched=time.monotonic())  # type: ignore[arg-type]
    app.identity._cache[KNOWN] = entry
    yield app
    app.db.dispose()


def request(method: str, url: str, key: str | None = KNOWN, body: bytes = b"") -> HttpRequest:
    aws = AWSRequest(method=method, url=url, data=body, headers={"host": url.split("/")[2]})
    if key is not None:
        S3SigV4Auth(Credentials(key, "secret"), "s3", "mallee-1").add_auth(aws)
    path, _, query = aws.url.split("/", 3)[-1].partition("?")
    return HttpRequest(
        method=method,
        raw_path="/" + path,
        query_string=query,
        headers=Headers((k, str(v)) for k, v in aws.headers.items()),
        body=body,
    )


@pytest.mark.parametrize(
    ("method", "url", "key", "expected"),
    [
        ("GET", "http://h/bucket/key", KNOWN, True),
        ("HEAD", "http://h/bucket/dir/key", KNOWN, True),
        ("GET", "http://h/bucket/key", None, True),  # anonymous: nothing to resolve
        ("GET", "http://bucket.s3.example/key", KNOWN, True),  # virtual-hosted style
        ("GET", "http://h/bucket/key", UNKNOWN, False),  # the key is resolved over rpc
        ("GET", "http://h/bucket/key?versionId=3", KNOWN, False),
        ("GET", "http://h/bucket/", KNOWN, False),  # a listing
        ("GET", "http://h/bucket", KNOWN, False),
        ("GET", "http://bucket.s3.example/", KNOWN, False),
        ("PUT", "http://h/bucket/key", KNOWN, False),
        ("DELETE", "http://h/bucket/key", KNOWN, False),
    ],
)
def test_one_object_reads_by_known_signers_are_answered_on_the_loop(
    walrus: Walrus, method: str, url: str, key: str | None, expected: bool
) -> None:
    assert walrus._answers_at_once(request(method, url, key)) is expected


def test_a_malformed_signature_goes_to_a_thread(walrus: Walrus) -> None:
    bad = request("GET", "http://h/bucket/key")
    bad.headers.set("authorization", "AWS4-HMAC-SHA256 Credential=broken")
    assert walrus._answers_at_once(bad) is False
