"""Virtual-hosted-style S3 (`bucket.s3.mallee.test`) when the cloud has an S3 domain configured.

No DNS here: the client addresses `<bucket>.s3.mallee.test:<port>` as usual, and a botocore
`before-send` hook sends each request to 127.0.0.1 with that Host header kept.
"""

from __future__ import annotations

import http.client
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from support.cloud import Cloud, start_cloud, stop_cloud

DOMAIN = "s3.mallee.test"


@pytest.fixture(scope="module")
def vcloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    c = start_cloud(tmp_path_factory.mktemp("vcloud"), extra_env={"MALLEE_S3_DOMAIN": DOMAIN})
    try:
        yield c
    finally:
        stop_cloud(c)


def _port(cloud: Cloud) -> int:
    return urlsplit(cloud.endpoint).port or 80


def _virtual_client(cloud: Cloud, signature_version: str) -> Any:
    port = _port(cloud)
    config = BotoConfig(
        signature_version=signature_version,
        s3={"addressing_style": "virtual"},
        retries={"max_attempts": 1},
    )
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{DOMAIN}:{port}",
        region_name=cloud.region,
        aws_access_key_id=cloud.admin.access_key_id,
        aws_secret_access_key=cloud.admin.secret_access_key,
        config=config,
    )

    def to_loopback(request: Any, **_kwargs: Any) -> None:
        parts = urlsplit(request.url)
        request.headers["Host"] = parts.netloc
        request.url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))

    client.meta.events.register("before-send.s3", to_loopback)
    return client


@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_virtual_hosted_style_requests(vcloud: Cloud, signature_version: str) -> None:
    s3 = _virtual_client(vcloud, signature_version)
    bucket = "vh-" + secrets.token_hex(4)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="dir/a b.txt", Body=b"virtual")
    assert s3.get_object(Bucket=bucket, Key="dir/a b.txt")["Body"].read() == b"virtual"
    assert s3.head_object(Bucket=bucket, Key="dir/a b.txt")["ContentLength"] == 7
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="dir/")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/a b.txt"]
    # The same bucket path-style, through the ordinary endpoint.
    path_style = vcloud.client("s3")
    assert path_style.get_object(Bucket=bucket, Key="dir/a b.txt")["Body"].read() == b"virtual"
    s3.delete_object(Bucket=bucket, Key="dir/a b.txt")
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=bucket, Key="dir/a b.txt")
    assert err.value.response["Error"]["Code"] == "404"
    s3.delete_bucket(Bucket=bucket)


def test_virtual_host_presigned_url(vcloud: Cloud) -> None:
    s3 = _virtual_client(vcloud, "s3v4")
    bucket = "vh-" + secrets.token_hex(4)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"presigned")
    url = urlsplit(s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}))
    assert url.hostname == f"{bucket}.{DOMAIN}"
    conn = http.client.HTTPConnection("127.0.0.1", _port(vcloud), timeout=10)
    try:
        conn.request("GET", f"{url.path}?{url.query}", headers={"Host": url.netloc})
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"presigned")
    finally:
        conn.close()


def test_unknown_host_is_not_virtual(vcloud: Cloud, tmp_path: Path) -> None:
    """A Host outside the S3 domain keeps path-style meaning (the path's first segment)."""
    s3 = vcloud.client("s3")
    bucket = "vh-" + secrets.token_hex(4)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    conn = http.client.HTTPConnection("127.0.0.1", _port(vcloud), timeout=10)
    try:
        url = urlsplit(s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}))
        conn.request("GET", f"{url.path}?{url.query}")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"x")
    finally:
        conn.close()


def test_virtual_host_cors_preflight_and_form_post(vcloud: Cloud) -> None:
    s3 = _virtual_client(vcloud, "s3v4")
    bucket = "vh-" + secrets.token_hex(4)
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={
            "CORSRules": [{"AllowedOrigins": ["http://app.test"], "AllowedMethods": ["POST", "GET"]}]
        },
    )
    host = f"{bucket}.{DOMAIN}:{_port(vcloud)}"
    conn = http.client.HTTPConnection("127.0.0.1", _port(vcloud), timeout=10)
    try:
        conn.request(
            "OPTIONS",
            "/",
            headers={"Host": host, "Origin": "http://app.test", "Access-Control-Request-Method": "POST"},
        )
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        assert response.getheader("Access-Control-Allow-Origin") == "http://app.test"
    finally:
        conn.close()
    post = s3.generate_presigned_post(bucket, "form/${filename}")
    assert urlsplit(post["url"]).hostname == f"{bucket}.{DOMAIN}"
    boundary = "vhform" + secrets.token_hex(6)
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in post["fields"].items()
    )
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.txt"\r\n\r\n'
        f"via form\r\n--{boundary}--\r\n"
    ).encode()
    conn = http.client.HTTPConnection("127.0.0.1", _port(vcloud), timeout=10)
    try:
        headers = {
            "Host": host,
            "Origin": "http://app.test",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        }
        conn.request("POST", "/", body=body, headers=headers)
        response = conn.getresponse()
        assert (response.status, response.read()) == (204, b"")
        assert response.getheader("Access-Control-Allow-Origin") == "http://app.test"
    finally:
        conn.close()
    assert s3.get_object(Bucket=bucket, Key="form/f.txt")["Body"].read() == b"via form"
