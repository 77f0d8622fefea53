"""Encryption at rest through boto3 and the `aws` CLI: SSE-S3 by default and on request, SSE-C
(the customer's key on every read, refused without it or with another), bucket default encryption,
copies and multipart uploads between none, SSE-S3 and SSE-C — and nothing of an encrypted
object's bytes or of a customer's key readable from the cloud's files."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from functional.conftest import on_both_databases
from support.answers import refused
from support.cloud import Cloud, Keys, aws

PART = 5 * 1024 * 1024

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL


def new_bucket(cloud: Cloud, account: Keys) -> tuple[Any, str]:
    s3 = cloud.client("s3", account)
    name = f"sse-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name)
    return s3, name


def customer_key() -> tuple[bytes, dict[str, str]]:
    """A 256-bit key and the SSE-C parameters boto3 takes for it (it adds the key's MD5)."""
    key = os.urandom(32)
    return key, {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}  # type: ignore[dict-item]


def copy_source_key(key: bytes) -> dict[str, Any]:
    return {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": key}


def marker(size: int) -> bytes:
    """Bytes no file of the cloud could hold by chance (a distinctive prefix, repeated)."""
    word = b"PLAINTEXT-" + secrets.token_hex(8).encode() + b"|"
    return (word * (size // len(word) + 1))[:size]


def files_holding(cloud: Cloud, needle: bytes) -> list[Path]:
    """Every file of the cloud's data directory (database, WAL, blobs, logs) that holds `needle`,
    but the master key's own file."""
    found = []
    for path in cloud.data_dir.rglob("*"):
        if path.is_file() and path.name != "walrus-master.key" and needle in path.read_bytes():
            found.append(path)
    return found


def test_new_objects_are_encrypted_by_default_and_say_so(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    small, large = marker(1000), marker(300 * 1024)  # one kept in its row, one in a blob
    for key, body in (("small", small), ("large", large)):
        assert s3.put_object(Bucket=bucket, Key=key, Body=body)["ServerSideEncryption"] == "AES256"
        got = s3.get_object(Bucket=bucket, Key=key)
        assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == body
        assert got["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'  # SSE-S3 ETags are the data's MD5
        ranged = s3.get_object(Bucket=bucket, Key=key, Range="bytes=17-600")["Body"].read()
        assert ranged == body[17:601]
    assert s3.head_object(Bucket=bucket, Key="small")["ServerSideEncryption"] == "AES256"
    for needle in (small[:64], large[5000:5064]):
        assert files_holding(cloud, needle) == []
    master = (cloud.data_dir / "walrus-master.key").read_text().strip()
    assert oct((cloud.data_dir / "walrus-master.key").stat().st_mode & 0o777) == "0o600"
    assert files_holding(cloud, master.encode()) == [] and files_holding(cloud, bytes.fromhex(master)) == []


def test_bucket_default_encryption(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    default = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert default == [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": False}
    ]
    rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [rule]})
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"] == [rule]
    kms = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}
    assert refused(
        s3.put_bucket_encryption, Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [kms]}
    ) == (501, "NotImplemented")
    assert refused(
        s3.put_bucket_encryption, Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": []}
    ) == (
        400,
        "MalformedXML",
    )
    s3.delete_bucket_encryption(Bucket=bucket)
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"] == default
    assert refused(s3.put_object, Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="aws:kms") == (
        501,
        "NotImplemented",
    )
    other = cloud.client("s3", cloud.new_account())
    assert refused(other.get_bucket_encryption, Bucket=bucket)[0] == 403


def test_sse_c_needs_the_same_key_for_every_read(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    key, sse_c = customer_key()
    body = marker(200 * 1024)
    put = s3.put_object(Bucket=bucket, Key="k", Body=body, **sse_c)
    assert put["SSECustomerAlgorithm"] == "AES256"
    assert put["SSECustomerKeyMD5"] == base64.b64encode(hashlib.md5(key).digest()).decode()
    assert put["ETag"] != f'"{hashlib.md5(body).hexdigest()}"'  # no MD5 of the data to see
    got = s3.get_object(Bucket=bucket, Key="k", **sse_c)
    assert got["Body"].read() == body and got["SSECustomerKeyMD5"] == put["SSECustomerKeyMD5"]
    assert (
        s3.get_object(Bucket=bucket, Key="k", Range="bytes=100-199", **sse_c)["Body"].read() == body[100:200]
    )
    assert s3.head_object(Bucket=bucket, Key="k", **sse_c)["ContentLength"] == len(body)
    assert refused(s3.get_object, Bucket=bucket, Key="k") == (400, "InvalidRequest")
    assert refused(s3.head_object, Bucket=bucket, Key="k")[0] == 400
    _, wrong = customer_key()
    assert refused(s3.get_object, Bucket=bucket, Key="k", **wrong) == (403, "AccessDenied")
    assert refused(s3.head_object, Bucket=bucket, Key="k", **wrong)[0] == 403
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    assert refused(s3.get_object, Bucket=bucket, Key="plain", **sse_c) == (400, "InvalidRequest")
    bad = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": b"short"}
    assert refused(s3.put_object, Bucket=bucket, Key="k2", Body=b"x", **bad) == (400, "InvalidArgument")
    assert refused(
        s3.put_object, Bucket=bucket, Key="k2", Body=b"x", ServerSideEncryption="AES256", **sse_c
    ) == (
        400,
        "InvalidArgument",
    )
    assert files_holding(cloud, body[:64]) == []
    assert files_holding(cloud, key) == [] and files_holding(cloud, base64.b64encode(key)) == []


def test_copies_between_none_sse_s3_and_sse_c(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    first, first_c = customer_key()
    second, second_c = customer_key()
    body = marker(100 * 1024)
    s3.put_object(Bucket=bucket, Key="c", Body=body, **first_c)
    # SSE-C -> SSE-S3: the source's key is needed
    assert refused(s3.copy_object, Bucket=bucket, Key="s", CopySource={"Bucket": bucket, "Key": "c"}) == (
        400,
        "InvalidRequest",
    )
    copied = s3.copy_object(
        Bucket=bucket, Key="s", CopySource={"Bucket": bucket, "Key": "c"}, **copy_source_key(first)
    )
    assert copied["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="s")["Body"].read() == body
    # SSE-C onto itself under a new key (a key rotation), then SSE-S3 -> SSE-C
    s3.copy_object(
        Bucket=bucket,
        Key="c",
        CopySource={"Bucket": bucket, "Key": "c"},
        **copy_source_key(first),
        **second_c,
    )
    assert s3.get_object(Bucket=bucket, Key="c", **second_c)["Body"].read() == body
    assert refused(s3.get_object, Bucket=bucket, Key="c", **first_c) == (403, "AccessDenied")
    s3.copy_object(Bucket=bucket, Key="c2", CopySource={"Bucket": bucket, "Key": "s"}, **first_c)
    assert s3.get_object(Bucket=bucket, Key="c2", **first_c)["Body"].read() == body


def test_multipart_uploads_encrypt_each_part(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    key, sse_c = customer_key()
    parts = [marker(PART), marker(1000)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="m", **sse_c)
    assert upload["SSECustomerAlgorithm"] == "AES256"
    uid = upload["UploadId"]
    assert refused(s3.upload_part, Bucket=bucket, Key="m", UploadId=uid, PartNumber=1, Body=parts[0]) == (
        400,
        "InvalidRequest",
    )
    etags = [
        s3.upload_part(Bucket=bucket, Key="m", UploadId=uid, PartNumber=n + 1, Body=data, **sse_c)["ETag"]
        for n, data in enumerate(parts)
    ]
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="m",
        UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]},
    )
    assert done["ETag"].endswith('-2"')
    whole = b"".join(parts)
    assert s3.get_object(Bucket=bucket, Key="m", **sse_c)["Body"].read() == whole
    tail = s3.get_object(Bucket=bucket, Key="m", Range=f"bytes={PART - 10}-{PART + 9}", **sse_c)[
        "Body"
    ].read()
    assert tail == whole[PART - 10 : PART + 10]
    assert refused(s3.get_object, Bucket=bucket, Key="m") == (400, "InvalidRequest")
    # An SSE-S3 upload whose part is copied from the SSE-C object
    sse_s3 = s3.create_multipart_upload(Bucket=bucket, Key="m2", ServerSideEncryption="AES256")["UploadId"]
    part = s3.upload_part_copy(
        Bucket=bucket,
        Key="m2",
        UploadId=sse_s3,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "m"},
        CopySourceRange="bytes=0-99",
        **copy_source_key(key),
    )
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="m2",
        UploadId=sse_s3,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]},
    )
    got = s3.get_object(Bucket=bucket, Key="m2")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == whole[:100]
    assert files_holding(cloud, parts[0][:64]) == [] and files_holding(cloud, key) == []


