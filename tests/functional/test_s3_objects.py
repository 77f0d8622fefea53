"""PutObject, GetObject and HeadObject through boto3: stored headers and metadata, awkward keys,
missing keys and buckets, byte ranges (small objects, large ones sent from mapped files,
multipart ones), conditional reads, response-* overrides and presigned GETs."""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import random
import secrets
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError

from support.answers import code, status

KiB, MiB = 1024, 1024 * 1024


def header(answer: dict[str, Any], name: str) -> str | None:
    return answer["ResponseMetadata"]["HTTPHeaders"].get(name)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"obj-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name)
    return name


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed or size).randbytes(size)


# -- round trips -----------------------------------------------------------------------------------


def test_put_get_head_round_trip_headers_and_metadata(s3: Any, bucket: str) -> None:
    data = b"hello, walrus\n" * 100
    expires = dt.datetime(2031, 5, 4, 3, 2, 1, tzinfo=dt.UTC)
    put = s3.put_object(
        Bucket=bucket, Key="doc.txt", Body=data, Metadata={"colour": "blue", "Two-Words": "a b"},
        ContentType="text/plain; charset=utf-8", ContentEncoding="identity",
        ContentDisposition='attachment; filename="doc.txt"', ContentLanguage="en-AU",
        CacheControl="max-age=60", Expires=expires,
    )  # fmt: skip
    assert status(put) == 200 and put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    for answer in (s3.get_object(Bucket=bucket, Key="doc.txt"), s3.head_object(Bucket=bucket, Key="doc.txt")):
        assert status(answer) == 200 and answer["ETag"] == put["ETag"]
        assert answer["ContentLength"] == len(data)
        assert answer["Metadata"] == {"colour": "blue", "two-words": "a b"}
        assert answer["ContentType"] == "text/plain; charset=utf-8"
        assert answer["ContentEncoding"] == "identity"
        assert answer["ContentDisposition"] == 'attachment; filename="doc.txt"'
        assert answer["ContentLanguage"] == "en-AU" and answer["CacheControl"] == "max-age=60"
        assert header(answer, "expires") == "Sun, 04 May 2031 03:02:01 GMT"
        assert header(answer, "accept-ranges") == "bytes" and "StorageClass" not in answer
        assert isinstance(answer["LastModified"], dt.datetime)
    assert s3.get_object(Bucket=bucket, Key="doc.txt")["Body"].read() == data
    assert header(s3.head_object(Bucket=bucket, Key="doc.txt"), "content-length") == str(len(data))
    bare = s3.put_object(Bucket=bucket, Key="bare", Body=b"")
    assert bare["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    head = s3.head_object(Bucket=bucket, Key="bare")
    assert head["ContentLength"] == 0 and head["Metadata"] == {}
    assert head["ContentType"] == "binary/octet-stream"


def test_storage_class_is_kept_and_reported(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="ia", Body=b"cold", StorageClass="STANDARD_IA")
    s3.put_object(Bucket=bucket, Key="std", Body=b"warm", StorageClass="STANDARD")
    assert s3.head_object(Bucket=bucket, Key="ia")["StorageClass"] == "STANDARD_IA"
    assert s3.get_object(Bucket=bucket, Key="ia")["StorageClass"] == "STANDARD_IA"
    assert "StorageClass" not in s3.head_object(Bucket=bucket, Key="std")  # S3 omits STANDARD
    listed = {o["Key"]: o["StorageClass"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert listed == {"ia": "STANDARD_IA", "std": "STANDARD"}
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="bad", Body=b"x", StorageClass="CHILLY")
    assert code(err) == "InvalidStorageClass" and status(err) == 400
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=bucket, Key="bad", CopySource=f"{bucket}/ia", StorageClass="CHILLY")
    assert code(err) == "InvalidStorageClass" and status(err) == 400
    with pytest.raises(ClientError) as err:
        s3.create_multipart_upload(Bucket=bucket, Key="bad", StorageClass="CHILLY")
    assert code(err) == "InvalidStorageClass" and status(err) == 400
    s3.copy_object(Bucket=bucket, Key="ia-copy", CopySource=f"{bucket}/std", StorageClass="STANDARD_IA")
    assert s3.head_object(Bucket=bucket, Key="ia-copy")["StorageClass"] == "STANDARD_IA"


@pytest.mark.parametrize(
    "key",
    ["with space.txt", "caf\u00e9/\u65e5\u672c\u8a9e/\U0001f600", "../escape", "a//b///c", "/leading",
     "line\nbreak", "trailing/", "per%cent+plus&amp?q=1#frag", "~tilde*star'quote", "a" * 1024],
)  # fmt: skip
def test_awkward_keys_round_trip(s3: Any, bucket: str, key: str) -> None:
    data = key.encode() * 3
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(data)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]


