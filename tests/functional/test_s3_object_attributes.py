"""Walrus GetObjectAttributes through boto3 and the aws CLI: the attributes asked for, single-PUT and
multipart objects (composite and full-object checksums), paging the parts, versions and delete
markers, SSE-C objects, and who may ask."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import zlib
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from support.answers import code, status
from support.cloud import Cloud, Keys, aws, user_keys

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL

MiB = 1024 * 1024
ALL = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]


def new_bucket(cloud: Cloud, account: Keys, versioned: bool = False) -> tuple[Any, str]:
    s3 = cloud.client("s3", account)
    bucket = f"attrs-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return s3, bucket


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def multipart(s3: Any, bucket: str, key: str, data: list[bytes], **create: Any) -> dict[str, Any]:
    """A completed upload of `data`'s parts with CRC32 checksums (`create`: its ChecksumType)."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32", **create)[
        "UploadId"
    ]
    parts = []
    for n, d in enumerate(data, 1):
        out = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=d, ChecksumAlgorithm="CRC32"
        )
        parts.append({"PartNumber": n, "ETag": out["ETag"], "ChecksumCRC32": out["ChecksumCRC32"]})
    done: dict[str, Any] = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **create
    )
    return done


def attributes(s3: Any, bucket: str, key: str, wanted: list[str] = ALL, **kwargs: Any) -> dict[str, Any]:
    out: dict[str, Any] = s3.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=wanted, **kwargs)
    out.pop("ResponseMetadata")
    return out


