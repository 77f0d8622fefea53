"""Browser-based uploads (POST Object): forms made by boto3's generate_presigned_post, signed with
SigV4 and SigV2, posted as multipart/form-data through the public endpoint."""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.config import Config as BotoConfig

from support.cloud import Cloud, Keys

V4 = BotoConfig(signature_version="s3v4", retries={"max_attempts": 1})
V2 = BotoConfig(signature_version="s3", retries={"max_attempts": 1})


def _form(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = "----mallee" + secrets.token_hex(8)
    out = b""
    for name, value in fields.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n').encode()
    out += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    out += content + f"\r\n--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def _post(
    url: str, fields: dict[str, str], filename: str, content: bytes
) -> tuple[int, dict[str, str], bytes]:
    body, ctype = _form(fields, filename, content)
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=30)
    try:
        conn.request("POST", parts.path or "/", body=body, headers={"Content-Type": ctype})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _error_code(body: bytes) -> tuple[str, str]:
    root = ET.fromstring(body)
    return root.findtext("Code") or "", root.findtext("Message") or ""


@pytest.fixture
def s3_setup(cloud: Cloud, account: Keys) -> tuple[Any, str]:
    s3 = cloud.client("s3", account)
    bucket = "post-" + secrets.token_hex(4)
    s3.create_bucket(Bucket=bucket)
    return s3, bucket


@pytest.mark.parametrize("config", [V4, V2], ids=["sigv4", "sigv2"])
def test_post_upload_with_filename_placeholder(
    cloud: Cloud, account: Keys, s3_setup: tuple[Any, str], config: BotoConfig
) -> None:
    s3, bucket = s3_setup
    signer = cloud.client("s3", account, config=config)
    post = signer.generate_presigned_post(
        bucket,
        "uploads/${filename}",
        Fields={"Content-Type": "text/plain", "x-amz-meta-colour": "blue"},
        Conditions=[
            ["starts-with", "$key", "uploads/"],
            {"Content-Type": "text/plain"},
            {"x-amz-meta-colour": "blue"},
        ],
    )
    status, headers, body = _post(post["url"], post["fields"], "hello.txt", b"hello, world\n")
    assert status == 204, body
    digest = hashlib.md5(b"hello, world\n").hexdigest()
    assert headers["etag"] == f'"{digest}"'
    got = s3.get_object(Bucket=bucket, Key="uploads/hello.txt")
    assert got["Body"].read() == b"hello, world\n"
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"colour": "blue"}


@pytest.mark.parametrize("config", [V4, V2], ids=["sigv4", "sigv2"])
def test_post_upload_201_answers_post_response(
    cloud: Cloud, account: Keys, s3_setup: tuple[Any, str], config: BotoConfig
) -> None:
    s3, bucket = s3_setup
    signer = cloud.client("s3", account, config=config)
    post = signer.generate_presigned_post(
        bucket,
        "doc.bin",
        Fields={"success_action_status": "201"},
        Conditions=[{"success_action_status": "201"}],
    )
    content = os.urandom(3 * 1024 * 1024 + 17)  # bigger than what the front door reads whole
    status, _headers, body = _post(post["url"], post["fields"], "x.bin", content)
    assert status == 201, body
    root = ET.fromstring(body)
    ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
    assert root.tag.endswith("PostResponse")
    assert root.findtext("s3:Bucket", namespaces=ns) == bucket
    assert root.findtext("s3:Key", namespaces=ns) == "doc.bin"
    assert root.findtext("s3:ETag", namespaces=ns) == f'"{hashlib.md5(content).hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key="doc.bin")["Body"].read() == content


def test_post_upload_redirect_answers_303(cloud: Cloud, account: Keys, s3_setup: tuple[Any, str]) -> None:
    _s3, bucket = s3_setup
    signer = cloud.client("s3", account, config=V4)
    target = "http://example.test/done?x=1"
    post = signer.generate_presigned_post(
        bucket,
        "r.txt",
        Fields={"success_action_redirect": target},
        Conditions=[{"success_action_redirect": target}],
    )
    status, headers, _ = _post(post["url"], post["fields"], "r.txt", b"r")
    assert status == 303
    location = urlsplit(headers["location"])
    assert location.netloc == "example.test" and location.path == "/done"
    query = parse_qs(location.query)
    assert query["x"] == ["1"] and query["bucket"] == [bucket] and query["key"] == ["r.txt"]
    assert query["etag"] == [f'"{hashlib.md5(b"r").hexdigest()}"']


@pytest.mark.parametrize("config", [V4, V2], ids=["sigv4", "sigv2"])
def test_post_upload_content_length_range(
    cloud: Cloud, account: Keys, s3_setup: tuple[Any, str], config: BotoConfig
) -> None:
    s3, bucket = s3_setup
    signer = cloud.client("s3", account, config=config)
    post = signer.generate_presigned_post(bucket, "sized", Conditions=[["content-length-range", 10, 100]])
    status, _, body = _post(post["url"], post["fields"], "f", b"x" * 101)
    assert status == 400 and _error_code(body)[0] == "EntityTooLarge"
    status, _, body = _post(post["url"], post["fields"], "f", b"x" * 9)
    assert status == 400 and _error_code(body)[0] == "EntityTooSmall"
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    status, _, body = _post(post["url"], post["fields"], "f", b"x" * 50)
    assert status == 204, body


def test_post_upload_policy_violations(cloud: Cloud, account: Keys, s3_setup: tuple[Any, str]) -> None:
    s3, bucket = s3_setup
    signer = cloud.client("s3", account, config=V4)
    post = signer.generate_presigned_post(
        bucket, "in/${filename}", Conditions=[["starts-with", "$key", "in/"]]
    )
    fields = dict(post["fields"], key="out/${filename}")  # the key no longer meets the policy
    status, _, body = _post(post["url"], fields, "f", b"data")
    code, message = _error_code(body)
    assert (status, code) == (403, "AccessDenied")
    assert message.startswith("Invalid according to Policy: Policy Condition failed")

    extra = dict(post["fields"], **{"x-amz-meta-sneaky": "1"})  # a field the policy does not name
    status, _, body = _post(post["url"], extra, "f", b"data")
    code, message = _error_code(body)
    assert (status, code) == (403, "AccessDenied") and "Extra input fields: x-amz-meta-sneaky" in message

    expired = signer.generate_presigned_post(bucket, "late", ExpiresIn=-60)
    status, _, body = _post(expired["url"], expired["fields"], "f", b"data")
    assert status == 403 and _error_code(body) == (
        "AccessDenied",
        "Invalid according to Policy: Policy expired.",
    )

    forged = dict(post["fields"], **{"x-amz-signature": "0" * 64})
    status, _, body = _post(post["url"], forged, "f", b"data")
    assert status == 403 and _error_code(body)[0] == "SignatureDoesNotMatch"
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_post_upload_needs_write_permission(cloud: Cloud, account: Keys, s3_setup: tuple[Any, str]) -> None:
    _s3, bucket = s3_setup
    stranger = cloud.new_account("stranger")
    signer = cloud.client("s3", stranger, config=V4)
    post = signer.generate_presigned_post(bucket, "nope")
    status, _, body = _post(post["url"], post["fields"], "f", b"data")
    assert status == 403 and _error_code(body)[0] == "AccessDenied"
    # Anonymous (no policy at all) into a private bucket: refused too.
    status, _, body = _post(post["url"], {"key": "anon"}, "f", b"data")
    assert status == 403 and _error_code(body)[0] == "AccessDenied"
