"""Walrus bucket policies and ACLs through boto3, and what they let other accounts and anonymous
callers (plain HTTP) do: cross-account grants, aws:SourceIp and s3:prefix conditions, explicit
Deny, Principal "*", canned ACLs, grant headers, AccessControlPolicy documents, object ACLs.

Buckets are made as an S3 user makes them for this since April 2023: with ACLs on
(ObjectOwnership ObjectWriter) to use ACLs, without the public access block to make anything
public (`new_bucket(acls=..., public=...)`)."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from mallee.core.config import PORT_OFFSETS
from support.answers import code
from support.cloud import Cloud, Keys, user_keys

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def new_bucket(
    cloud: Cloud, keys: Keys, prefix: str = "pol", *, acls: bool = False, public: bool = False
) -> tuple[Any, str]:
    """A new bucket; `acls`: with ACLs on (ObjectWriter); `public`: its public access block deleted."""
    s3 = cloud.client("s3", keys)
    name = f"{prefix}-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name, **({"ObjectOwnership": "ObjectWriter"} if acls else {}))
    if public:
        s3.delete_public_access_block(Bucket=name)
    return s3, name


def anonymous_get(
    cloud: Cloud, path: str, headers: dict[str, str] | None = None, endpoint: str | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request((endpoint or cloud.endpoint) + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


# --- bucket policy documents ---


def test_bucket_policy_round_trip_and_status(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account, public=True)
    with pytest.raises(ClientError) as err:
        s3.get_bucket_policy(Bucket=bucket)
    assert code(err) == "NoSuchBucketPolicy"
    document = policy(
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*",
        }
    )
    s3.put_bucket_policy(Bucket=bucket, Policy=document)
    assert json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"]) == json.loads(document)
    assert s3.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is True
    s3.delete_bucket_policy(Bucket=bucket)
    with pytest.raises(ClientError) as err:
        s3.get_bucket_policy(Bucket=bucket)
    assert code(err) == "NoSuchBucketPolicy"


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::B/*"}),  # no Principal
        policy(
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "ec2:RunInstances",
                "Resource": "arn:aws:s3:::B/*",
            }
        ),
        policy(
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::other/*",
            }
        ),
        policy(
            {"Effect": "Maybe", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::B/*"}
        ),
    ],
)
def test_bad_policies_are_malformed_policy(cloud: Cloud, account: Keys, document: str) -> None:
    s3, bucket = new_bucket(cloud, account)
    with pytest.raises(ClientError) as err:
        s3.put_bucket_policy(Bucket=bucket, Policy=document.replace(":::B/", f":::{bucket}/"))
    assert code(err) == "MalformedPolicy"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


# --- what bucket policies grant ---


def test_cross_account_user_reads_through_bucket_policy(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    s3.put_object(Bucket=bucket, Key="shared/report.csv", Body=b"a,b\n")
    other = cloud.new_account()
    reader = user_keys(cloud, other, "reader", allow=["s3:GetObject"])
    idle = user_keys(cloud, other, "idle")  # no IAM permissions of its own
    reader_s3, idle_s3 = cloud.client("s3", reader), cloud.client("s3", idle)
    with pytest.raises(ClientError) as err:  # no bucket policy yet
        reader_s3.get_object(Bucket=bucket, Key="shared/report.csv")
    assert code(err) == "AccessDenied"
    s3.put_bucket_policy(
        Bucket=bucket,
        Policy=policy(
            {
                "Effect": "Allow",
                "Principal": {"AWS": other.account_id},
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/shared/*",
            }
        ),
    )
    assert reader_s3.get_object(Bucket=bucket, Key="shared/report.csv")["Body"].read() == b"a,b\n"
    assert cloud.client("s3", other).get_object(Bucket=bucket, Key="shared/report.csv")["Body"].read()
    with pytest.raises(ClientError) as err:  # the bucket policy allows, its own account does not
        idle_s3.get_object(Bucket=bucket, Key="shared/report.csv")
    assert code(err) == "AccessDenied"
    with pytest.raises(ClientError) as err:  # outside the granted prefix
        reader_s3.put_object(Bucket=bucket, Key="shared/new", Body=b"x")
    assert code(err) == "AccessDenied"
    with pytest.raises(ClientError) as err:  # a third account is not named
        cloud.client("s3", cloud.new_account()).get_object(Bucket=bucket, Key="shared/report.csv")
    assert code(err) == "AccessDenied"


def test_source_ip_condition(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    s3.put_object(Bucket=bucket, Key="k", Body=b"local")
    s3.put_object(Bucket=bucket, Key="far", Body=b"far")
    s3.put_bucket_policy(
        Bucket=bucket,
        Policy=policy(
            {
                "Sid": "loopback",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/k",
                "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}},
            },
            {
                "Sid": "elsewhere",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/far",
                "Condition": {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}},
            },
        ),
    )
    assert anonymous_get(cloud, f"/{bucket}/k") == (200, b"local")
    assert anonymous_get(cloud, f"/{bucket}/far")[0] == 403
    # A client names no address of its own: proxy headers are not believed, at the endpoint or
    # at Walrus's own port (uvicorn believes them from loopback peers unless told not to).
    walrus = f"http://127.0.0.1:{int(cloud.env['MALLEE_PORT_BASE']) + PORT_OFFSETS['walrus']}"
    for endpoint in (cloud.endpoint, walrus):
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            spoofed = {header: "for=203.0.113.7" if header == "Forwarded" else "203.0.113.7"}
            assert anonymous_get(cloud, f"/{bucket}/far", spoofed, endpoint)[0] == 403, (endpoint, header)


def test_prefix_condition_on_listing(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    for key in ("home/alice/a", "home/bob/b"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    other = cloud.new_account()
    lister = user_keys(cloud, other, "lister", allow=["s3:ListBucket"])
    s3.put_bucket_policy(
        Bucket=bucket,
        Policy=policy(
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{other.account_id}:user/lister"},
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": "home/alice/*"}},
            }
        ),
    )
    client = cloud.client("s3", lister)
    listed = client.list_objects_v2(Bucket=bucket, Prefix="home/alice/")
    assert [o["Key"] for o in listed["Contents"]] == ["home/alice/a"]
    for prefix in ("home/bob/", None):
        with pytest.raises(ClientError) as err:
            client.list_objects_v2(Bucket=bucket, **({"Prefix": prefix} if prefix else {}))
        assert code(err) == "AccessDenied"


def test_explicit_deny_beats_allows_even_for_the_owners_users(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account, public=True)
    s3.put_object(Bucket=bucket, Key="secret/x", Body=b"x")
    s3.put_object(Bucket=bucket, Key="open/y", Body=b"y")
    admin_user = user_keys(cloud, account, "admin", allow=["s3:*"])
    s3.put_bucket_policy(
        Bucket=bucket,
        Policy=policy(
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            },
            {
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/secret/*",
            },
        ),
    )
    user_s3 = cloud.client("s3", admin_user)
    assert user_s3.get_object(Bucket=bucket, Key="open/y")["Body"].read() == b"y"
    with pytest.raises(ClientError) as err:
        user_s3.get_object(Bucket=bucket, Key="secret/x")
    assert code(err) == "AccessDenied"
    assert anonymous_get(cloud, f"/{bucket}/open/y") == (200, b"y")
    assert anonymous_get(cloud, f"/{bucket}/secret/x")[0] == 403


def test_anonymous_access_needs_principal_star(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account, public=True)
    s3.put_object(Bucket=bucket, Key="index.html", Body=b"<html/>")
    assert anonymous_get(cloud, f"/{bucket}/index.html")[0] == 403
    s3.put_bucket_policy(
        Bucket=bucket,
        Policy=policy(
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ),
    )
    assert anonymous_get(cloud, f"/{bucket}/index.html") == (200, b"<html/>")
    assert anonymous_get(cloud, f"/{bucket}?list-type=2")[0] == 403  # listing was not granted
    s3.delete_bucket_policy(Bucket=bucket)
    assert anonymous_get(cloud, f"/{bucket}/index.html")[0] == 403


# --- ACLs ---


def owner_grant(account_id: str) -> dict[str, Any]:
    return {
        "Grantee": {"Type": "CanonicalUser", "ID": account_id, "DisplayName": account_id},
        "Permission": "FULL_CONTROL",
    }


def test_bucket_acl_canned_headers_and_document(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account, acls=True, public=True)
    acl = s3.get_bucket_acl(Bucket=bucket)
    assert acl["Owner"]["ID"] == account.account_id
    assert acl["Grants"] == [owner_grant(account.account_id)]
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    grants = s3.get_bucket_acl(Bucket=bucket)["Grants"]
    assert grants[0] == owner_grant(account.account_id)
    assert grants[1] == {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"}
    other = cloud.new_account()
    s3.put_bucket_acl(Bucket=bucket, GrantRead=f'id="{other.account_id}"', GrantWriteACP=f"uri={ALL_USERS}")
    grants = s3.get_bucket_acl(Bucket=bucket)["Grants"]
    assert [(g["Grantee"].get("ID") or g["Grantee"].get("URI"), g["Permission"]) for g in grants] == [
        (account.account_id, "FULL_CONTROL"),
        (other.account_id, "READ"),
        (ALL_USERS, "WRITE_ACP"),
    ]
    s3.put_bucket_acl(
        Bucket=bucket,
        AccessControlPolicy={
            "Owner": {"ID": account.account_id},
            "Grants": [
                owner_grant(account.account_id),
                {"Grantee": {"Type": "CanonicalUser", "ID": other.account_id}, "Permission": "WRITE"},
            ],
        },
    )
    grants = s3.get_bucket_acl(Bucket=bucket)["Grants"]
    assert grants == [
        owner_grant(account.account_id),
        {
            "Grantee": {"Type": "CanonicalUser", "ID": other.account_id, "DisplayName": other.account_id},
            "Permission": "WRITE",
        },
    ]
    # the grant works: the other account may now write objects
    cloud.client("s3", other).put_object(Bucket=bucket, Key="dropped", Body=b"x")


def test_acl_errors(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account, acls=True)
    with pytest.raises(ClientError) as err:
        s3.put_bucket_acl(Bucket=bucket, GrantRead='emailAddress="someone@example.com"')
    assert code(err) == "NotImplemented"
    with pytest.raises(ClientError) as err:
        s3.put_bucket_acl(
            Bucket=bucket,
            AccessControlPolicy={
                "Owner": {"ID": account.account_id},
                "Grants": [
                    {
                        "Grantee": {"Type": "AmazonCustomerByEmail", "EmailAddress": "a@b.c"},
                        "Permission": "READ",
                    }
                ],
            },
        )
    assert code(err) == "NotImplemented"
    with pytest.raises(ClientError) as err:
        s3.put_bucket_acl(Bucket=bucket, ACL="public-read", GrantRead=f"uri={ALL_USERS}")
    assert code(err) == "InvalidRequest"
    with pytest.raises(ClientError) as err:
        s3.put_bucket_acl(Bucket=bucket, ACL="no-such-acl")
    assert code(err) == "InvalidArgument"
    with pytest.raises(ClientError) as err:
        cloud.client("s3", cloud.new_account()).get_bucket_acl(Bucket=bucket)
    assert code(err) == "AccessDenied"


def test_object_acl_and_anonymous_reads(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account, acls=True, public=True)
    s3.put_object(Bucket=bucket, Key="private.txt", Body=b"p")
    s3.put_object(Bucket=bucket, Key="public.txt", Body=b"public", ACL="public-read")
    assert anonymous_get(cloud, f"/{bucket}/public.txt") == (200, b"public")
    assert anonymous_get(cloud, f"/{bucket}/private.txt")[0] == 403
    grants = s3.get_object_acl(Bucket=bucket, Key="public.txt")["Grants"]
    assert grants == [
        owner_grant(account.account_id),
        {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"},
    ]
    assert s3.get_object_acl(Bucket=bucket, Key="private.txt")["Grants"] == [owner_grant(account.account_id)]
    s3.put_object_acl(Bucket=bucket, Key="private.txt", GrantRead=f'uri="{ALL_USERS}"')
    assert anonymous_get(cloud, f"/{bucket}/private.txt") == (200, b"p")
    s3.put_object_acl(Bucket=bucket, Key="private.txt", ACL="private")
    assert anonymous_get(cloud, f"/{bucket}/private.txt")[0] == 403
    assert anonymous_get(cloud, f"/{bucket}?list-type=2")[0] == 403  # object ACLs do not open the bucket
    with pytest.raises(ClientError) as err:
        s3.get_object_acl(Bucket=bucket, Key="missing")
    assert code(err) == "NoSuchKey"


def test_create_bucket_takes_grant_headers(cloud: Cloud, account: Keys) -> None:
    """(A public grant at creation is refused: test_s3_ownership_public_access.)"""
    s3 = cloud.client("s3", account)
    bucket = f"pol-{secrets.token_hex(4)}"
    other = cloud.new_account()
    s3.create_bucket(Bucket=bucket, ObjectOwnership="ObjectWriter", GrantRead=f'id="{other.account_id}"')
    assert cloud.client("s3", other).list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    grantee = {"Type": "CanonicalUser", "ID": other.account_id, "DisplayName": other.account_id}
    assert {"Grantee": grantee, "Permission": "READ"} in s3.get_bucket_acl(Bucket=bucket)["Grants"]
    with pytest.raises(ClientError) as err:
        s3.create_bucket(
            Bucket=f"pol-{secrets.token_hex(4)}",
            ObjectOwnership="ObjectWriter",
            ACL="private",
            GrantRead=f'uri="{ALL_USERS}"',
        )
    assert code(err) == "InvalidRequest"


def test_copy_object_takes_grant_headers_like_put_object(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account, acls=True, public=True)
    s3.put_object(Bucket=bucket, Key="src.txt", Body=b"c")
    s3.copy_object(
        Bucket=bucket,
        Key="granted.txt",
        CopySource={"Bucket": bucket, "Key": "src.txt"},
        GrantRead=f'uri="{ALL_USERS}"',
    )
    assert anonymous_get(cloud, f"/{bucket}/granted.txt") == (200, b"c")
    s3.copy_object(Bucket=bucket, Key="plain.txt", CopySource={"Bucket": bucket, "Key": "src.txt"})
    assert anonymous_get(cloud, f"/{bucket}/plain.txt")[0] == 403  # a copy does not keep the source's ACL
    with pytest.raises(ClientError) as err:
        s3.copy_object(
            Bucket=bucket,
            Key="both.txt",
            CopySource={"Bucket": bucket, "Key": "src.txt"},
            ACL="public-read",
            GrantRead=f'uri="{ALL_USERS}"',
        )
    assert code(err) == "InvalidRequest"


def test_public_read_bucket_acl_lets_anonymous_list_but_not_read_objects(cloud: Cloud, account: Keys) -> None:
    """As on S3: a bucket's READ grant is for listing; reading an object takes the object's ACL."""
    s3, bucket = new_bucket(cloud, account, acls=True, public=True)
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"a")
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    status, body = anonymous_get(cloud, f"/{bucket}?list-type=2")
    assert status == 200 and b"<Key>a.txt</Key>" in body
    assert anonymous_get(cloud, f"/{bucket}/a.txt")[0] == 403
    s3.put_object_acl(Bucket=bucket, Key="a.txt", ACL="public-read")
    assert anonymous_get(cloud, f"/{bucket}/a.txt") == (200, b"a")


def test_deleting_a_version_needs_delete_object_version(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    version = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["VersionId"]
    user = cloud.client("s3", user_keys(cloud, account, f"del-{secrets.token_hex(3)}", ["s3:DeleteObject"]))
    with pytest.raises(ClientError) as err:
        user.delete_object(Bucket=bucket, Key="k", VersionId=version)
    assert code(err) == "AccessDenied"
    answer = user.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k", "VersionId": version}]})
    assert [e["Code"] for e in answer["Errors"]] == ["AccessDenied"]
    assert user.delete_object(Bucket=bucket, Key="k")["DeleteMarker"] is True  # no version: s3:DeleteObject
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=version)["Body"].read() == b"v1"


def test_bucket_owner_full_control_names_the_bucket_owner(cloud: Cloud, account: Keys) -> None:
    s3, bucket = new_bucket(cloud, account, acls=True)
    writer = cloud.new_account()
    s3.put_bucket_acl(Bucket=bucket, GrantWrite=f'id="{writer.account_id}"')
    writer_s3 = cloud.client("s3", writer)
    writer_s3.put_object(Bucket=bucket, Key="upload", Body=b"u", ACL="bucket-owner-full-control")
    acl = writer_s3.get_object_acl(Bucket=bucket, Key="upload")
    assert acl["Owner"]["ID"] == writer.account_id
    assert [(g["Grantee"]["ID"], g["Permission"]) for g in acl["Grants"]] == [
        (writer.account_id, "FULL_CONTROL"),
        (account.account_id, "FULL_CONTROL"),
    ]


def test_anonymous_put_to_a_public_write_bucket_is_owned_by_the_bucket_owner(
    cloud: Cloud, account: Keys
) -> None:
    """Regression: an anonymous PUT that an ACL allows used to trip an assertion (500)."""
    s3, bucket = new_bucket(cloud, account, "open", acls=True, public=True)
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    put = urllib.request.Request(
        f"{cloud.endpoint}/{bucket}/drop.txt",
        data=b"anonymous",
        method="PUT",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(put, timeout=10) as response:
        assert response.status == 200
    assert s3.get_object(Bucket=bucket, Key="drop.txt")["Body"].read() == b"anonymous"