def test_aws_cli_sse(cloud: Cloud, account: Keys, tmp_path: Path) -> None:
    _, bucket = new_bucket(cloud, account)
    source = tmp_path / "file"
    source.write_bytes(marker(50 * 1024))
    key = secrets.token_hex(16)  # the CLI takes a 32-character key as is
    env = {"AWS_ACCESS_KEY_ID": account.access_key_id, "AWS_SECRET_ACCESS_KEY": account.secret_access_key}

    def cp(*args: str) -> None:
        done = cloud.run(
            "aws", "--endpoint-url", cloud.endpoint, "--region", cloud.region, "s3", "cp", *args, env=env
        )
        assert done.returncode == 0, done.stderr

    cp(str(source), f"s3://{bucket}/plain", "--sse", "AES256")
    cp(str(source), f"s3://{bucket}/mine", "--sse-c", "AES256", "--sse-c-key", key)
    back = tmp_path / "back"
    cp(f"s3://{bucket}/mine", str(back), "--sse-c", "AES256", "--sse-c-key", key)
    assert back.read_bytes() == source.read_bytes()
    head = aws(cloud, "s3api", "head-object", "--bucket", bucket, "--key", "plain", keys=account)
    assert head["ServerSideEncryption"] == "AES256"
    rules = aws(cloud, "s3api", "get-bucket-encryption", "--bucket", bucket, keys=account)
    assert rules["ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }


@pytest.mark.parametrize("size", [10, 300 * 1024])
def test_a_get_answered_on_the_event_loop_decrypts_too(cloud: Cloud, account: Keys, size: int) -> None:
    """A presigned GET of one object is answered on the loop (Walrus._answers_at_once): a small
    object's bytes are read into the answer, a larger one's sent in chunks, decrypted either way."""
    s3, bucket = new_bucket(cloud, account)
    body = marker(size)
    s3.put_object(Bucket=bucket, Key="k", Body=body)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == body
        assert response.headers["x-amz-server-side-encryption"] == "AES256"


def test_a_large_object_is_sent_from_a_thread_whole_ranged_and_to_a_client_that_leaves(
    cloud: Cloud, account: Keys
) -> None:
    """An encrypted object of 4 MiB or more is decrypted and written to the socket by a thread
    (walrus/decoding.py, the door's write_body): whole, in a range, on a kept-alive connection,
    and a client that reads a little and hangs up leaves the endpoint serving."""
    s3, bucket = new_bucket(cloud, account)
    body = os.urandom(20 * 1024 * 1024 + 3)
    s3.put_object(Bucket=bucket, Key="big", Body=body)
    for _ in range(2):  # the second on the connection the first kept alive
        got = s3.get_object(Bucket=bucket, Key="big")
        assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == body
    start, end = 3 * 1024 * 1024 + 11, 17 * 1024 * 1024 + 5
    ranged = s3.get_object(Bucket=bucket, Key="big", Range=f"bytes={start}-{end}")["Body"].read()
    assert ranged == body[start : end + 1]
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "big"})
    logged = len(cloud.log())
    for _ in range(3):
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read(1024 * 1024) == body[: 1024 * 1024]  # and it hangs up
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == body
    assert "Traceback" not in cloud.log()[logged:]  # a client leaving is no error of the server's