def test_key_longer_than_1024_bytes_is_refused(s3: Any, bucket: str) -> None:
    for key in ("k" * 1025, "\u00e9" * 513):  # 1025 and 1026 bytes of UTF-8
        with pytest.raises(ClientError) as err:
            s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        assert code(err) == "KeyTooLongError" and status(err) == 400
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_missing_keys_and_buckets(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="nothing")
    assert code(err) == "NoSuchKey" and status(err) == 404
    assert err.value.response["Error"]["Key"] == "nothing"  # S3's error document names the key
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=bucket, Key="nothing")
    assert code(err) == "404" and status(err) == 404  # a HEAD answer has no body to name the error
    missing = f"obj-missing-{secrets.token_hex(4)}"
    for call in (s3.get_object, s3.put_object):
        with pytest.raises(ClientError) as err:
            call(Bucket=missing, Key="k")
        assert code(err) == "NoSuchBucket" and status(err) == 404
        assert err.value.response["Error"]["BucketName"] == missing
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=missing, Key="k")
    assert status(err) == 404


# -- ranges ----------------------------------------------------------------------------------------


def ranges_of(size: int) -> list[tuple[str, int, int]]:
    """(Range header, first byte, last byte) for an object of `size` bytes, at unaligned offsets."""
    cases = [
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        (f"bytes={size // 3}-{size // 2}", size // 3, size // 2),
        (f"bytes={size - 1}-", size - 1, size - 1),
        ("bytes=-100", size - 100, size - 1),
        (f"bytes={size - 10}-{size + 1000}", size - 10, size - 1),  # clipped at the end
        (f"bytes=-{size + 5}", 0, size - 1),  # a suffix longer than the object: all of it
        ("bytes=1234-", 1234, size - 1),
    ]
    if size > 200_000:
        cases += [
            ("bytes=4097-200000", 4097, 200000),
            ("bytes=12345-", 12345, size - 1),
            ("bytes=4095-4096", 4095, 4096),
            ("bytes=-70001", size - 70001, size - 1),
            (f"bytes=65535-{size - 4097}", 65535, size - 4097),
        ]
    return cases


def check_ranges(s3: Any, bucket: str, key: str, data: bytes) -> None:
    size = len(data)
    for spec, first, last in ranges_of(size):
        got = s3.get_object(Bucket=bucket, Key=key, Range=spec)
        assert status(got) == 206, spec
        assert got["ContentRange"] == f"bytes {first}-{last}/{size}", spec
        assert got["ContentLength"] == last - first + 1, spec
        assert got["Body"].read() == data[first : last + 1], spec
    for spec in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}"):
        with pytest.raises(ClientError) as err:
            s3.get_object(Bucket=bucket, Key=key, Range=spec)
        assert code(err) == "InvalidRange" and status(err) == 416, spec


@pytest.mark.parametrize("size", [10_000, 300 * KiB, 5 * MiB + 123])
def test_range_gets(s3: Any, bucket: str, size: int) -> None:
    data = payload(size)
    s3.put_object(Bucket=bucket, Key="blob", Body=data)
    assert s3.get_object(Bucket=bucket, Key="blob")["Body"].read() == data
    check_ranges(s3, bucket, "blob", data)


def test_range_head(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=payload(1000))
    head = s3.head_object(Bucket=bucket, Key="k", Range="bytes=10-19")
    assert status(head) == 206 and head["ContentLength"] == 10
    assert head["ContentRange"] == "bytes 10-19/1000"
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=bucket, Key="k", Range="bytes=1000-")
    assert status(err) == 416


def test_range_gets_of_a_multipart_object(s3: Any, bucket: str) -> None:
    parts = [payload(5 * MiB, 1), payload(5 * MiB, 2), payload(1000, 3)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    done = []
    for n, part in enumerate(parts, 1):
        sent = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=n, Body=part)
        done.append({"PartNumber": n, "ETag": sent["ETag"]})
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": done})
    data = b"".join(parts)
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == data
    check_ranges(s3, bucket, "mp", data)
    edge = 5 * MiB  # the first part boundary; the second is at 2 * edge
    for first, last in ((edge - 100_001, edge + 99_999), (edge - 1, edge), (2 * edge - 70_000, 2 * edge)):
        got = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={first}-{last}")
        assert status(got) == 206 and got["ContentRange"] == f"bytes {first}-{last}/{len(data)}"
        assert got["Body"].read() == data[first : last + 1]


