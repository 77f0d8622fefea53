"""Small objects (up to bodies.INLINE_MAX) keep their bytes in their metadata row, not in a blob:
every way of reading, copying and replacing them must behave as it does for blobs."""

from __future__ import annotations

import hashlib
import random
import secrets
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mallee.services.walrus.bodies import INLINE_MAX
from support.answers import code, status
from support.cloud import Cloud


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"small-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name)
    return name


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def read(s3: Any, bucket: str, key: str, **kwargs: Any) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read())


def test_small_bodies_make_no_blob_and_larger_ones_one(cloud: Cloud, s3: Any, bucket: str) -> None:
    before = cloud.blob_count()
    for size in (0, 1, 4096, INLINE_MAX):
        body = payload(size)
        answer = s3.put_object(Bucket=bucket, Key=f"k{size}", Body=body)
        assert answer["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
        assert read(s3, bucket, f"k{size}") == body
        assert s3.head_object(Bucket=bucket, Key=f"k{size}")["ContentLength"] == size
    assert cloud.blob_count() == before
    body = payload(INLINE_MAX + 1)
    s3.put_object(Bucket=bucket, Key="large", Body=body)
    assert read(s3, bucket, "large") == body
    assert cloud.blob_count() == before + 1


def test_ranges_and_part_numbers_of_a_kept_object(s3: Any, bucket: str) -> None:
    body = payload(5000)
    s3.put_object(Bucket=bucket, Key="k", Body=body)
    got = s3.get_object(Bucket=bucket, Key="k", Range="bytes=100-199")
    assert got["ContentRange"] == "bytes 100-199/5000" and got["Body"].read() == body[100:200]
    assert read(s3, bucket, "k", Range="bytes=-10") == body[-10:]
    assert read(s3, bucket, "k", Range="bytes=4990-") == body[4990:]
    whole = s3.get_object(Bucket=bucket, Key="k", PartNumber=1)
    assert whole["ContentRange"] == "bytes 0-4999/5000" and whole["Body"].read() == body
    assert "PartsCount" not in whole
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="k", Range="bytes=5000-")
    assert (code(err), status(err)) == ("InvalidRange", 416)
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="k", PartNumber=2)
    assert (code(err), status(err)) == ("InvalidPartNumber", 416)


def test_copies_of_small_objects_are_kept_too(cloud: Cloud, s3: Any, bucket: str) -> None:
    small, large = payload(3000), payload(INLINE_MAX + 10)
    s3.put_object(Bucket=bucket, Key="small", Body=small, Metadata={"a": "1"})
    s3.put_object(Bucket=bucket, Key="large", Body=large)
    before = cloud.blob_count()
    s3.copy_object(Bucket=bucket, Key="small-copy", CopySource={"Bucket": bucket, "Key": "small"})
    assert read(s3, bucket, "small-copy") == small
    assert s3.head_object(Bucket=bucket, Key="small-copy")["Metadata"] == {"a": "1"}
    s3.copy_object(  # onto itself, to change its metadata
        Bucket=bucket,
        Key="small",
        CopySource={"Bucket": bucket, "Key": "small"},
        MetadataDirective="REPLACE",
        Metadata={"b": "2"},
    )
    assert read(s3, bucket, "small") == small
    assert s3.head_object(Bucket=bucket, Key="small")["Metadata"] == {"b": "2"}
    assert cloud.blob_count() == before
    s3.copy_object(Bucket=bucket, Key="large-copy", CopySource={"Bucket": bucket, "Key": "large"})
    assert read(s3, bucket, "large-copy") == large
    assert cloud.blob_count() == before + 1


def test_a_small_multipart_object_copied_is_kept(cloud: Cloud, s3: Any, bucket: str) -> None:
    body = payload(2048)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1, Body=body)["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    assert s3.get_object(Bucket=bucket, Key="mp", PartNumber=1)["PartsCount"] == 1
    before = cloud.blob_count()
    copied = s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "mp"})
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert read(s3, bucket, "copy") == body
    assert cloud.blob_count() == before


def test_parts_copied_from_a_kept_object_are_blobs(cloud: Cloud, s3: Any, bucket: str) -> None:
    small = payload(4000)
    s3.put_object(Bucket=bucket, Key="src", Body=small)
    before = cloud.blob_count()
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    part = s3.upload_part_copy(
        Bucket=bucket,
        Key="dst",
        UploadId=upload_id,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange="bytes=1000-2999",
    )
    assert cloud.blob_count() == before + 1
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="dst",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]},
    )
    assert read(s3, bucket, "dst") == small[1000:3000]


def test_replacing_kept_and_blob_bodies_both_ways(cloud: Cloud, s3: Any, bucket: str) -> None:
    before = cloud.blob_count()
    small, large = payload(100), payload(INLINE_MAX * 2)
    s3.put_object(Bucket=bucket, Key="k", Body=small)
    s3.put_object(Bucket=bucket, Key="k", Body=large)
    assert read(s3, bucket, "k") == large and cloud.blobs_settle_at(before + 1)
    s3.put_object(Bucket=bucket, Key="k", Body=small)
    assert read(s3, bucket, "k") == small and cloud.blobs_settle_at(before)
    s3.delete_object(Bucket=bucket, Key="k")
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="k")
    assert code(err) == "NoSuchKey"


def test_versions_of_a_kept_object(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"first")["VersionId"]
    second = s3.put_object(Bucket=bucket, Key="k", Body=b"second")["VersionId"]
    assert read(s3, bucket, "k", VersionId=first) == b"first"
    assert read(s3, bucket, "k", VersionId=second) == b"second"
    s3.delete_object(Bucket=bucket, Key="k")
    assert read(s3, bucket, "k", VersionId=first) == b"first"
