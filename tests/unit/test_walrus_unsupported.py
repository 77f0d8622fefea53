"""`unsupported.refuse_unsupported`: the input members Walrus would ignore are refused with S3's
501 NotImplemented naming their header; what Walrus honours, or what only describes a request, is
let through."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import pytest

from mallee.core.errors import CloudError
from mallee.protocol.specs import load_service
from mallee.services.walrus.unsupported import ALL, HARMLESS, REFUSED, UNSUPPORTED, refuse_unsupported

WHEN = _dt.datetime(2030, 1, 1, tzinfo=_dt.UTC)


def test_every_listed_member_is_in_the_model() -> None:
    """A typo in the table would silently refuse nothing."""
    service = load_service("s3")
    everywhere = {
        name
        for op in service.operation_names
        if (shape := service.operation_model(op).input_shape) is not None
        for name in shape.members
    }
    assert set(UNSUPPORTED) <= everywhere
    for member, operations in UNSUPPORTED.items():
        for op in operations or ():
            assert member in service.operation_model(op).input_shape.members, (member, op)
    assert set(HARMLESS) <= set(UNSUPPORTED)


@pytest.mark.parametrize(
    ("operation", "member", "value", "wire"),
    [
        ("PutObject", "SSEKMSKeyId", "key", "x-amz-server-side-encryption-aws-kms-key-id"),
        ("PutObject", "BucketKeyEnabled", True, "x-amz-server-side-encryption-bucket-key-enabled"),
        ("CreateBucket", "BucketNamespace", "account-regional", "x-amz-bucket-namespace"),
        ("DeleteObject", "IfMatch", '"etag"', "If-Match"),
        ("DeleteObject", "IfMatchLastModifiedTime", WHEN, "x-amz-if-match-last-modified-time"),
        ("DeleteObject", "IfMatchSize", 0, "x-amz-if-match-size"),
        ("AbortMultipartUpload", "IfMatchInitiatedTime", WHEN, "x-amz-if-match-initiated-time"),
        ("PutObject", "WriteOffsetBytes", 0, "x-amz-write-offset-bytes"),
        ("PutObject", "ChecksumSHA512", "c2hh", "x-amz-checksum-sha512"),
    ],
)
def test_ignored_members_are_refused_by_their_wire_name(
    operation: str, member: str, value: Any, wire: str
) -> None:
    params = {"Bucket": "b", "Key": "k", member: value}
    with pytest.raises(CloudError) as err:
        refuse_unsupported(operation, params)
    assert (err.value.code, err.value.status) == ("NotImplemented", 501)
    assert err.value.message == f"{wire} is not supported by this server."


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("PutObject", {"IfMatch": '"etag"', "IfNoneMatch": "*"}),  # honoured there
        ("CompleteMultipartUpload", {"IfMatch": '"etag"', "IfNoneMatch": "*"}),
        ("GetObject", {"IfMatch": '"etag"', "IfNoneMatch": '"etag"', "Range": "bytes=0-1"}),
        ("PutObject", {"ExpectedBucketOwner": "111122223333", "RequestPayer": "requester"}),
        ("PutObject", {"ContentMD5": "bWQ1", "ChecksumAlgorithm": "CRC32", "ChecksumCRC32": "AAAAAA=="}),
        ("PutObject", {"BucketKeyEnabled": False, "ObjectLockLegalHoldStatus": "OFF"}),  # asks nothing
        ("CreateBucket", {"ObjectLockEnabledForBucket": False, "ObjectOwnership": "ObjectWriter"}),
        ("CreateBucket", {"ObjectOwnership": "BucketOwnerEnforced"}),  # honoured (ownership)
        ("CreateBucket", {"BucketNamespace": "global", "ACL": "private"}),
        ("DeleteObject", {"BypassGovernanceRetention": False, "MFA": "serial 123456"}),
        ("ListObjectsV2", {"OptionalObjectAttributes": ["RestoreStatus"], "RequestPayer": "requester"}),
        ("PutObject", {"ServerSideEncryption": None}),
        ("NoSuchOperation", {"ServerSideEncryption": "AES256"}),
    ],
)
def test_what_walrus_honours_or_only_describes_passes(operation: str, params: dict[str, Any]) -> None:
    refuse_unsupported(operation, {"Bucket": "b", "Key": "k", **params})


def test_the_table_is_per_operation() -> None:
    assert "IfMatch" in REFUSED["DeleteObject"] and "IfMatch" not in REFUSED["PutObject"]
    assert "IfMatch" not in REFUSED.get("CompleteMultipartUpload", {})
    assert all(UNSUPPORTED[m] is ALL for m in REFUSED["PutObject"])
    assert "ListBuckets" not in REFUSED


def test_several_refused_members_name_one_deterministically() -> None:
    params = {"SSEKMSKeyId": "k", "WriteOffsetBytes": 5, "ChecksumSHA512": "c2hh"}
    messages = set()
    for _ in range(3):
        with pytest.raises(CloudError) as err:
            refuse_unsupported("PutObject", dict(reversed(params.items())))
        messages.add(err.value.message)
    assert messages == {"x-amz-checksum-sha512 is not supported by this server."}
