"""Bucket versioning through boto3: enabling and suspending, version ids, delete markers, reads
and deletes by version id, and the "null" version of suspended buckets."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from support.answers import body, code

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL


def new_bucket(s3: Any, status: str | None = None) -> str:
    name = f"ver-{secrets.token_hex(6)}"
    s3.create_bucket(Bucket=name)
    if status:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
    return name


def versions(s3: Any, bucket: str) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is latest, is delete marker) in listing order."""
    answer = s3.list_object_versions(Bucket=bucket)
    rows = [(v["Key"], v["VersionId"], v["IsLatest"], False) for v in answer.get("Versions", [])]
    rows += [(m["Key"], m["VersionId"], m["IsLatest"], True) for m in answer.get("DeleteMarkers", [])]
    return rows


def test_versioning_status_round_trips(s3: Any) -> None:
    bucket = new_bucket(s3)
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


def test_bad_status_and_mfa_delete_are_refused(s3: Any) -> None:
    bucket = new_bucket(s3)
    with pytest.raises(ClientError) as err:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Sometimes"})
    assert code(err) == "MalformedXML"
    with pytest.raises(ClientError) as err:
        s3.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled", "MFADelete": "Enabled"}
        )
    assert code(err) == "NotImplemented"
    assert "MFA" in err.value.response["Error"]["Message"]
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    with pytest.raises(ClientError) as err:
        s3.get_bucket_versioning(Bucket=f"missing-{secrets.token_hex(6)}")
    assert code(err) == "NoSuchBucket"


def test_enabled_bucket_keeps_every_version_readable_by_id(s3: Any) -> None:
    bucket = new_bucket(s3, "Enabled")
    v1 = s3.put_object(Bucket=bucket, Key="doc", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="doc", Body=b"two")["VersionId"]
    assert v1 != v2 and "null" not in (v1, v2)
    assert body(s3, bucket, "doc") == b"two"
    assert body(s3, bucket, "doc", VersionId=v1) == b"one"
    got = s3.get_object(Bucket=bucket, Key="doc", VersionId=v1)
    assert got["VersionId"] == v1
    assert s3.head_object(Bucket=bucket, Key="doc")["VersionId"] == v2
    assert versions(s3, bucket) == [("doc", v2, True, False), ("doc", v1, False, False)]
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="doc", VersionId="no-such-version")
    assert code(err) == "NoSuchVersion"
    assert (err.value.response["Error"]["Key"], err.value.response["Error"]["VersionId"]) == (
        "doc",
        "no-such-version",
    )


def test_delete_makes_a_marker_and_deleting_the_marker_restores_the_object(s3: Any) -> None:
    bucket = new_bucket(s3, "Enabled")
    v1 = s3.put_object(Bucket=bucket, Key="doc", Body=b"one")["VersionId"]
    deleted = s3.delete_object(Bucket=bucket, Key="doc")
    assert deleted["DeleteMarker"] is True
    marker = deleted["VersionId"]
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="doc")
    assert code(err) == "NoSuchKey"
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=bucket, Key="doc", VersionId=marker)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 405
    assert body(s3, bucket, "doc", VersionId=v1) == b"one"
    assert versions(s3, bucket) == [("doc", v1, False, False), ("doc", marker, True, True)]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    gone = s3.delete_object(Bucket=bucket, Key="doc", VersionId=marker)
    assert gone["DeleteMarker"] is True and gone["VersionId"] == marker
    assert body(s3, bucket, "doc") == b"one"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["doc"]


def test_deleting_the_latest_version_promotes_the_previous_one(s3: Any) -> None:
    bucket = new_bucket(s3, "Enabled")
    v1 = s3.put_object(Bucket=bucket, Key="doc", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="doc", Body=b"two")["VersionId"]
    assert s3.delete_object(Bucket=bucket, Key="doc", VersionId=v2)["VersionId"] == v2
    assert body(s3, bucket, "doc") == b"one"
    assert versions(s3, bucket) == [("doc", v1, True, False)]
    s3.delete_object(Bucket=bucket, Key="doc", VersionId=v1)
    assert versions(s3, bucket) == []


def test_suspended_bucket_writes_replace_only_the_null_version(s3: Any) -> None:
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="doc", Body=b"before versioning")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.head_object(Bucket=bucket, Key="doc")["VersionId"] == "null"
    kept = s3.put_object(Bucket=bucket, Key="doc", Body=b"versioned")["VersionId"]
    assert [v[1] for v in versions(s3, bucket)] == [kept, "null"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=bucket, Key="doc", Body=b"suspended 1")
    s3.put_object(Bucket=bucket, Key="doc", Body=b"suspended 2")
    assert versions(s3, bucket) == [("doc", "null", True, False), ("doc", kept, False, False)]
    assert body(s3, bucket, "doc") == b"suspended 2"
    assert body(s3, bucket, "doc", VersionId="null") == b"suspended 2"
    assert body(s3, bucket, "doc", VersionId=kept) == b"versioned"
    deleted = s3.delete_object(Bucket=bucket, Key="doc")
    assert deleted["DeleteMarker"] is True and deleted["VersionId"] == "null"
    assert versions(s3, bucket) == [("doc", kept, False, False), ("doc", "null", True, True)]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    again = s3.put_object(Bucket=bucket, Key="doc", Body=b"enabled again")["VersionId"]
    assert again not in ("null", kept)
    assert [v[1] for v in versions(s3, bucket)] == [again, kept, "null"]


def test_unversioned_bucket_overwrites_and_deletes_for_good(s3: Any) -> None:
    bucket = new_bucket(s3)
    first = s3.put_object(Bucket=bucket, Key="doc", Body=b"one")
    assert "VersionId" not in first
    s3.put_object(Bucket=bucket, Key="doc", Body=b"two")
    assert versions(s3, bucket) == [("doc", "null", True, False)]
    assert "DeleteMarker" not in s3.delete_object(Bucket=bucket, Key="doc")
    assert versions(s3, bucket) == []
