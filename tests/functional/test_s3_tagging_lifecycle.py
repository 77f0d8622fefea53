"""Walrus object tagging and bucket lifecycle configuration through boto3. (The lifecycle job
itself is tested directly in tests/unit/walrus/test_lifecycle.py.)"""

from __future__ import annotations

import datetime as _dt
import secrets
from typing import Any

import pytest
from botocore.exceptions import ClientError

from support.answers import code
from support.cloud import Cloud, Keys


def new_bucket(cloud: Cloud, keys: Keys, prefix: str = "tl") -> tuple[Any, str]:
    s3 = cloud.client("s3", keys)
    name = f"{prefix}-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name)
    return s3, name


# --- object tagging ---


def test_object_tagging_round_trip(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="a=1&b=two")
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == [
        {"Key": "a", "Value": "1"},
        {"Key": "b", "Value": "two"},
    ]
    assert s3.get_object(Bucket=bucket, Key="k")["TagCount"] == 2
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": [{"Key": "only", "Value": ""}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == [{"Key": "only", "Value": ""}]
    s3.delete_object_tagging(Bucket=bucket, Key="k")
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == []
    assert "TagCount" not in s3.get_object(Bucket=bucket, Key="k")
    with pytest.raises(ClientError) as err:
        s3.get_object_tagging(Bucket=bucket, Key="missing")
    assert code(err) == "NoSuchKey"


def test_object_tagging_by_version_id(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"1")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"2")["VersionId"]
    out = s3.put_object_tagging(
        Bucket=bucket, Key="k", VersionId=v1, Tagging={"TagSet": [{"Key": "old", "Value": "yes"}]}
    )
    assert out["VersionId"] == v1
    got = s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=v1)
    assert got["VersionId"] == v1 and got["TagSet"] == [{"Key": "old", "Value": "yes"}]
    current = s3.get_object_tagging(Bucket=bucket, Key="k")
    assert current["VersionId"] == v2 and current["TagSet"] == []
    assert s3.delete_object_tagging(Bucket=bucket, Key="k", VersionId=v1)["VersionId"] == v1
    assert s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=v1)["TagSet"] == []


@pytest.mark.parametrize(
    "tags",
    [
        [{"Key": f"k{i}", "Value": "v"} for i in range(11)],
        [{"Key": "same", "Value": "1"}, {"Key": "same", "Value": "2"}],
        [{"Key": "k", "Value": "v" * 257}],
        [{"Key": "k", "Value": "semi;colon"}],  # outside S3's documented tag characters
        [{"Key": "a*b", "Value": "v"}],
    ],
)
def test_bad_object_tags_are_invalid_tag(cloud: Cloud, account: Keys, tags: list[dict[str, str]]) -> None:
    s3, bucket = new_bucket(cloud, account)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as err:
        s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": tags})
    assert code(err) == "InvalidTag"


def test_tags_take_every_documented_character(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    tags = [{"Key": "Projekt é_9 +-=.:/@", "Value": "Ünïcode 42 +-=._:/@"}]
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": tags})
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == tags


# --- lifecycle configuration ---

RULES: list[dict[str, Any]] = [
    {"ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30}},
    {
        "ID": "tmp",
        "Filter": {"And": {"Prefix": "tmp/", "Tags": [{"Key": "scratch", "Value": "yes"}]}},
        "Status": "Enabled",
        "Expiration": {"Date": _dt.datetime(2030, 1, 1, tzinfo=_dt.UTC)},
    },
    {
        "ID": "versions",
        "Filter": {"Tag": {"Key": "keep", "Value": "short"}},
        "Status": "Disabled",
        "NoncurrentVersionExpiration": {"NoncurrentDays": 7},
    },
    {
        "ID": "uploads",
        "Filter": {"Prefix": ""},
        "Status": "Enabled",
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2},
    },
]


def test_lifecycle_configuration_round_trip(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    with pytest.raises(ClientError) as err:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert code(err) == "NoSuchLifecycleConfiguration"
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": RULES})
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == RULES
    s3.delete_bucket_lifecycle(Bucket=bucket)
    with pytest.raises(ClientError) as err:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert code(err) == "NoSuchLifecycleConfiguration"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"Filter": {"Prefix": ""}, "Status": "Enabled", "Expiration": {"Days": 0}}, "InvalidArgument"),
        (
            {
                "Filter": {"Prefix": ""},
                "Status": "Enabled",
                "Expiration": {"Date": _dt.datetime(2030, 1, 1, 12, tzinfo=_dt.UTC)},
            },
            "InvalidArgument",
        ),
        (
            {
                "Filter": {"Prefix": "a", "Tag": {"Key": "k", "Value": "v"}},
                "Status": "Enabled",
                "Expiration": {"Days": 1},
            },
            "MalformedXML",
        ),
        ({"Filter": {"Prefix": ""}, "Status": "Enabled"}, "InvalidRequest"),
    ],
)
def test_bad_lifecycle_rules(cloud: Cloud, account: Keys, rule: dict[str, Any], expected: str) -> None:
    s3, bucket = new_bucket(cloud, account)
    with pytest.raises(ClientError) as err:
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [rule]})
    assert code(err) == expected


def test_lifecycle_of_another_accounts_bucket_is_denied(cloud: Cloud, account: Keys) -> None:
    _, bucket = new_bucket(cloud, account)
    other = cloud.client("s3", cloud.new_account())
    with pytest.raises(ClientError) as err:
        other.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": RULES[:1]})
    assert code(err) == "AccessDenied"
