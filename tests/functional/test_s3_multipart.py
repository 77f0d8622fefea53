"""Walrus multipart uploads through boto3 and the aws CLI: the life cycle, the errors S3 answers,
listing with pagination, UploadPartCopy, GetObject by part number, high-level transfers, and that a
completed object appears all at once."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from support.answers import code, status
from support.cloud import Cloud, Keys

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL

MiB = 1024 * 1024


def new_bucket(cloud: Cloud, account: Keys) -> tuple[Any, str]:
    s3 = cloud.client("s3", account)
    bucket = f"mp-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    return s3, bucket


def md5_etag(parts: list[bytes]) -> str:
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(joined).hexdigest()}-{len(parts)}"'


def test_life_cycle_parts_out_of_order(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    created = s3.create_multipart_upload(
        Bucket=bucket,
        Key="dir/big.bin",
        ContentType="application/x-test",
        Metadata={"colour": "blue"},
        Tagging="a=1&b=2",
    )
    upload_id = created["UploadId"]
    assert len(upload_id) >= 32 and created["Key"] == "dir/big.bin"
    data = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1234)]
    etags: dict[int, str] = {}
    for number in (3, 1, 2):  # uploaded out of order
        etags[number] = s3.upload_part(
            Bucket=bucket, Key="dir/big.bin", UploadId=upload_id, PartNumber=number, Body=data[number - 1]
        )["ETag"]
    assert etags[1] == f'"{hashlib.md5(data[0]).hexdigest()}"'
    with pytest.raises(ClientError) as err:  # not there until completed
        s3.head_object(Bucket=bucket, Key="dir/big.bin")
    assert status(err) == 404
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="dir/big.bin",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in (1, 2, 3)]},
    )
    assert done["ETag"] == md5_etag(data)
    head = s3.head_object(Bucket=bucket, Key="dir/big.bin")
    assert head["ContentLength"] == sum(len(d) for d in data)
    assert head["ETag"] == md5_etag(data)
    assert head["ContentType"] == "application/x-test"
    assert head["Metadata"] == {"colour": "blue"}
    assert head["TagCount"] == 2
    body = s3.get_object(Bucket=bucket, Key="dir/big.bin")["Body"].read()
    assert body == b"".join(data)
    ranged = s3.get_object(Bucket=bucket, Key="dir/big.bin", Range=f"bytes={5 * MiB - 10}-{5 * MiB + 9}")
    assert ranged["Body"].read() == (data[0] + data[1])[5 * MiB - 10 : 5 * MiB + 10]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    # Completing the same upload again after success: S3 answers with the object it made.
    again = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="dir/big.bin",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in (1, 2, 3)]},
    )
    assert again["ETag"] == done["ETag"]
    with pytest.raises(ClientError) as err:  # ... but not with other parts
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="dir/big.bin",
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etags[1]}]},
        )
    assert code(err) == "NoSuchUpload"
    assert err.value.response["Error"]["UploadId"] == upload_id


def test_replacing_a_part_and_unused_parts(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"old")
    new = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"new!")["ETag"]
    s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=2, Body=b"unused")
    parts = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 4), (2, 6)]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": new}]},
    )
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"new!"


def test_errors(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    small = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"x" * 100)["ETag"]
    big = os.urandom(5 * MiB)
    e2 = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=2, Body=big)["ETag"]
    e3 = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=3, Body=b"tail")["ETag"]

    def complete(parts: list[dict[str, Any]]) -> None:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    with pytest.raises(ClientError) as err:  # a part never uploaded
        complete([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 4, "ETag": e3}])
    assert code(err) == "InvalidPart"
    with pytest.raises(ClientError) as err:  # ETag differs
        complete([{"PartNumber": 2, "ETag": e3}, {"PartNumber": 3, "ETag": e3}])
    assert code(err) == "InvalidPart"
    with pytest.raises(ClientError) as err:
        complete([{"PartNumber": 3, "ETag": e3}, {"PartNumber": 2, "ETag": e2}])
    assert code(err) == "InvalidPartOrder"
    with pytest.raises(ClientError) as err:  # part 1 is under 5 MiB and not the last
        complete([{"PartNumber": 1, "ETag": small}, {"PartNumber": 2, "ETag": e2}])
    assert code(err) == "EntityTooSmall"
    with pytest.raises(ClientError) as err:
        s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=10001, Body=b"x")
    assert code(err) == "InvalidArgument"
    for call in (
        lambda: s3.upload_part(Bucket=bucket, Key="k", UploadId="nope", PartNumber=1, Body=b"x"),
        lambda: s3.list_parts(Bucket=bucket, Key="k", UploadId="nope"),
        lambda: s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId="nope"),
        lambda: s3.upload_part(Bucket=bucket, Key="other", UploadId=upload_id, PartNumber=1, Body=b"x"),
        lambda: s3.complete_multipart_upload(
            Bucket=bucket,
            Key="k",
            UploadId="nope",
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e2}]},
        ),
    ):
        with pytest.raises(ClientError) as err:
            call()
        assert code(err) == "NoSuchUpload" and status(err) == 404
    # A failed Complete leaves the upload as it was: a good part list still works.
    complete([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 3, "ETag": e3}])
    body = s3.get_object(Bucket=bucket, Key="k")["Body"].read()
    assert body == big + b"tail"


def test_abort_and_delete_bucket(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"abc")
    with pytest.raises(ClientError) as err:
        s3.delete_bucket(Bucket=bucket)
    assert code(err) == "BucketNotEmpty"
    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)
    with pytest.raises(ClientError) as err:
        s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id)
    assert code(err) == "NoSuchUpload"
    with pytest.raises(ClientError) as err:
        s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)
    assert code(err) == "NoSuchUpload"
    s3.delete_bucket(Bucket=bucket)


def test_list_parts_pagination(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    for number in range(1, 8):
        s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=number, Body=b"p" * number)
    first = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id, MaxParts=3)
    assert first["IsTruncated"] and first["NextPartNumberMarker"] == 3 and first["MaxParts"] == 3
    assert [p["PartNumber"] for p in first["Parts"]] == [1, 2, 3]
    assert first["Owner"]["ID"] == account.account_id and first["Initiator"]["ID"] == account.account_id
    second = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id, MaxParts=3, PartNumberMarker=3)
    assert [p["PartNumber"] for p in second["Parts"]] == [4, 5, 6]
    pages = s3.get_paginator("list_parts").paginate(
        Bucket=bucket, Key="k", UploadId=upload_id, PaginationConfig={"PageSize": 2}
    )
    assert [p["PartNumber"] for page in pages for p in page["Parts"]] == list(range(1, 8))
    last = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id, PartNumberMarker=6)
    assert not last["IsTruncated"] and [p["Size"] for p in last["Parts"]] == [7]


def test_list_multipart_uploads_pagination_and_delimiter(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    keys = ["a/1", "a/2", "b", "b", "c/x/y", "d"]
    ids = [s3.create_multipart_upload(Bucket=bucket, Key=k)["UploadId"] for k in keys]
    everything = s3.list_multipart_uploads(Bucket=bucket)
    assert [u["Key"] for u in everything["Uploads"]] == keys
    assert {u["UploadId"] for u in everything["Uploads"]} == set(ids)
    assert everything["Uploads"][0]["Initiator"]["ID"] == account.account_id
    first = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=3)
    assert first["IsTruncated"] and [u["Key"] for u in first["Uploads"]] == ["a/1", "a/2", "b"]
    second = s3.list_multipart_uploads(
        Bucket=bucket,
        MaxUploads=3,
        KeyMarker=first["NextKeyMarker"],
        UploadIdMarker=first["NextUploadIdMarker"],
    )
    assert [u["Key"] for u in second["Uploads"]] == ["b", "c/x/y", "d"]
    assert {first["Uploads"][2]["UploadId"], second["Uploads"][0]["UploadId"]} == {ids[2], ids[3]}
    pages = s3.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 2}
    )
    assert [u["UploadId"] for page in pages for u in page.get("Uploads", [])] == [
        u["UploadId"] for u in everything["Uploads"]
    ]
    grouped = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [c["Prefix"] for c in grouped["CommonPrefixes"]] == ["a/", "c/"]
    assert [u["Key"] for u in grouped["Uploads"]] == ["b", "b", "d"]
    prefixed = s3.list_multipart_uploads(Bucket=bucket, Prefix="c/", Delimiter="/")
    assert [c["Prefix"] for c in prefixed["CommonPrefixes"]] == ["c/x/"]
    delimited_pages = s3.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 1}
    )
    seen = [
        item
        for page in delimited_pages
        for item in [c["Prefix"] for c in page.get("CommonPrefixes", [])]
        + [u["Key"] for u in page.get("Uploads", [])]
    ]
    assert seen == ["a/", "b", "b", "c/", "d"]


def test_upload_part_copy_with_ranges(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    source = os.urandom(12 * MiB)
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    src_etag = s3.head_object(Bucket=bucket, Key="src")["ETag"]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    ranges = [(0, 5 * MiB - 1), (5 * MiB, 10 * MiB), (10 * MiB + 1, 12 * MiB - 1)]
    parts = []
    for number, (first, last) in enumerate(ranges, 1):
        result = s3.upload_part_copy(
            Bucket=bucket,
            Key="dst",
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": bucket, "Key": "src"},
            CopySourceRange=f"bytes={first}-{last}",
            CopySourceIfMatch=src_etag,
        )["CopyPartResult"]
        assert result["ETag"] == f'"{hashlib.md5(source[first : last + 1]).hexdigest()}"'
        parts.append({"PartNumber": number, "ETag": result["ETag"]})
    with pytest.raises(ClientError) as err:
        s3.upload_part_copy(
            Bucket=bucket,
            Key="dst",
            UploadId=upload_id,
            PartNumber=9,
            CopySource=f"{bucket}/src",
            CopySourceIfNoneMatch=src_etag,
        )
    assert status(err) == 412
    with pytest.raises(ClientError) as err:
        s3.upload_part_copy(
            Bucket=bucket,
            Key="dst",
            UploadId=upload_id,
            PartNumber=9,
            CopySource=f"{bucket}/src",
            CopySourceRange=f"bytes=0-{12 * MiB}",
        )
    assert code(err) == "InvalidRange"
    with pytest.raises(ClientError) as err:
        s3.upload_part_copy(
            Bucket=bucket, Key="dst", UploadId=upload_id, PartNumber=9, CopySource=f"{bucket}/missing"
        )
    assert code(err) == "NoSuchKey"
    s3.complete_multipart_upload(
        Bucket=bucket, Key="dst", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    expected = b"".join(source[a : b + 1] for a, b in ranges)
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == expected
    # A copied part of a multipart object spans its blobs.
    upload2 = s3.create_multipart_upload(Bucket=bucket, Key="dst2")["UploadId"]
    whole = s3.upload_part_copy(
        Bucket=bucket, Key="dst2", UploadId=upload2, PartNumber=1, CopySource=f"{bucket}/dst"
    )["CopyPartResult"]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="dst2",
        UploadId=upload2,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": whole["ETag"]}]},
    )
    assert s3.get_object(Bucket=bucket, Key="dst2")["Body"].read() == expected


def test_upload_part_copy_needs_read_access_to_the_source(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    s3.put_object(Bucket=bucket, Key="private", Body=b"secret")
    other, other_bucket = new_bucket(cloud, cloud.new_account())
    upload_id = other.create_multipart_upload(Bucket=other_bucket, Key="k")["UploadId"]
    with pytest.raises(ClientError) as err:
        other.upload_part_copy(
            Bucket=other_bucket, Key="k", UploadId=upload_id, PartNumber=1, CopySource=f"{bucket}/private"
        )
    assert code(err) == "AccessDenied"


def test_get_and_head_by_part_number(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    data = [os.urandom(5 * MiB), os.urandom(100)]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    parts = [
        {
            "PartNumber": n,
            "ETag": s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=n, Body=d)["ETag"],
        }
        for n, d in enumerate(data, 1)
    ]
    s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts})
    total = 5 * MiB + 100
    second = s3.get_object(Bucket=bucket, Key="k", PartNumber=2)
    assert second["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert second["PartsCount"] == 2 and second["ContentLength"] == 100
    assert second["ContentRange"] == f"bytes {5 * MiB}-{total - 1}/{total}"
    assert second["Body"].read() == data[1]
    first = s3.head_object(Bucket=bucket, Key="k", PartNumber=1)
    assert first["ContentLength"] == 5 * MiB and first["PartsCount"] == 2
    assert first["ETag"] == md5_etag(data)
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="k", PartNumber=3)
    assert status(err) == 416
    s3.put_object(Bucket=bucket, Key="single", Body=b"hello")
    single = s3.get_object(Bucket=bucket, Key="single", PartNumber=1)
    assert single["Body"].read() == b"hello" and "PartsCount" not in single


def test_checksum_algorithm_composite(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    created = s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="CRC32")
    upload_id = created["UploadId"]
    assert created["ChecksumAlgorithm"] == "CRC32"
    data = [os.urandom(5 * MiB), b"end"]
    parts = []
    for n, d in enumerate(data, 1):
        out = s3.upload_part(
            Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=n, Body=d, ChecksumAlgorithm="CRC32"
        )
        crc = base64.b64encode(zlib.crc32(d).to_bytes(4, "big")).decode()
        assert out["ChecksumCRC32"] == crc
        parts.append({"PartNumber": n, "ETag": out["ETag"], "ChecksumCRC32": crc})
    listed = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id)
    assert (
        listed["ChecksumAlgorithm"] == "CRC32"
        and listed["Parts"][1]["ChecksumCRC32"] == parts[1]["ChecksumCRC32"]
    )
    with pytest.raises(ClientError) as err:
        bad = [parts[0], {**parts[1], "ChecksumCRC32": "AAAAAA=="}]
        s3.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": bad}
        )
    assert code(err) == "InvalidPart"
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    joined = b"".join(base64.b64decode(p["ChecksumCRC32"]) for p in parts)
    expected = base64.b64encode(zlib.crc32(joined).to_bytes(4, "big")).decode() + "-2"
    assert done["ChecksumCRC32"] == expected
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == expected
    assert s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")["Body"].read() == b"".join(data)


def test_checksum_full_object_crc64nvme(cloud: Cloud, account: Keys) -> None:
    from awscrt import checksums as crt

    s3, bucket = new_bucket(cloud, account)
    created = s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="CRC64NVME")
    assert created["ChecksumType"] == "FULL_OBJECT"
    upload_id = created["UploadId"]
    data = [os.urandom(5 * MiB), os.urandom(777)]
    parts = []
    for n, d in enumerate(data, 1):
        out = s3.upload_part(
            Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=n, Body=d, ChecksumAlgorithm="CRC64NVME"
        )
        parts.append({"PartNumber": n, "ETag": out["ETag"], "ChecksumCRC64NVME": out["ChecksumCRC64NVME"]})
    whole = base64.b64encode(crt.crc64nvme(b"".join(data)).to_bytes(8, "big")).decode()
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="k",
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            ChecksumCRC64NVME="AAAAAAAAAAA=",
            ChecksumType="FULL_OBJECT",
        )
    assert code(err) == "BadDigest"
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": parts},
        ChecksumCRC64NVME=whole,
        ChecksumType="FULL_OBJECT",
    )
    assert done["ChecksumCRC64NVME"] == whole and done["ChecksumType"] == "FULL_OBJECT"
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["ChecksumCRC64NVME"] == whole and got["Body"].read() == b"".join(data)  # botocore checks it


def test_upload_file_download_file_transfer(cloud: Cloud, account: Keys, tmp_path: Path) -> None:
    s3, bucket = new_bucket(cloud, account)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(23 * MiB + 12345))
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)
    s3.upload_file(str(src), bucket, "big/file.bin", Config=config)
    head = s3.head_object(Bucket=bucket, Key="big/file.bin")
    assert head["ContentLength"] == src.stat().st_size and head["ETag"].endswith('-5"')
    # s3transfer asks for CRC32 checksums by default: the object has S3's composite one.
    summed = s3.head_object(Bucket=bucket, Key="big/file.bin", ChecksumMode="ENABLED")
    assert summed["ChecksumCRC32"].endswith("-5")
    dst = tmp_path / "dst.bin"
    s3.download_file(bucket, "big/file.bin", str(dst), Config=config)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()


def test_aws_cli_cp_round_trip(cloud: Cloud, tmp_path: Path) -> None:
    bucket = f"mp-cli-{secrets.token_hex(4)}"
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(20 * MiB))
    for args in (
        ("s3", "mb", f"s3://{bucket}"),
        ("s3", "cp", str(src), f"s3://{bucket}/big.bin"),
        ("s3", "cp", f"s3://{bucket}/big.bin", str(tmp_path / "back.bin")),
    ):
        result = cloud.run("aws", "--profile", "mallee", *args)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    head = cloud.client("s3").head_object(Bucket=bucket, Key="big.bin")
    assert head["ETag"].endswith('-3"')  # the CLI's 8 MiB parts


def test_completed_object_appears_atomically(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    reader = cloud.client("s3", account)
    data = [os.urandom(5 * MiB) for _ in range(3)] + [b"last"]
    total = sum(len(d) for d in data)
    seen: list[int | None] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                seen.append(reader.head_object(Bucket=bucket, Key="k")["ContentLength"])
            except ClientError as exc:
                assert exc.response["Error"]["Code"] in ("404", "NoSuchKey")
                seen.append(None)

    for _round in range(3):
        upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
        parts = [
            {
                "PartNumber": n,
                "ETag": s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=n, Body=d)[
                    "ETag"
                ],
            }
            for n, d in enumerate(data, 1)
        ]
        seen.clear()
        stop.clear()
        thread = threading.Thread(target=watch)
        thread.start()
        try:
            s3.complete_multipart_upload(
                Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            while seen.count(total) < 3:
                time.sleep(0.01)
        finally:
            stop.set()
            thread.join()
        assert set(seen) <= {None, total}
        assert seen[-1] == total
        first_seen = seen.index(total)
        assert all(s == total for s in seen[first_seen:])  # once there, it stays
        s3.delete_object(Bucket=bucket, Key="k")


def test_replaced_unused_and_aborted_parts_leave_no_blobs(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    before = cloud.blob_count()
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    for body in (b"one", b"two", b"three"):  # the same part three times
        etag = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=body)["ETag"]
    s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=2, Body=b"unused")
    assert cloud.blobs_settle_at(before + 2)
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    assert cloud.blobs_settle_at(before + 1)
    aborted = s3.create_multipart_upload(Bucket=bucket, Key="gone")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="gone", UploadId=aborted, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=bucket, Key="gone", UploadId=aborted)
    s3.delete_object(Bucket=bucket, Key="k")
    assert cloud.blobs_settle_at(before)
