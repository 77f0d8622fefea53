"""Which requests Walrus answers on its event loop (one object read or a small PutObject, nothing
that can wait on the network) and which go to a handler thread; and how a PUT answered on the loop
waits for its commit."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from mallee.core import config as config_mod
from mallee.core.context import Headers, HttpRequest, HttpResponse
from mallee.core.errors import CloudError
from mallee.services.walrus.app import Walrus, _answer_then_commit
from mallee.services.walrus.bodies import INLINE_MAX
from mallee.services.walrus.identity import KnownKey
from mallee.services.walrus.object_layer import deferred_commits
from mallee.services.walrus.tables import Bucket

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


def request(method: str, url: str, key: str | None = KNOWN, body: bytes = b"", **headers: str) -> HttpRequest:
    aws = AWSRequest(method=method, url=url, data=body, headers={"host": url.split("/")[2], **headers})
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


OWNER = "111122223333"


@pytest.fixture
def ready(walrus: Walrus) -> Walrus:
    """`bucket` cached, its owner known to have no quota, `limited`'s owner to have one."""
    with walrus.db.session() as s:
        s.add(Bucket(name="bucket", owner_account_id=OWNER, created=dt.datetime.now(dt.UTC)))
        s.add(Bucket(name="limited", owner_account_id="999988887777", created=dt.datetime.now(dt.UTC)))
    assert walrus.buckets.get("bucket") is not None and walrus.buckets.get("limited") is not None
    walrus.quotas._cache[OWNER] = (time.monotonic(), {"max_objects": None, "max_bytes": None})
    walrus.quotas._cache["999988887777"] = (time.monotonic(), {"max_objects": 10, "max_bytes": None})
    return walrus


SMALL = {"Content-Length": "4096"}


@pytest.mark.parametrize(
    ("url", "key", "headers", "expected"),
    [
        ("http://h/bucket/key", KNOWN, SMALL, True),
        ("http://bucket.s3.example/key", KNOWN, SMALL, True),
        ("http://h/bucket/key?X-Amz-Expires=60", KNOWN, SMALL, True),  # presigned
        ("http://h/bucket/key", KNOWN, {"Content-Length": str(INLINE_MAX + 1)}, False),  # a blob
        ("http://h/bucket/key", KNOWN, {"Transfer-Encoding": "chunked"}, False),  # length unknown
        ("http://h/bucket/key", KNOWN, {}, False),
        ("http://h/bucket/key?acl", KNOWN, SMALL, False),
        ("http://h/bucket/key?partNumber=1&uploadId=u", KNOWN, SMALL, False),
        ("http://h/bucket/key", KNOWN, {**SMALL, "x-amz-copy-source": "/bucket/other"}, False),
        ("http://h/bucket/key", UNKNOWN, SMALL, False),
        ("http://h/uncached/key", KNOWN, SMALL, False),
        ("http://h/limited/key", KNOWN, SMALL, False),  # a quota: counting objects may take long
        ("http://h/bucket", KNOWN, SMALL, False),
    ],
)
def test_small_puts_by_known_signers_into_known_buckets_are_answered_on_the_loop(
    ready: Walrus, url: str, key: str, headers: dict[str, str], expected: bool
) -> None:
    assert ready._puts_at_once(request("PUT", url, key, **headers)) is expected


def _queueing(outcome: BaseException | None) -> Callable[[HttpRequest], HttpResponse]:
    """A handler that answers 200 and queues a commit ending with `outcome` (None: success)."""

    def handler(_request: HttpRequest) -> HttpResponse:
        future: Future[None] = Future()
        if outcome is None:
            future.set_result(None)
        else:
            future.set_exception(outcome)
        pending = deferred_commits.get()
        assert pending is not None
        pending.append(future)
        return HttpResponse(200, [("x-amz-request-id", "r1")], b"")

    return handler


def test_a_put_on_the_loop_answers_once_its_commit_is_done() -> None:
    response = asyncio.run(_answer_then_commit(_queueing(None), request("PUT", "http://h/b/k")))
    assert response.status == 200
    assert deferred_commits.get() is None  # only set while the handler runs


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (CloudError("QuotaExceeded", "no room", 403, [("x-extra", "1")]), 403, b"<Code>QuotaExceeded</Code>"),
        (RuntimeError("disk on fire"), 500, b"<Code>InternalError</Code>"),
    ],
)
def test_a_failed_commit_is_the_answer(error: BaseException, status: int, code: bytes) -> None:
    response = asyncio.run(_answer_then_commit(_queueing(error), request("PUT", "http://h/b/k")))
    assert response.status == status and code in response.body
    assert ("x-amz-request-id", "r1") in response.headers
    if isinstance(error, CloudError):
        assert ("x-extra", "1") in response.headers
