"""Walrus's bucket calls as S3 answers them, through boto3 and the aws CLI: ListBuckets pages
(MaxBuckets, ContinuationToken, Prefix, BucketRegion), the bucket owner condition
(`x-amz-expected-bucket-owner`), CreateBucket on a name already taken, and ACL answers (the grantee
XML S3 documents, and what a bucket ACL's READ grant lets another account do)."""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from support.answers import body, code, status
from support.cloud import Cloud, Keys, aws

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL

S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
UNCHECKED = BotoConfig(parameter_validation=False, retries={"max_attempts": 1})


def make_buckets(s3: Any, count: int) -> tuple[str, list[str]]:
    """`count` new buckets sharing a fresh prefix: the prefix and their names, sorted."""
    prefix = f"calls-{secrets.token_hex(3)}-"
    names = [f"{prefix}{i}" for i in range(count)]
    for name in names:
        s3.create_bucket(Bucket=name)
    return prefix, names


def names_of(answer: dict[str, Any]) -> list[str]:
    return [b["Name"] for b in answer["Buckets"]]


def policy(principal: str, bucket: str) -> str:
    return (
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
        f'"Principal": {{"AWS": "{principal}"}}, "Action": ["s3:GetObject", "s3:ListBucket"], '
        f'"Resource": ["arn:aws:s3:::{bucket}", "arn:aws:s3:::{bucket}/*"]}}]}}'
    )


# --- ListBuckets ---


def test_list_buckets_pages_by_max_buckets_and_continuation_token(cloud: Cloud, account: Keys) -> None:
    s3 = cloud.client("s3", account)
    prefix, names = make_buckets(s3, 5)
    first = s3.list_buckets(Prefix=prefix, MaxBuckets=2)
    assert names_of(first) == names[:2] and first["Prefix"] == prefix
    assert first["Owner"]["ID"] == account.account_id
    assert all(b["BucketRegion"] == cloud.region for b in first["Buckets"])
    second = s3.list_buckets(Prefix=prefix, MaxBuckets=2, ContinuationToken=first["ContinuationToken"])
    assert names_of(second) == names[2:4]
    last = s3.list_buckets(Prefix=prefix, MaxBuckets=2, ContinuationToken=second["ContinuationToken"])
    assert names_of(last) == names[4:] and "ContinuationToken" not in last
    exact = s3.list_buckets(Prefix=prefix, MaxBuckets=5)  # a full page with nothing after it
    assert names_of(exact) == names and "ContinuationToken" not in exact
    pages = list(s3.get_paginator("list_buckets").paginate(Prefix=prefix, PaginationConfig={"PageSize": 2}))
    assert [names_of(p) for p in pages] == [names[:2], names[2:4], names[4:]]
    everything = s3.list_buckets()  # unpaginated: every bucket, no Prefix echoed, no token
    assert names_of(everything) == names and "Prefix" not in everything
    assert "ContinuationToken" not in everything


def test_list_buckets_filters_by_region_and_prefix(cloud: Cloud, account: Keys) -> None:
    s3 = cloud.client("s3", account)
    prefix, names = make_buckets(s3, 2)
    assert names_of(s3.list_buckets(BucketRegion=cloud.region)) == names
    elsewhere = s3.list_buckets(BucketRegion="us-west-2", MaxBuckets=1)
    assert elsewhere["Buckets"] == [] and "ContinuationToken" not in elsewhere
    assert names_of(s3.list_buckets(Prefix=f"{prefix}1")) == names[1:]
    # A prefix is matched literally: `_` and `%` are no wildcards.
    assert s3.list_buckets(Prefix=prefix[:-1] + "_")["Buckets"] == []
    assert s3.list_buckets(Prefix="%")["Buckets"] == []
    other = cloud.client("s3", cloud.new_account())  # another account sees none of them
    assert other.list_buckets(Prefix=prefix)["Buckets"] == []


def test_list_buckets_bad_arguments_are_invalid_argument(cloud: Cloud, account: Keys) -> None:
    s3 = cloud.client("s3", account, config=UNCHECKED)  # boto3 itself refuses MaxBuckets=0
    for value in (0, 10_001, -1):
        with pytest.raises(ClientError) as err:
            s3.list_buckets(MaxBuckets=value)
        assert code(err) == "InvalidArgument" and status(err) == 400
    assert s3.list_buckets(MaxBuckets=10_000)["Buckets"] == []
    for token in ("not-a-token", "bm9wZQ=="):
        with pytest.raises(ClientError) as err:
            s3.list_buckets(ContinuationToken=token)
        assert code(err) == "InvalidArgument" and status(err) == 400