def test_single_put_object(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    data = b"attributes of a small object"
    put = s3.put_object(Bucket=bucket, Key="k", Body=data, ChecksumAlgorithm="SHA256")
    got = attributes(s3, bucket, "k")
    sha256 = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert put["ChecksumSHA256"] == sha256
    assert got.pop("LastModified") == s3.head_object(Bucket=bucket, Key="k")["LastModified"]
    assert got == {  # the ETag unquoted, STANDARD said, no ObjectParts for a single-PUT object
        "ETag": put["ETag"].strip('"'),
        "Checksum": {"ChecksumSHA256": sha256, "ChecksumType": "FULL_OBJECT"},
        "StorageClass": "STANDARD",
        "ObjectSize": len(data),
    }
    assert "VersionId" not in got  # an unversioned bucket's
    only = attributes(s3, bucket, "k", ["ObjectSize", "ETag"])  # only what is asked for
    assert only.keys() == {"LastModified", "ETag", "ObjectSize"}
    s3.put_object(Bucket=bucket, Key="ia", Body=b"x", StorageClass="STANDARD_IA")
    assert attributes(s3, bucket, "ia", ["StorageClass"])["StorageClass"] == "STANDARD_IA"


def test_errors(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as err:
        attributes(s3, bucket, "k", ["ETag", "Bogus"])
    assert (code(err), status(err)) == ("InvalidArgument", 400)
    with pytest.raises(ClientError) as err:
        attributes(s3, bucket, "missing")
    assert (code(err), status(err)) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as err:
        attributes(s3, f"no-{secrets.token_hex(4)}", "k")
    assert (code(err), status(err)) == ("NoSuchBucket", 404)


def test_multipart_composite_crc32_and_paging(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    data = [os.urandom(5 * MiB), os.urandom(5 * MiB), b"last part"]
    done = multipart(s3, bucket, "big", data)
    expected = crc32(b"".join(base64.b64decode(crc32(d)) for d in data))
    assert done["ChecksumCRC32"] == f"{expected}-3" and done["ChecksumType"] == "COMPOSITE"
    raw: list[bytes] = []
    s3.meta.events.register(
        "before-parse.s3.GetObjectAttributes", lambda response_dict, **_: raw.append(response_dict["body"])
    )
    got = attributes(s3, bucket, "big")
    sizes = [len(d) for d in data]
    assert got["ETag"] == done["ETag"].strip('"') and got["ObjectSize"] == sum(sizes)
    # S3 gives the checksum of checksums without its "-3" here.
    assert got["Checksum"] == {"ChecksumCRC32": expected, "ChecksumType": "COMPOSITE"}
    assert got["ObjectParts"] == {
        "TotalPartsCount": 3,
        "PartNumberMarker": 0,
        "NextPartNumberMarker": 3,
        "MaxParts": 1000,
        "IsTruncated": False,
        "Parts": [
            {"PartNumber": n, "Size": len(d), "ChecksumCRC32": crc32(d)} for n, d in enumerate(data, 1)
        ],
    }
    body = raw[-1].decode()  # S3's element order (SDKs such as Java's read it in order)
    names = ["<ETag>", "<Checksum>", "<ObjectParts>", "<PartsCount>", "<StorageClass>", "<ObjectSize>"]
    assert [body.index(name) for name in names] == sorted(body.index(name) for name in names)
    first = attributes(s3, bucket, "big", ["ObjectParts"], MaxParts=2)["ObjectParts"]
    assert first["IsTruncated"] is True and first["NextPartNumberMarker"] == 2 and first["MaxParts"] == 2
    assert [part["PartNumber"] for part in first["Parts"]] == [1, 2]
    rest = attributes(s3, bucket, "big", ["ObjectParts"], MaxParts=2, PartNumberMarker=2)["ObjectParts"]
    assert rest["IsTruncated"] is False and rest["PartNumberMarker"] == 2
    assert rest["Parts"] == [{"PartNumber": 3, "Size": len(data[2]), "ChecksumCRC32": crc32(data[2])}]
    past = attributes(s3, bucket, "big", ["ObjectParts"], PartNumberMarker=10)["ObjectParts"]
    assert "Parts" not in past and past["NextPartNumberMarker"] == 0 and past["TotalPartsCount"] == 3


def test_multipart_full_object_crc32(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    data = [os.urandom(5 * MiB), b"tail"]
    whole = crc32(b"".join(data))
    done = multipart(s3, bucket, "k", data, ChecksumType="FULL_OBJECT")
    assert done["ChecksumCRC32"] == whole
    got = attributes(s3, bucket, "k")
    assert got["Checksum"] == {"ChecksumCRC32": whole, "ChecksumType": "FULL_OBJECT"}
    assert got["ObjectParts"] == {"TotalPartsCount": 2}  # S3 lists the parts of COMPOSITE ones only


def test_versions_and_delete_markers(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account, versioned=True)
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"one")
    second = s3.put_object(Bucket=bucket, Key="k", Body=b"second")
    assert attributes(s3, bucket, "k", ["ObjectSize"])["VersionId"] == second["VersionId"]
    old = attributes(s3, bucket, "k", ["ETag", "ObjectSize"], VersionId=first["VersionId"])
    assert old["VersionId"] == first["VersionId"] and old["ObjectSize"] == 3
    assert old["ETag"] == first["ETag"].strip('"') and "DeleteMarker" not in old
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    with pytest.raises(ClientError) as err:
        attributes(s3, bucket, "k")
    headers = err.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert (code(err), status(err)) == ("NoSuchKey", 404)
    assert headers["x-amz-delete-marker"] == "true" and headers["x-amz-version-id"] == marker
    with pytest.raises(ClientError) as err:
        attributes(s3, bucket, "k", VersionId=marker)
    assert (code(err), status(err)) == ("MethodNotAllowed", 405)
    assert err.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
    assert attributes(s3, bucket, "k", ["ObjectSize"], VersionId=first["VersionId"])["ObjectSize"] == 3


def test_sse_c_object_needs_its_key(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    key = os.urandom(32)
    sse_c = {
        "SSECustomerAlgorithm": "AES256",
        "SSECustomerKey": base64.b64encode(key).decode(),
        "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(key).digest()).decode(),
    }
    s3.put_object(Bucket=bucket, Key="k", Body=b"secret", **sse_c)
    with pytest.raises(ClientError) as err:
        attributes(s3, bucket, "k")
    assert status(err) == 400
    assert attributes(s3, bucket, "k", ["ObjectSize"], **sse_c)["ObjectSize"] == 6


def test_permissions(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account, versioned=True)
    version = s3.put_object(Bucket=bucket, Key="k", Body=b"x")["VersionId"]

    def denied(keys: Keys, **kwargs: Any) -> bool:
        try:
            attributes(cloud.client("s3", keys), bucket, "k", ["ObjectSize"], **kwargs)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "AccessDenied"
            return True
        return False

    # S3 needs both s3:GetObject and s3:GetObjectAttributes; with a VersionId, their Version ones.
    assert denied(user_keys(cloud, account, allow=["s3:GetObjectAttributes"]))
    assert denied(user_keys(cloud, account, allow=["s3:GetObject"]))
    both = user_keys(cloud, account, allow=["s3:GetObject", "s3:GetObjectAttributes"])
    assert not denied(both)
    assert denied(both, VersionId=version)
    versions = user_keys(cloud, account, allow=["s3:GetObjectVersion", "s3:GetObjectVersionAttributes"])
    assert not denied(versions, VersionId=version) and denied(versions)
    assert denied(cloud.new_account())  # another account, granted nothing


def test_aws_cli(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    put = s3.put_object(Bucket=bucket, Key="dir/file.txt", Body=b"from the cli")
    got = aws(
        cloud,
        "s3api",
        "get-object-attributes",
        "--bucket",
        bucket,
        "--key",
        "dir/file.txt",
        "--object-attributes",
        "ETag",
        "ObjectSize",
        "StorageClass",
        keys=account,
    )
    assert got["ETag"] == put["ETag"].strip('"') and got["ObjectSize"] == 12
    assert got["StorageClass"] == "STANDARD" and "LastModified" in got
