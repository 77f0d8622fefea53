"""What PutObject checks of a body and how it may be framed: Content-MD5, flexible checksums (as
headers, and as aws-chunked trailers the way boto3 sends them over HTTPS), SigV4 streaming uploads
signed chunk by chunk (client side written here), UNSIGNED-PAYLOAD; and raw keep-alive HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import random
import secrets
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from awscrt import checksums as crt
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from support.answers import code, status
from support.cloud import Cloud, Keys

KiB, MiB = 1024, 1024 * 1024
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


CHECKSUMS = {
    "CRC32": lambda data: b64(zlib.crc32(data).to_bytes(4, "big")),
    "CRC32C": lambda data: b64(crt.crc32c(data).to_bytes(4, "big")),
    "CRC64NVME": lambda data: b64(crt.crc64nvme(data).to_bytes(8, "big")),
    "SHA1": lambda data: b64(hashlib.sha1(data).digest()),
    "SHA256": lambda data: b64(hashlib.sha256(data).digest()),
}


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"sum-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name)
    return name


def stored(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def missing(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return exc.response["Error"]["Code"] == "404"
    return False


class _Signer(S3SigV4Auth):
    """botocore's S3 SigV4 signer, announcing the x-amz-content-sha256 we choose."""

    def __init__(self, credentials: Credentials, region: str, payload: str | None) -> None:
        super().__init__(credentials, "s3", region)
        self._payload = payload

    def payload(self, request: AWSRequest) -> str:
        return self._payload or str(super().payload(request))


class Raw:
    """Signed S3 requests built by hand, on one keep-alive connection."""

    def __init__(self, cloud: Cloud, keys: Keys) -> None:
        self.endpoint, self.region = cloud.endpoint, cloud.region
        self.creds = Credentials(keys.access_key_id, keys.secret_access_key)
        url = urlsplit(cloud.endpoint)
        self.conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)

    def sign(
        self, method: str, path: str, headers: dict[str, str], payload: str | None = None
    ) -> dict[str, str]:
        request = AWSRequest(method=method, url=self.endpoint + path, headers=headers)
        _Signer(self.creds, self.region, payload).add_auth(request)
        return dict(request.headers.items())

    def send(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, Any, bytes]:
        self.conn.request(method, path, body=body, headers=headers)
        answer = self.conn.getresponse()
        return answer.status, answer.headers, answer.read()

    def put(
        self, path: str, body: bytes, headers: dict[str, str] | None = None, payload: str | None = None
    ) -> tuple[int, Any, bytes]:
        headers = {"Content-Length": str(len(body)), **(headers or {})}
        if payload is None:
            payload = hashlib.sha256(body).hexdigest()
        return self.send("PUT", path, self.sign("PUT", path, headers, payload), body)


@pytest.fixture
def raw(cloud: Cloud, account: Keys) -> Iterator[Raw]:
    client = Raw(cloud, account)
    yield client
    client.conn.close()


# -- Content-MD5 and flexible checksums ------------------------------------------------------------


def test_content_md5_is_checked(s3: Any, bucket: str) -> None:
    data = b"the body"
    s3.put_object(Bucket=bucket, Key="ok", Body=data, ContentMD5=b64(hashlib.md5(data).digest()))
    assert stored(s3, bucket, "ok") == data
    for md5, expected in (
        (b64(hashlib.md5(b"another body").digest()), "BadDigest"),
        ("not base64!", "InvalidDigest"),
        (b64(b"fifteen bytes!!"), "InvalidDigest"),
    ):
        with pytest.raises(ClientError) as err:
            s3.put_object(Bucket=bucket, Key="bad", Body=data, ContentMD5=md5)
        assert code(err) == expected and status(err) == 400, md5
    assert missing(s3, bucket, "bad")


@pytest.mark.parametrize("algorithm", sorted(CHECKSUMS))
def test_flexible_checksums_are_stored_and_returned(s3: Any, bucket: str, algorithm: str) -> None:
    data = random.Random(7).randbytes(100_000)
    expected = CHECKSUMS[algorithm](data)
    put = s3.put_object(Bucket=bucket, Key="k", Body=data, ChecksumAlgorithm=algorithm)
    assert put[f"Checksum{algorithm}"] == expected
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == got[f"Checksum{algorithm}"] == expected
    assert got["Body"].read() == data
    assert not any(name.startswith("Checksum") for name in s3.head_object(Bucket=bucket, Key="k"))


