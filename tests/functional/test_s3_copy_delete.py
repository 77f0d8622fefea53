"""CopyObject and DeleteObjects through boto3: metadata and tagging directives, copy-source
conditions, copies onto themselves, across buckets and accounts; batch deletes quiet and verbose."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import pytest
from botocore.exceptions import ClientError

from support.answers import body, code
from support.cloud import Cloud


def new_bucket(s3: Any, status: str | None = None) -> str:
    name = f"cp-{secrets.token_hex(6)}"
    s3.create_bucket(Bucket=name)
    if status:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
    return name


def test_copy_keeps_metadata_by_default_and_replaces_it_on_request(s3: Any) -> None:
    bucket = new_bucket(s3)
    put = s3.put_object(
        Bucket=bucket, Key="src", Body=b"payload", ContentType="text/plain", Metadata={"colour": "blue"},
        Tagging="team=ops",
    )  # fmt: skip
    copied = s3.copy_object(Bucket=bucket, Key="same", CopySource=f"{bucket}/src")
    assert copied["CopyObjectResult"]["ETag"] == put["ETag"]
    assert isinstance(copied["CopyObjectResult"]["LastModified"], dt.datetime)
    head = s3.head_object(Bucket=bucket, Key="same")
    assert head["ContentType"] == "text/plain" and head["Metadata"] == {"colour": "blue"}
    assert s3.get_object(Bucket=bucket, Key="same")["TagCount"] == 1
    assert body(s3, bucket, "same") == b"payload"
    s3.copy_object(
        Bucket=bucket, Key="new", CopySource={"Bucket": bucket, "Key": "src"}, MetadataDirective="REPLACE",
        ContentType="application/json", Metadata={"shape": "round"}, TaggingDirective="REPLACE", Tagging="",
    )  # fmt: skip
    head = s3.head_object(Bucket=bucket, Key="new")
    assert head["ContentType"] == "application/json" and head["Metadata"] == {"shape": "round"}
    assert "TagCount" not in s3.get_object(Bucket=bucket, Key="new")
    ignored = s3.copy_object(Bucket=bucket, Key="ignored", CopySource=f"{bucket}/src", Metadata={"x": "y"})
    assert ignored["CopyObjectResult"]["ETag"] == put["ETag"]
    assert s3.head_object(Bucket=bucket, Key="ignored")["Metadata"] == {"colour": "blue"}


def test_copy_of_a_key_with_awkward_characters(s3: Any) -> None:
    bucket = new_bucket(s3)
    key = "dir/with space+plus/caf\u00e9?&=%.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"odd")
    s3.copy_object(Bucket=bucket, Key=key + ".copy", CopySource={"Bucket": bucket, "Key": key})
    assert body(s3, bucket, key + ".copy") == b"odd"


def test_copy_onto_itself_needs_a_change(s3: Any) -> None:
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="k", Body=b"data", Metadata={"a": "1"})
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=bucket, Key="k", CopySource=f"{bucket}/k")
    assert code(err) == "InvalidRequest"
    assert "itself" in err.value.response["Error"]["Message"]
    s3.copy_object(
        Bucket=bucket, Key="k", CopySource=f"{bucket}/k", MetadataDirective="REPLACE", Metadata={"a": "2"}
    )
    assert s3.head_object(Bucket=bucket, Key="k")["Metadata"] == {"a": "2"}
    s3.copy_object(Bucket=bucket, Key="k", CopySource=f"{bucket}/k", StorageClass="STANDARD_IA")
    assert s3.head_object(Bucket=bucket, Key="k")["StorageClass"] == "STANDARD_IA"
    assert body(s3, bucket, "k") == b"data"
    assert len(s3.list_object_versions(Bucket=bucket)["Versions"]) == 1


def test_copy_source_conditions_fail_with_412(s3: Any) -> None:
    bucket = new_bucket(s3)
    etag = s3.put_object(Bucket=bucket, Key="src", Body=b"x")["ETag"]
    modified = s3.head_object(Bucket=bucket, Key="src")["LastModified"]
    later, earlier = modified + dt.timedelta(hours=1), modified - dt.timedelta(hours=1)
    failing: list[dict[str, Any]] = [
        {"CopySourceIfMatch": '"0123456789abcdef0123456789abcdef"'},
        {"CopySourceIfNoneMatch": etag},
        {"CopySourceIfModifiedSince": later},
        {"CopySourceIfUnmodifiedSince": earlier},
    ]
    for condition in failing:
        with pytest.raises(ClientError) as err:
            s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", **condition)
        assert code(err) == "PreconditionFailed", condition
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    passing: list[dict[str, Any]] = [
        {"CopySourceIfMatch": etag},
        {"CopySourceIfNoneMatch": '"0123456789abcdef0123456789abcdef"'},
        {"CopySourceIfModifiedSince": earlier},
        {"CopySourceIfUnmodifiedSince": later},
        {"CopySourceIfMatch": etag, "CopySourceIfUnmodifiedSince": earlier},  # if-match wins, as on S3
    ]
    for condition in passing:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", **condition)
    assert body(s3, bucket, "dst") == b"x"


def test_cross_bucket_copy_of_an_old_version_reports_both_version_ids(s3: Any) -> None:
    src, dst = new_bucket(s3, "Enabled"), new_bucket(s3, "Enabled")
    old = s3.put_object(Bucket=src, Key="k", Body=b"old")["VersionId"]
    s3.put_object(Bucket=src, Key="k", Body=b"new")
    copied = s3.copy_object(Bucket=dst, Key="k2", CopySource={"Bucket": src, "Key": "k", "VersionId": old})
    assert copied["CopySourceVersionId"] == old
    assert copied["VersionId"] not in (None, "null", old)
    assert body(s3, dst, "k2") == b"old"
    assert body(s3, dst, "k2", VersionId=copied["VersionId"]) == b"old"
    marker = s3.delete_object(Bucket=src, Key="k")["VersionId"]
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=dst, Key="k3", CopySource=f"{src}/k")
    assert code(err) == "NoSuchKey"
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=dst, Key="k3", CopySource={"Bucket": src, "Key": "k", "VersionId": marker})
    assert code(err) == "InvalidRequest"


def test_copy_does_not_share_bytes_with_its_source(s3: Any) -> None:
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="src", Body=b"A" * 300_000)
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src")
    s3.delete_object(Bucket=bucket, Key="src")
    s3.put_object(Bucket=bucket, Key="other", Body=b"nudge")  # lets the garbage collector run
    assert body(s3, bucket, "dst") == b"A" * 300_000


def test_copy_from_missing_source_or_into_missing_bucket(s3: Any) -> None:
    bucket = new_bucket(s3)
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/nothing")
    assert code(err) == "NoSuchKey"
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"missing-{secrets.token_hex(6)}/k")
    assert code(err) == "NoSuchBucket"


def test_copy_from_a_bucket_the_caller_cannot_read_is_access_denied(cloud: Cloud, s3: Any) -> None:
    other = cloud.client("s3", cloud.new_account())
    private = new_bucket(other)
    other.put_object(Bucket=private, Key="secret", Body=b"s3cr3t")
    mine = new_bucket(s3)
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=mine, Key="stolen", CopySource=f"{private}/secret")
    assert code(err) == "AccessDenied"
    assert "Contents" not in s3.list_objects_v2(Bucket=mine)
    readable = f"cp-{secrets.token_hex(6)}"
    other.create_bucket(Bucket=readable, ObjectOwnership="ObjectWriter")  # ACLs on, then public ones
    other.delete_public_access_block(Bucket=readable)
    other.put_bucket_acl(Bucket=readable, ACL="authenticated-read")  # lists only, as on S3
    other.put_object(Bucket=readable, Key="listed", Body=b"private")
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=mine, Key="stolen", CopySource=f"{readable}/listed")
    assert code(err) == "AccessDenied"
    other.put_object(Bucket=readable, Key="shared", Body=b"hello", ACL="authenticated-read")
    s3.copy_object(Bucket=mine, Key="copied", CopySource=f"{readable}/shared")
    assert body(s3, mine, "copied") == b"hello"


def test_delete_objects_verbose_and_quiet(s3: Any) -> None:
    bucket = new_bucket(s3)
    for key in ("a", "b", "c", "d"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    verbose = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "never-existed"}]}
    )
    assert sorted(d["Key"] for d in verbose["Deleted"]) == ["a", "b", "never-existed"]
    assert "Errors" not in verbose
    quiet = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "c"}, {"Key": "x" * 1025}], "Quiet": True}
    )
    assert "Deleted" not in quiet
    assert [(e["Key"], e["Code"]) for e in quiet["Errors"]] == [("x" * 1025, "KeyTooLongError")]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["d"]


def test_delete_objects_in_a_versioned_bucket_reports_markers(s3: Any) -> None:
    bucket = new_bucket(s3, "Enabled")
    v1 = s3.put_object(Bucket=bucket, Key="a", Body=b"1")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="b", Body=b"2")["VersionId"]
    first = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b", "VersionId": v2}]}
    )
    by_key = {d["Key"]: d for d in first["Deleted"]}
    assert by_key["a"]["DeleteMarker"] is True and by_key["a"]["DeleteMarkerVersionId"] not in (None, v1)
    assert by_key["b"] == {"Key": "b", "VersionId": v2}
    marker = by_key["a"]["DeleteMarkerVersionId"]
    second = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a", "VersionId": marker}]})
    assert second["Deleted"] == [
        {"Key": "a", "VersionId": marker, "DeleteMarker": True, "DeleteMarkerVersionId": marker}
    ]
    assert body(s3, bucket, "a") == b"1"


def test_delete_objects_limits_and_missing_bucket(s3: Any) -> None:
    bucket = new_bucket(s3)
    with pytest.raises(ClientError) as err:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"k{i}"} for i in range(1001)]})
    assert code(err) == "MalformedXML"
    with pytest.raises(ClientError) as err:
        s3.delete_objects(Bucket=f"missing-{secrets.token_hex(6)}", Delete={"Objects": [{"Key": "a"}]})
    assert code(err) == "NoSuchBucket"
    many = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"k{i}"} for i in range(1000)]})
    assert len(many["Deleted"]) == 1000


def test_delete_objects_refuses_a_body_whose_checksum_does_not_match(s3: Any) -> None:
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="keep", Body=b"x")

    def tamper(request: Any, **_: Any) -> None:
        request.body = request.body.replace(b"<Key>nope</Key>", b"<Key>keep</Key>")

    s3.meta.events.register("before-send.s3.DeleteObjects", tamper)
    with pytest.raises(ClientError) as err:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "nope"}]})
    assert code(err) in ("BadDigest", "InvalidDigest")
    assert body(s3, bucket, "keep") == b"x"
