"""Delete markers announced in GET/HEAD error headers; DeleteObjects bodies bigger than the 1 MiB
the front door reads whole (they arrive streamed)."""

from __future__ import annotations

import secrets

import pytest
from botocore.exceptions import ClientError

from support.cloud import Cloud, Keys


def test_get_and_head_of_a_delete_marker_say_so(cloud: Cloud, account: Keys) -> None:
    s3 = cloud.client("s3", account)
    bucket = "dm-" + secrets.token_hex(4)
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"v1")
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    for call in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as err:
            call(Bucket=bucket, Key="k")
        headers = err.value.response["ResponseMetadata"]["HTTPHeaders"]
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        assert headers["x-amz-delete-marker"] == "true"
        assert headers["x-amz-version-id"] == marker
        with pytest.raises(ClientError) as err:
            call(Bucket=bucket, Key="k", VersionId=marker)
        headers = err.value.response["ResponseMetadata"]["HTTPHeaders"]
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 405
        assert headers["x-amz-delete-marker"] == "true"
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    s3.delete_object(
        Bucket=bucket, Key="plain", VersionId=s3.head_object(Bucket=bucket, Key="plain")["VersionId"]
    )
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="plain")  # no such key at all: no marker header
    assert "x-amz-delete-marker" not in err.value.response["ResponseMetadata"]["HTTPHeaders"]


def test_delete_objects_with_a_body_over_one_mib(cloud: Cloud, account: Keys) -> None:
    s3 = cloud.client("s3", account)
    bucket = "dm-" + secrets.token_hex(4)
    s3.create_bucket(Bucket=bucket)
    keys = [f"{i:04d}/" + "k" * 1000 for i in range(1000)]  # ~1.05 MB of XML
    for key in keys[:5]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    assert len(answer.get("Deleted", [])) == 1000 and not answer.get("Errors")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
