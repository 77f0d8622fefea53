"""Object lock through boto3 and the `aws` CLI: buckets made with it (versioning on for good), the
lock configuration and default retention, GOVERNANCE and COMPLIANCE retention, legal holds, and
locked versions refused to DeleteObject and DeleteObjects (with and without the permission to
bypass governance)."""

from __future__ import annotations

import datetime as _dt
import secrets
from typing import Any

from functional.conftest import on_both_databases
from support.answers import refused
from support.cloud import Cloud, Keys, aws, user_keys

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL


def locked_bucket(cloud: Cloud, account: Keys) -> tuple[Any, str]:
    s3 = cloud.client("s3", account)
    name = f"lock-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return s3, name


def later(days: int = 1) -> _dt.datetime:
    return (_dt.datetime.now(_dt.UTC) + _dt.timedelta(days=days)).replace(microsecond=0)


def test_a_bucket_made_with_object_lock_keeps_versioning(cloud: Cloud, account: Keys) -> None:
    s3, bucket = locked_bucket(cloud, account)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    config = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert config == {"ObjectLockEnabled": "Enabled"}
    suspend = {"Bucket": bucket, "VersioningConfiguration": {"Status": "Suspended"}}
    assert refused(s3.put_bucket_versioning, **suspend) == (409, "InvalidBucketState")
    plain = f"plain-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=plain)
    assert refused(s3.get_object_lock_configuration, Bucket=plain) == (
        404,
        "ObjectLockConfigurationNotFoundError",
    )
    s3.put_object(Bucket=plain, Key="k", Body=b"x")
    retention = {"Mode": "GOVERNANCE", "RetainUntilDate": later()}
    assert refused(s3.put_object_retention, Bucket=plain, Key="k", Retention=retention) == (
        400,
        "InvalidRequest",
    )
    assert refused(s3.put_object, Bucket=plain, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                   ObjectLockRetainUntilDate=later()) == (400, "InvalidRequest")  # fmt: skip
    enable = {"ObjectLockEnabled": "Enabled"}
    assert refused(s3.put_object_lock_configuration, Bucket=plain, ObjectLockConfiguration=enable) == (
        409,
        "InvalidBucketState",
    )
    s3.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(Bucket=plain, ObjectLockConfiguration=enable)  # an existing bucket
    assert s3.get_object_lock_configuration(Bucket=plain)["ObjectLockConfiguration"] == enable


def test_compliance_retention_can_only_grow_and_refuses_deletes(cloud: Cloud, account: Keys) -> None:
    s3, bucket = locked_bucket(cloud, account)
    until = later()
    put = s3.put_object(
        Bucket=bucket, Key="k", Body=b"record", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until
    )
    version = put["VersionId"]
    head = s3.head_object(Bucket=bucket, Key="k")
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] == until
    assert refused(s3.delete_object, Bucket=bucket, Key="k", VersionId=version) == (403, "AccessDenied")
    assert refused(
        s3.delete_object, Bucket=bucket, Key="k", VersionId=version, BypassGovernanceRetention=True
    ) == (403, "AccessDenied")
    shorter = {"Mode": "COMPLIANCE", "RetainUntilDate": until - _dt.timedelta(hours=1)}
    assert refused(s3.put_object_retention, Bucket=bucket, Key="k", Retention=shorter) == (
        403,
        "AccessDenied",
    )
    weaker = {"Mode": "GOVERNANCE", "RetainUntilDate": later(2)}
    assert refused(s3.put_object_retention, Bucket=bucket, Key="k", Retention=weaker) == (403, "AccessDenied")
    longer = {"Mode": "COMPLIANCE", "RetainUntilDate": later(3)}
    s3.put_object_retention(Bucket=bucket, Key="k", Retention=longer)
    assert s3.get_object_retention(Bucket=bucket, Key="k")["Retention"] == longer
    marker = s3.delete_object(Bucket=bucket, Key="k")  # no version id: a delete marker, as on S3
    assert marker["DeleteMarker"] is True
    listed = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k", "VersionId": version}]})
    assert [(e["Key"], e["Code"]) for e in listed["Errors"]] == [("k", "AccessDenied")]
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=version)["Body"].read() == b"record"