def test_aws_cli_pages_list_buckets(cloud: Cloud, account: Keys) -> None:
    prefix, names = make_buckets(cloud.client("s3", account), 5)

    def cli(*args: str) -> Any:
        return aws(cloud, "s3api", "list-buckets", "--prefix", prefix, *args, keys=account)

    whole = cli("--page-size", "2")  # the CLI follows the tokens itself
    assert names_of(whole) == names and whole["Prefix"] == prefix
    head = cli("--page-size", "2", "--max-items", "3")
    assert names_of(head) == names[:3] and head["NextToken"]
    tail = cli("--page-size", "2", "--max-items", "3", "--starting-token", head["NextToken"])
    assert names_of(tail) == names[3:] and "NextToken" not in tail
    env = {"AWS_ACCESS_KEY_ID": account.access_key_id, "AWS_SECRET_ACCESS_KEY": account.secret_access_key}
    listed = cloud.run("aws", "--endpoint-url", cloud.endpoint, "--region", cloud.region, "s3", "ls", env=env)
    assert listed.returncode == 0, listed.stderr
    assert all(name in listed.stdout for name in names)


# --- x-amz-expected-bucket-owner ---


def test_expected_bucket_owner_of_another_account_is_access_denied(cloud: Cloud, account: Keys) -> None:
    s3 = cloud.client("s3", account)
    bucket = f"owner-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"v", ExpectedBucketOwner=account.account_id)
    assert s3.list_objects_v2(Bucket=bucket, ExpectedBucketOwner=account.account_id)["KeyCount"] == 1
    stranger_id = "999999999999"
    calls = [
        lambda **kw: s3.list_objects_v2(Bucket=bucket, **kw),
        lambda **kw: s3.get_object(Bucket=bucket, Key="k", **kw),
        lambda **kw: s3.put_object(Bucket=bucket, Key="new", Body=b"x", **kw),
        lambda **kw: s3.get_bucket_acl(Bucket=bucket, **kw),
        lambda **kw: s3.delete_bucket(Bucket=bucket, **kw),
    ]
    for call in calls:
        with pytest.raises(ClientError) as err:
            call(ExpectedBucketOwner=stranger_id)
        assert code(err) == "AccessDenied" and status(err) == 403
    with pytest.raises(ClientError) as err:  # HEAD: the status alone
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=stranger_id)
    assert status(err) == 403
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]  # nothing written
    with pytest.raises(ClientError) as err:  # no bucket: no owner to compare
        s3.list_objects_v2(Bucket=f"{bucket}-none", ExpectedBucketOwner=stranger_id)
    assert code(err) == "NoSuchBucket"


def test_expected_bucket_owner_across_accounts(cloud: Cloud, account: Keys) -> None:
    """Account B, allowed in by A's bucket policy, names A as the owner (allowed), or itself (403)."""
    s3 = cloud.client("s3", account)
    bucket = f"owner-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"shared")
    other = cloud.new_account()
    s3.put_bucket_policy(Bucket=bucket, Policy=policy(other.account_id, bucket))
    b3 = cloud.client("s3", other)
    assert body(b3, bucket, "k", ExpectedBucketOwner=account.account_id) == b"shared"
    assert b3.list_objects_v2(Bucket=bucket, ExpectedBucketOwner=account.account_id)["KeyCount"] == 1
    for call in (
        lambda: b3.get_object(Bucket=bucket, Key="k", ExpectedBucketOwner=other.account_id),
        lambda: b3.list_objects_v2(Bucket=bucket, ExpectedBucketOwner=other.account_id),
    ):
        with pytest.raises(ClientError) as err:
            call()
        assert code(err) == "AccessDenied" and status(err) == 403


# --- CreateBucket on a name already taken ---


def test_creating_a_bucket_again(cloud: Cloud, account: Keys) -> None:
    """Outside us-east-1 (the test cloud is in its own region) S3 answers 409 BucketAlreadyOwnedByYou
    and leaves the bucket as it was; another account's name is BucketAlreadyExists."""
    assert cloud.region != "us-east-1"
    s3 = cloud.client("s3", account)
    bucket = f"again-{secrets.token_hex(4)}"
    stranger = cloud.new_account()
    s3.create_bucket(Bucket=bucket, ObjectOwnership="ObjectWriter", GrantRead=f'id="{stranger.account_id}"')
    with pytest.raises(ClientError) as err:
        s3.create_bucket(Bucket=bucket)
    assert code(err) == "BucketAlreadyOwnedByYou" and status(err) == 409
    grants = s3.get_bucket_acl(Bucket=bucket)["Grants"]
    assert [g["Grantee"].get("ID") for g in grants] == [account.account_id, stranger.account_id]  # no reset
    with pytest.raises(ClientError) as err:
        cloud.client("s3", stranger).create_bucket(Bucket=bucket)
    assert code(err) == "BucketAlreadyExists" and status(err) == 409


