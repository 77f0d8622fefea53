"""Conditional writes through boto3 and the `aws` CLI: PutObject and CompleteMultipartUpload with
If-None-Match: * (write only a new key) and If-Match (write over that ETag only), refused with
S3's 412 PreconditionFailed / 404 NoSuchKey, and racing writers of one new key: exactly one wins."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from support.answers import error_of, refused
from support.cloud import Cloud, Keys, aws

PART = 5 * 1024 * 1024

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL


def new_bucket(cloud: Cloud, account: Keys) -> tuple[Any, str]:
    s3 = cloud.client("s3", account)
    name = f"cond-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name)
    return s3, name


def test_put_if_none_match_writes_a_new_key_only(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    s3.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
    assert refused(s3.put_object, Bucket=bucket, Key="k", Body=b"second", IfNoneMatch="*") == (
        412,
        "PreconditionFailed",
    )
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"
    big = b"b" * (256 * 1024)  # a blob, not a row: the refused one's must not be left behind
    blobs = cloud.blob_count()
    assert refused(s3.put_object, Bucket=bucket, Key="k", Body=big, IfNoneMatch="*")[0] == 412
    assert cloud.blobs_settle_at(blobs)
    s3.delete_object(Bucket=bucket, Key="k")
    s3.put_object(Bucket=bucket, Key="k", Body=b"again", IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"again"


def test_put_if_match_writes_over_that_etag_only(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    assert refused(s3.put_object, Bucket=bucket, Key="k", Body=b"x", IfMatch='"abc"') == (404, "NoSuchKey")
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"one")["ETag"]
    assert refused(s3.put_object, Bucket=bucket, Key="k", Body=b"x", IfMatch='"0123"') == (
        412,
        "PreconditionFailed",
    )
    new_etag = s3.put_object(Bucket=bucket, Key="k", Body=b"two", IfMatch=etag)["ETag"]
    assert s3.head_object(Bucket=bucket, Key="k")["ETag"] == new_etag != etag


def test_in_a_versioned_bucket_a_delete_marker_is_no_object(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"v1", IfNoneMatch="*")["ETag"]
    s3.delete_object(Bucket=bucket, Key="k")
    assert refused(s3.put_object, Bucket=bucket, Key="k", Body=b"x", IfMatch=etag) == (404, "NoSuchKey")
    s3.put_object(Bucket=bucket, Key="k", Body=b"v2", IfNoneMatch="*")
    assert len(s3.list_object_versions(Bucket=bucket)["Versions"]) == 2


def test_racing_writers_of_one_new_key_one_wins(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    outcomes: list[int] = []

    def write(n: int) -> None:
        try:
            s3.put_object(Bucket=bucket, Key="race", Body=f"writer {n}".encode(), IfNoneMatch="*")
            outcomes.append(200)
        except ClientError as err:
            outcomes.append(error_of(err)[0])

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes)[0] == 200 and outcomes.count(200) == 1, outcomes
    assert set(outcomes) <= {200, 409, 412}
    assert s3.get_object(Bucket=bucket, Key="race")["Body"].read().startswith(b"writer ")


def test_complete_multipart_upload_conditions(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"there")["ETag"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"p" * 100)
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    kwargs = {"Bucket": bucket, "Key": "k", "UploadId": upload, "MultipartUpload": parts}
    assert refused(s3.complete_multipart_upload, **kwargs, IfNoneMatch="*") == (412, "PreconditionFailed")
    assert refused(s3.complete_multipart_upload, **kwargs, IfMatch='"0123"') == (412, "PreconditionFailed")
    assert len(s3.list_parts(Bucket=bucket, Key="k", UploadId=upload)["Parts"]) == 1  # still there
    done = s3.complete_multipart_upload(**kwargs, IfMatch=etag)
    assert s3.head_object(Bucket=bucket, Key="k")["ETag"] == done["ETag"]


def test_aws_cli_put_object_if_none_match(cloud: Cloud, account: Keys, tmp_path: Path) -> None:
    _, bucket = new_bucket(cloud, account)
    body = tmp_path / "body"
    body.write_bytes(b"from the cli")
    args = (
        "s3api",
        "put-object",
        "--bucket",
        bucket,
        "--key",
        "k",
        "--body",
        str(body),
        "--if-none-match",
        "*",
    )
    assert aws(cloud, *args, keys=account)["ETag"]
    env = {"AWS_ACCESS_KEY_ID": account.access_key_id, "AWS_SECRET_ACCESS_KEY": account.secret_access_key}
    again = cloud.run("aws", "--endpoint-url", cloud.endpoint, "--region", cloud.region, *args, env=env)
    assert again.returncode != 0 and "PreconditionFailed" in again.stderr


def test_copy_object_conditions_and_the_sources_expected_owner(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    source = {"Bucket": bucket, "Key": "src"}
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=source, IfNoneMatch="*")
    assert refused(s3.copy_object, Bucket=bucket, Key="dst", CopySource=source, IfNoneMatch="*") == (
        412,
        "PreconditionFailed",
    )
    etag = s3.head_object(Bucket=bucket, Key="dst")["ETag"]
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=source, IfMatch=etag, MetadataDirective="REPLACE")
    owner = account.account_id
    s3.copy_object(Bucket=bucket, Key="d2", CopySource=source, ExpectedSourceBucketOwner=owner)
    other = "999988887777" if owner != "999988887777" else "111122223333"
    assert refused(
        s3.copy_object, Bucket=bucket, Key="d3", CopySource=source, ExpectedSourceBucketOwner=other
    ) == (
        403,
        "AccessDenied",
    )


def test_what_walrus_does_not_do_is_refused_by_name(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    try:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", WriteOffsetBytes=0)
    except ClientError as err:
        assert error_of(err) == (501, "NotImplemented")
        assert "x-amz-write-offset-bytes" in err.response["Error"]["Message"]
    else:
        raise AssertionError("an append was not refused")
    assert refused(s3.delete_object, Bucket=bucket, Key="k", IfMatch='"abc"') == (501, "NotImplemented")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0  # nothing was written