def test_wrong_checksum_header_is_refused(s3: Any, bucket: str, raw: Raw) -> None:
    data = b"checked bytes"
    wrong = CHECKSUMS["CRC32"](b"other bytes")
    status_, _, body = raw.put(f"/{bucket}/k", data, {"x-amz-checksum-crc32": wrong})
    assert status_ == 400 and b"<Code>BadDigest</Code>" in body
    assert missing(s3, bucket, "k")
    status_, _, body = raw.put(f"/{bucket}/k", data, {"x-amz-checksum-crc32": CHECKSUMS["CRC32"](data)})
    assert status_ == 200, body
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == CHECKSUMS["CRC32"](data)


# -- aws-chunked with trailing checksums, as boto3 sends PutObject over HTTPS --------------------------


@pytest.fixture
def s3_trailer(cloud: Cloud, account: Keys) -> tuple[Any, list[dict[str, str]]]:
    """A boto3 client that frames PutObject bodies as it does over HTTPS (aws-chunked, checksum
    trailer, STREAMING-UNSIGNED-PAYLOAD-TRAILER) although the endpoint is plain HTTP; and the
    headers of each PutObject it sent."""
    client = cloud.client("s3", account)
    sent: list[dict[str, str]] = []

    def use_trailer(context: dict[str, Any], **_: Any) -> None:
        algorithm = context.get("checksum", {}).get("request_algorithm")
        if isinstance(algorithm, dict):
            algorithm["in"] = "trailer"

    def record(request: Any, **_: Any) -> None:
        sent.append(
            {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        )

    client.meta.events.register("before-call.s3.PutObject", use_trailer)
    client.meta.events.register("before-send.s3.PutObject", record)
    return client, sent


@pytest.mark.parametrize("size", [0, 1, 70 * KiB, 9 * MiB])
def test_aws_chunked_body_with_trailing_checksum(
    s3_trailer: tuple[Any, list[dict[str, str]]], bucket: str, size: int
) -> None:
    s3, sent = s3_trailer
    data = random.Random(size).randbytes(size)
    put = s3.put_object(Bucket=bucket, Key="k", Body=data)
    assert sent[-1]["content-encoding"] == "aws-chunked"  # the framing really was used
    assert sent[-1]["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert put["ChecksumCRC32"] == CHECKSUMS["CRC32"](data)
    assert stored(s3, bucket, "k") == data
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head["ContentLength"] == size and head["ChecksumCRC32"] == CHECKSUMS["CRC32"](data)
    assert "ContentEncoding" not in head  # aws-chunked is how the body travelled, not what it is


def test_aws_chunked_keeps_the_objects_own_content_encoding(
    s3_trailer: tuple[Any, list[dict[str, str]]], bucket: str
) -> None:
    s3, sent = s3_trailer
    data = zlib.compress(b"squeeze me " * 1000)
    s3.put_object(Bucket=bucket, Key="k", Body=data, ContentEncoding="gzip", ChecksumAlgorithm="SHA256")
    assert sent[-1]["content-encoding"] == "gzip,aws-chunked"
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head["ContentEncoding"] == "gzip" and head["ChecksumSHA256"] == CHECKSUMS["SHA256"](data)
    assert stored(s3, bucket, "k") == data


# -- SigV4 streaming (chunk-signed) uploads, UNSIGNED-PAYLOAD ---------------------------------------


def signing_key(secret: str, date: str, region: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signed_chunks(data: bytes, size: int, key: bytes, timestamp: str, scope: str, seed: str) -> list[bytes]:
    """`data` framed as STREAMING-AWS4-HMAC-SHA256-PAYLOAD, each chunk's signature chained from the
    previous one (the first from the seed), ending with a signed empty chunk."""
    chunks, previous = [], seed
    for piece in [data[i : i + size] for i in range(0, len(data), size)] + [b""]:
        text = "\n".join(
            (
                "AWS4-HMAC-SHA256-PAYLOAD",
                timestamp,
                scope,
                previous,
                EMPTY_SHA256,
                hashlib.sha256(piece).hexdigest(),
            )
        )
        previous = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
        chunks.append(f"{len(piece):x};chunk-signature={previous}\r\n".encode() + piece + b"\r\n")
    return chunks


def streaming_put(raw: Raw, path: str, data: bytes, tamper: Any = None) -> tuple[int, bytes]:
    """PUT `data` in signed 64 KiB chunks; `tamper(chunks)` may change them before they are sent."""
    size = 64 * KiB
    pieces = [len(data[i : i + size]) for i in range(0, len(data), size)] + [0]
    length = sum(len(f"{n:x}") + len(";chunk-signature=") + 64 + 2 + n + 2 for n in pieces)
    headers = {
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "Content-Length": str(length),
    }
    headers = raw.sign("PUT", path, headers, STREAMING)
    timestamp = headers["X-Amz-Date"]
    seed = headers["Authorization"].rsplit("Signature=", 1)[1]
    scope = f"{timestamp[:8]}/{raw.region}/s3/aws4_request"
    key = signing_key(raw.creds.secret_key, timestamp[:8], raw.region)
    chunks = signed_chunks(data, size, key, timestamp, scope, seed)
    if tamper:
        tamper(chunks)
    body = b"".join(chunks)
    assert len(body) == length
    status_, _, answer = raw.send("PUT", path, headers, body)
    return status_, answer


@pytest.mark.parametrize("size", [0, 1000, 3 * 64 * KiB, 200_000])
def test_signed_streaming_upload(s3: Any, bucket: str, raw: Raw, size: int) -> None:
    data = random.Random(size).randbytes(size)
    status_, answer = streaming_put(raw, f"/{bucket}/streamed", data)
    assert status_ == 200, answer
    assert stored(s3, bucket, "streamed") == data
    assert s3.head_object(Bucket=bucket, Key="streamed")["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'


def _bad_signature(chunks: list[bytes]) -> None:
    head, _, rest = chunks[1].partition(b"chunk-signature=")
    chunks[1] = head + b"chunk-signature=" + (b"0" if rest[:1] != b"0" else b"1") + rest[1:]


def _bad_data(chunks: list[bytes]) -> None:
    chunks[2] = chunks[2][:-10] + bytes([chunks[2][-10] ^ 1]) + chunks[2][-9:]


@pytest.mark.parametrize("tamper", [_bad_signature, _bad_data], ids=["signature", "data"])
def test_tampered_streaming_upload_is_refused(s3: Any, bucket: str, raw: Raw, tamper: Any) -> None:
    data = random.Random(3).randbytes(200_000)
    status_, answer = streaming_put(raw, f"/{bucket}/streamed", data, tamper)
    assert status_ == 403 and b"<Code>SignatureDoesNotMatch</Code>" in answer
    assert missing(s3, bucket, "streamed")


def test_unsigned_payload_and_a_wrong_payload_hash(s3: Any, bucket: str, raw: Raw) -> None:
    data = random.Random(5).randbytes(100_000)
    status_, _, answer = raw.put(f"/{bucket}/unsigned", data, payload="UNSIGNED-PAYLOAD")
    assert status_ == 200, answer
    assert stored(s3, bucket, "unsigned") == data
    status_, _, answer = raw.put(f"/{bucket}/lied", data, payload=hashlib.sha256(b"else").hexdigest())
    assert status_ == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in answer
    assert missing(s3, bucket, "lied")


def test_not_modified_leaves_the_connection_usable(s3: Any, bucket: str, raw: Raw) -> None:
    """A 304 carries the validators and no body: a body would be read as the next response."""
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"cached")["ETag"]
    for _ in range(2):
        headers = raw.sign("GET", f"/{bucket}/k", {"If-None-Match": etag})
        status_, answer_headers, body = raw.send("GET", f"/{bucket}/k", headers)
        assert (status_, body, answer_headers["ETag"]) == (304, b"", etag)
        assert answer_headers["Last-Modified"]
        status_, _, body = raw.send("GET", f"/{bucket}/k", raw.sign("GET", f"/{bucket}/k", {}))
        assert (status_, body) == (200, b"cached")