def test_create_bucket_configuration_tags_and_directory_buckets(cloud: Cloud, account: Keys) -> None:
    s3 = cloud.client("s3", account)
    bucket = f"tagged-{secrets.token_hex(4)}"
    tags = [{"Key": "team", "Value": "storage"}]
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"Tags": tags})
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == tags
    with pytest.raises(ClientError) as err:
        s3.create_bucket(
            Bucket=f"{bucket}-bad", CreateBucketConfiguration={"Tags": [{"Key": "aws:x", "Value": ""}]}
        )
    assert code(err) == "InvalidTag"
    with pytest.raises(ClientError) as err:
        s3.create_bucket(
            Bucket=f"{bucket}-dir",
            CreateBucketConfiguration={
                "Location": {"Type": "AvailabilityZone", "Name": "az1"},
                "Bucket": {"Type": "Directory", "DataRedundancy": "SingleAvailabilityZone"},
            },
        )
    assert code(err) == "NotImplemented" and status(err) == 501
    assert s3.list_buckets(Prefix=bucket)["Buckets"][0]["Name"] == bucket  # neither was created


# --- ACLs ---


def raw_answers(client: Any, operation: str) -> list[bytes]:
    """The raw bodies `client` receives for `operation` from now on."""
    seen: list[bytes] = []
    client.meta.events.register(
        f"after-call.s3.{operation}", lambda http_response, **_: seen.append(http_response.content)
    )
    return seen


def grantees(document: bytes) -> list[tuple[str | None, dict[str, str | None]]]:
    """(xsi:type, {child: text}) of each Grantee of an AccessControlPolicy answer."""
    root = ET.fromstring(document)
    assert root.tag == f"{S3_NS}AccessControlPolicy"
    owner = root.find(f"{S3_NS}Owner")
    assert owner is not None and owner.findtext(f"{S3_NS}ID") and owner.findtext(f"{S3_NS}DisplayName")
    found = []
    for grantee in root.iter(f"{S3_NS}Grantee"):
        children = {child.tag.removeprefix(S3_NS): child.text for child in grantee}
        found.append((grantee.get(XSI_TYPE), children))
    return found


def test_acl_answers_carry_the_grantee_fields_s3_documents(cloud: Cloud, account: Keys) -> None:
    """As S3's GetBucketAcl/GetObjectAcl examples: a CanonicalUser grantee has ID and DisplayName,
    a Group grantee its URI, each with its xsi:type attribute."""
    s3 = cloud.client("s3", account)
    bucket = f"acl-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket, ObjectOwnership="ObjectWriter")  # ACLs on, public grants allowed
    s3.delete_public_access_block(Bucket=bucket)
    other = cloud.new_account()
    s3.put_bucket_acl(Bucket=bucket, GrantRead=f'id="{other.account_id}"', GrantReadACP=f'uri="{ALL_USERS}"')
    s3.put_object(Bucket=bucket, Key="k", Body=b"v", GrantRead=f'id="{other.account_id}"')
    bucket_xml, object_xml = raw_answers(s3, "GetBucketAcl"), raw_answers(s3, "GetObjectAcl")
    bucket_acl = s3.get_bucket_acl(Bucket=bucket)
    object_acl = s3.get_object_acl(Bucket=bucket, Key="k")
    me, them = account.account_id, other.account_id
    user = {"ID": me, "DisplayName": me}
    assert grantees(bucket_xml[0]) == [
        ("CanonicalUser", user),
        ("CanonicalUser", {"ID": them, "DisplayName": them}),
        ("Group", {"URI": ALL_USERS}),
    ]
    assert grantees(object_xml[0]) == [
        ("CanonicalUser", user),
        ("CanonicalUser", {"ID": them, "DisplayName": them}),
    ]
    assert bucket_acl["Owner"] == object_acl["Owner"] == user
    assert bucket_acl["Grants"][2] == {
        "Grantee": {"Type": "Group", "URI": ALL_USERS},
        "Permission": "READ_ACP",
    }
    assert object_acl["Grants"][1] == {
        "Grantee": {"Type": "CanonicalUser", "ID": them, "DisplayName": them},
        "Permission": "READ",
    }


def test_bucket_read_grant_lists_but_does_not_read_objects(cloud: Cloud, account: Keys) -> None:
    """A bucket ACL's READ lets another account list the bucket; reading an object takes the
    object's own ACL (or a policy)."""
    s3 = cloud.client("s3", account)
    bucket = f"acl-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket, ObjectOwnership="ObjectWriter")  # ACLs on
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    other = cloud.new_account()
    b3 = cloud.client("s3", other)
    s3.put_bucket_acl(Bucket=bucket, GrantRead=f'id="{other.account_id}"')
    assert [o["Key"] for o in b3.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]
    assert b3.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    for call in (
        lambda: b3.get_object(Bucket=bucket, Key="k"),
        lambda: b3.get_object_acl(Bucket=bucket, Key="k"),
        lambda: b3.get_bucket_acl(Bucket=bucket),  # READ is not READ_ACP
        lambda: b3.put_object(Bucket=bucket, Key="w", Body=b"x"),  # nor WRITE
    ):
        with pytest.raises(ClientError) as err:
            call()
        assert code(err) == "AccessDenied"
    with pytest.raises(ClientError) as err:
        b3.head_object(Bucket=bucket, Key="k")
    assert status(err) == 403
    s3.put_object_acl(Bucket=bucket, Key="k", GrantRead=f'id="{other.account_id}"')
    assert body(b3, bucket, "k") == b"v"