def test_governance_retention_yields_to_a_bypass_with_permission(cloud: Cloud, account: Keys) -> None:
    s3, bucket = locked_bucket(cloud, account)
    version = s3.put_object(
        Bucket=bucket, Key="k", Body=b"g", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=later()
    )["VersionId"]
    allowed = ["s3:DeleteObjectVersion", "s3:PutObjectRetention", "s3:GetObjectRetention"]
    user_s3 = cloud.client("s3", user_keys(cloud, account, allow=allowed))
    delete = {"Bucket": bucket, "Key": "k", "VersionId": version, "BypassGovernanceRetention": True}
    assert refused(user_s3.delete_object, **delete) == (
        403,
        "AccessDenied",
    )  # no s3:BypassGovernanceRetention
    removed = {"Bucket": bucket, "Key": "k", "Retention": {}, "BypassGovernanceRetention": True}
    assert refused(user_s3.put_object_retention, **removed) == (403, "AccessDenied")
    assert refused(s3.delete_object, Bucket=bucket, Key="k", VersionId=version) == (403, "AccessDenied")
    s3.delete_object(**delete)  # the account's root may bypass
    assert "Versions" not in s3.list_object_versions(Bucket=bucket)


def test_legal_hold_and_default_retention(cloud: Cloud, account: Keys) -> None:
    s3, bucket = locked_bucket(cloud, account)
    version = s3.put_object(Bucket=bucket, Key="k", Body=b"h")["VersionId"]
    assert refused(s3.get_object_retention, Bucket=bucket, Key="k") == (404, "NoSuchObjectLockConfiguration")
    s3.put_object_legal_hold(Bucket=bucket, Key="k", LegalHold={"Status": "ON"})
    assert s3.get_object_legal_hold(Bucket=bucket, Key="k")["LegalHold"] == {"Status": "ON"}
    assert s3.head_object(Bucket=bucket, Key="k")["ObjectLockLegalHoldStatus"] == "ON"
    assert refused(
        s3.delete_object, Bucket=bucket, Key="k", VersionId=version, BypassGovernanceRetention=True
    ) == (
        403,
        "AccessDenied",
    )
    s3.put_object_legal_hold(Bucket=bucket, Key="k", LegalHold={"Status": "OFF"})
    s3.delete_object(Bucket=bucket, Key="k", VersionId=version)
    rule = {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 2}}
    s3.put_object_lock_configuration(
        Bucket=bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": rule}
    )
    assert s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]["Rule"] == rule
    s3.put_object(Bucket=bucket, Key="d", Body=b"d")
    retention = s3.get_object_retention(Bucket=bucket, Key="d")["Retention"]
    assert retention["Mode"] == "GOVERNANCE"
    assert later(1) < retention["RetainUntilDate"] <= later(2) + _dt.timedelta(seconds=5)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="m", ObjectLockLegalHoldStatus="ON")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="m", UploadId=upload, PartNumber=1, Body=b"p")
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="m",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert s3.get_object_legal_hold(Bucket=bucket, Key="m")["LegalHold"] == {"Status": "ON"}
    assert refused(s3.delete_object, Bucket=bucket, Key="m", VersionId=done["VersionId"])[0] == 403
    bad = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 0}}}
    assert refused(s3.put_object_lock_configuration, Bucket=bucket, ObjectLockConfiguration=bad)[0] == 400


def test_aws_cli_object_lock(cloud: Cloud, account: Keys) -> None:
    s3, bucket = locked_bucket(cloud, account)
    s3.put_object(Bucket=bucket, Key="k", Body=b"c")
    hold = ("--bucket", bucket, "--key", "k", "--legal-hold", "Status=ON")
    aws(cloud, "s3api", "put-object-legal-hold", *hold, keys=account)
    held = aws(cloud, "s3api", "get-object-legal-hold", "--bucket", bucket, "--key", "k", keys=account)
    assert held == {"LegalHold": {"Status": "ON"}}
    config = aws(cloud, "s3api", "get-object-lock-configuration", "--bucket", bucket, keys=account)
    assert config["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
