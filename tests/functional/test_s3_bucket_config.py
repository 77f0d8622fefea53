"""Walrus bucket configuration through boto3: bucket tagging and CORS rules, and CORS itself
(preflight OPTIONS and Access-Control-* headers on actual requests) through plain HTTP."""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError

from support.answers import code, status
from support.cloud import Cloud, Keys


def new_bucket(cloud: Cloud, keys: Keys, prefix: str = "cfg") -> tuple[Any, str]:
    s3 = cloud.client("s3", keys)
    name = f"{prefix}-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name)
    return s3, name


def http(cloud: Cloud, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(cloud.endpoint + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


# --- tagging ---


def test_bucket_tagging_round_trip(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    with pytest.raises(ClientError) as err:
        s3.get_bucket_tagging(Bucket=bucket)
    assert code(err) == "NoSuchTagSet" and status(err) == 404
    tags = [{"Key": "team", "Value": "storage"}, {"Key": "env", "Value": ""}]
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tags})
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == tags
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "only", "Value": "one"}]})
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "only", "Value": "one"}]
    s3.delete_bucket_tagging(Bucket=bucket)
    with pytest.raises(ClientError) as err:
        s3.get_bucket_tagging(Bucket=bucket)
    assert code(err) == "NoSuchTagSet"


@pytest.mark.parametrize(
    "tags",
    [
        [{"Key": "dup", "Value": "1"}, {"Key": "dup", "Value": "2"}],
        [{"Key": f"k{i}", "Value": "v"} for i in range(51)],
        [{"Key": "k" * 129, "Value": "v"}],
        [{"Key": "aws:reserved", "Value": "v"}],
    ],
)
def test_bad_bucket_tags_are_invalid_tag(cloud: Cloud, account: Keys, tags: list[dict[str, str]]) -> None:
    s3, bucket = new_bucket(cloud, account)
    with pytest.raises(ClientError) as err:
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tags})
    assert code(err) == "InvalidTag"


def test_tagging_another_accounts_bucket_is_denied(cloud: Cloud, account: Keys) -> None:
    _, bucket = new_bucket(cloud, account)
    other = cloud.client("s3", cloud.new_account())
    with pytest.raises(ClientError) as err:
        other.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    assert code(err) == "AccessDenied"


# --- CORS configuration ---

RULES = [
    {
        "ID": "web",
        "AllowedOrigins": ["https://app.example.com", "https://*.example.org"],
        "AllowedMethods": ["GET", "PUT"],
        "AllowedHeaders": ["x-amz-*", "Content-Type"],
        "ExposeHeaders": ["ETag"],
        "MaxAgeSeconds": 600,
    },
    {"AllowedOrigins": ["*"], "AllowedMethods": ["HEAD"]},
]


def test_cors_configuration_round_trip(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    with pytest.raises(ClientError) as err:
        s3.get_bucket_cors(Bucket=bucket)
    assert code(err) == "NoSuchCORSConfiguration" and status(err) == 404
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES
    s3.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(ClientError) as err:
        s3.get_bucket_cors(Bucket=bucket)
    assert code(err) == "NoSuchCORSConfiguration"


@pytest.mark.parametrize(
    "rule",
    [
        {"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]},
        {"AllowedOrigins": ["https://*.*.example.com"], "AllowedMethods": ["GET"]},
        {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": ["x-*-*"]},
    ],
)
def test_bad_cors_rules_are_invalid_request(cloud: Cloud, account: Keys, rule: dict[str, Any]) -> None:
    s3, bucket = new_bucket(cloud, account)
    with pytest.raises(ClientError) as err:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})
    assert code(err) == "InvalidRequest"


# --- CORS requests ---


def test_preflight_allowed_by_a_rule(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    got, headers, _ = http(
        cloud,
        "OPTIONS",
        f"/{bucket}/some/key.txt",
        {
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "Content-Type, X-Amz-Meta-Owner",
        },
    )
    assert got == 200
    assert headers["access-control-allow-origin"] == "https://app.example.com"
    assert headers["access-control-allow-methods"] == "GET, PUT"
    assert headers["access-control-allow-headers"] == "content-type, x-amz-meta-owner"
    assert headers["access-control-expose-headers"] == "ETag"
    assert headers["access-control-max-age"] == "600"
    assert headers["access-control-allow-credentials"] == "true"
    # a wildcard origin pattern, and a wildcard-origin rule (answered with "*")
    got, headers, _ = http(
        cloud,
        "OPTIONS",
        f"/{bucket}/k",
        {"Origin": "https://a.example.org", "Access-Control-Request-Method": "GET"},
    )
    assert got == 200 and headers["access-control-allow-origin"] == "https://a.example.org"
    got, headers, _ = http(
        cloud, "OPTIONS", f"/{bucket}", {"Origin": "http://anywhere", "Access-Control-Request-Method": "HEAD"}
    )
    assert got == 200 and headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example.net", "Access-Control-Request-Method": "GET"},
        {"Origin": "https://app.example.com", "Access-Control-Request-Method": "DELETE"},
        {
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization-extra",
        },
    ],
)
def test_preflight_not_allowed_is_403(cloud: Cloud, account: Keys, headers: dict[str, str]) -> None:
    s3, bucket = new_bucket(cloud, account)
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    got, answered, body = http(cloud, "OPTIONS", f"/{bucket}/k", headers)
    assert got == 403
    assert b"CORSResponse: This CORS request is not allowed" in body
    assert "access-control-allow-origin" not in answered


def test_preflight_without_cors_configuration_is_403(cloud: Cloud, account: Keys) -> None:
    _, bucket = new_bucket(cloud, account)
    got, _, body = http(
        cloud, "OPTIONS", f"/{bucket}/k", {"Origin": "https://x", "Access-Control-Request-Method": "GET"}
    )
    assert got == 403 and b"CORSResponse" in body
    got, _, _ = http(cloud, "OPTIONS", f"/{bucket}/k", {"Access-Control-Request-Method": "GET"})
    assert got == 400


def test_actual_requests_carry_cors_headers_for_a_matching_origin(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    s3.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": ["https://app.example.com"],
                    "AllowedMethods": ["GET"],
                    "ExposeHeaders": ["ETag"],
                }
            ]
        },
    )
    s3.put_bucket_ownership_controls(  # ACLs on, public ones allowed: the page is public-read
        Bucket=bucket, OwnershipControls={"Rules": [{"ObjectOwnership": "ObjectWriter"}]}
    )
    s3.delete_public_access_block(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="page.html", Body=b"<p>hi</p>", ACL="public-read")
    got, headers, body = http(cloud, "GET", f"/{bucket}/page.html", {"Origin": "https://app.example.com"})
    assert got == 200 and body == b"<p>hi</p>"
    assert headers["access-control-allow-origin"] == "https://app.example.com"
    assert headers["access-control-expose-headers"] == "ETag"
    assert "Origin" in headers["vary"]
    got, headers, _ = http(cloud, "GET", f"/{bucket}/page.html", {"Origin": "https://other.example.com"})
    assert got == 200 and "access-control-allow-origin" not in headers
    got, headers, _ = http(cloud, "GET", f"/{bucket}/page.html", {})
    assert got == 200 and "access-control-allow-origin" not in headers