# -- conditional reads -----------------------------------------------------------------------------

OTHER_ETAG = '"0123456789abcdef0123456789abcdef"'


def conditions(etag: str, modified: dt.datetime) -> list[tuple[dict[str, Any], int]]:
    """(condition headers, the status S3 answers them with). No date lies in the future."""
    before = modified - dt.timedelta(hours=1)
    return [
        ({"IfMatch": etag}, 200),
        ({"IfMatch": "*"}, 200),
        ({"IfMatch": f"{OTHER_ETAG}, {etag}"}, 200),
        ({"IfMatch": OTHER_ETAG}, 412),
        ({"IfNoneMatch": OTHER_ETAG}, 200),
        ({"IfNoneMatch": etag}, 304),
        ({"IfNoneMatch": "*"}, 304),
        ({"IfModifiedSince": before}, 200),
        ({"IfModifiedSince": modified}, 304),
        ({"IfUnmodifiedSince": modified}, 200),
        ({"IfUnmodifiedSince": before}, 412),
        ({"IfMatch": etag, "IfUnmodifiedSince": before}, 200),  # If-Match wins
        ({"IfNoneMatch": etag, "IfModifiedSince": before}, 304),  # If-None-Match wins
        ({"IfNoneMatch": OTHER_ETAG, "IfModifiedSince": modified}, 200),
        ({"IfMatch": OTHER_ETAG, "IfNoneMatch": etag}, 412),  # 412 before 304
        ({"IfUnmodifiedSince": before, "IfModifiedSince": modified}, 412),
    ]


@pytest.mark.parametrize("method", ["get_object", "head_object"])
def test_conditional_reads(s3: Any, bucket: str, method: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"conditional")["ETag"]
    modified = s3.head_object(Bucket=bucket, Key="k")["LastModified"]
    for condition, expected in conditions(etag, modified):
        if expected == 200:
            assert status(getattr(s3, method)(Bucket=bucket, Key="k", **condition)) == 200, condition
            continue
        with pytest.raises(ClientError) as err:
            getattr(s3, method)(Bucket=bucket, Key="k", **condition)
        assert status(err) == expected, condition
        if expected == 304:  # no body: botocore names the error by its status
            assert code(err) == "304", condition
            assert err.value.response["ResponseMetadata"]["HTTPHeaders"].get("etag") == etag
        elif method == "get_object":
            assert code(err) == "PreconditionFailed", condition


# -- response overrides and presigned URLs -----------------------------------------------------------


def test_response_overrides_on_get(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"data", ContentType="text/plain", CacheControl="no-cache")
    expires = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    got = s3.get_object(
        Bucket=bucket, Key="k", ResponseContentType="application/x-thing",
        ResponseContentDisposition='attachment; filename="x y.bin"', ResponseCacheControl="max-age=5",
        ResponseContentLanguage="fr", ResponseExpires=expires, ResponseContentEncoding="gzip",
    )  # fmt: skip
    assert got["ContentType"] == "application/x-thing"
    assert got["ContentDisposition"] == 'attachment; filename="x y.bin"'
    assert got["CacheControl"] == "max-age=5" and got["ContentLanguage"] == "fr"
    assert got["ContentEncoding"] == "gzip"
    assert email.utils.parsedate_to_datetime(header(got, "expires") or "") == expires
    assert got["Body"].read() == b"data"
    head = s3.head_object(Bucket=bucket, Key="k")  # nothing stored changed
    assert head["ContentType"] == "text/plain" and head["CacheControl"] == "no-cache"
    assert "ContentDisposition" not in head


def test_presigned_get_with_response_content_disposition(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="dir/report 1.csv", Body=b"a,b\n1,2\n")
    params = {"Bucket": bucket, "Key": "dir/report 1.csv"}
    params["ResponseContentDisposition"] = "attachment; filename=r.csv"
    url = s3.generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200 and response.read() == b"a,b\n1,2\n"
        assert response.headers["Content-Disposition"] == "attachment; filename=r.csv"
