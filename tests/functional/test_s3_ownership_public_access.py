"""S3 Object Ownership and Block Public Access through boto3 and the aws CLI, across accounts and
anonymously: a new bucket has ACLs off (BucketOwnerEnforced) and every public access block on, as
on S3 since April 2023; the controls' Put/Get/Delete calls; what each setting refuses (400
AccessControlListNotSupported, InvalidBucketAclWithObjectOwnership, 403 AccessDenied) and what it
takes away from ACLs and public policies when the authorizer decides."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from functional.test_s3_policy_acl import ALL_USERS, anonymous_get, owner_grant, policy, user_keys
from support.answers import body, code, status
from support.cloud import Cloud, Keys, aws

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL

UNCHECKED = BotoConfig(parameter_validation=False, retries={"max_attempts": 1})
ALL_ON = dict.fromkeys(
    ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
)


def new_bucket(s3: Any, **params: Any) -> str:
    name = f"own-{secrets.token_hex(5)}"
    s3.create_bucket(Bucket=name, **params)
    return name


def refused(call: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as err:
        call()
    return code(err), status(err)


def aws_refused(cloud: Cloud, keys: Keys, *args: str) -> str:
    """`aws ARGS` as `keys`, which must fail: its error output."""
    env = {"AWS_ACCESS_KEY_ID": keys.access_key_id, "AWS_SECRET_ACCESS_KEY": keys.secret_access_key}
    result = cloud.run("aws", "--endpoint-url", cloud.endpoint, "--region", cloud.region, *args, env=env)
    assert result.returncode != 0, result.stdout
    return result.stderr


def ownership(s3: Any, bucket: str) -> str:
    return str(
        s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"][0]["ObjectOwnership"]
    )


def rules(value: str) -> dict[str, Any]:
    return {"Rules": [{"ObjectOwnership": value}]}


def public_read_policy(bucket: str) -> str:
    return policy(
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*",
        }
    )


# --- the controls themselves ---


def test_a_new_bucket_has_acls_off_and_every_public_access_block_on(
    cloud: Cloud, account: Keys, s3: Any
) -> None:
    bucket = new_bucket(s3)
    assert ownership(s3, bucket) == "BucketOwnerEnforced"
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == ALL_ON
    answer = aws(cloud, "s3api", "get-bucket-ownership-controls", "--bucket", bucket, keys=account)
    assert answer == {"OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}}
    made = new_bucket(s3, ObjectOwnership="BucketOwnerPreferred")
    assert ownership(s3, made) == "BucketOwnerPreferred"
    assert s3.get_public_access_block(Bucket=made)["PublicAccessBlockConfiguration"] == ALL_ON
    cli = f"own-{secrets.token_hex(5)}"
    aws(cloud, "s3api", "create-bucket", "--bucket", cli, "--object-ownership", "ObjectWriter", keys=account)
    assert ownership(s3, cli) == "ObjectWriter"
    unchecked = cloud.client("s3", account, config=UNCHECKED)
    with pytest.raises(ClientError) as err:
        unchecked.create_bucket(Bucket=f"own-{secrets.token_hex(5)}", ObjectOwnership="Nobody")
    assert (code(err), status(err)) == ("InvalidArgument", 400)
    assert "x-amz-object-ownership" in err.value.response["Error"]["Message"]


def test_ownership_controls_put_get_delete(cloud: Cloud, account: Keys, s3: Any) -> None:
    bucket = new_bucket(s3)
    aws(cloud, "s3api", "put-bucket-ownership-controls", "--bucket", bucket,
        "--ownership-controls", "Rules=[{ObjectOwnership=ObjectWriter}]", keys=account)  # fmt: skip
    assert ownership(s3, bucket) == "ObjectWriter"
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=rules("BucketOwnerPreferred"))
    assert ownership(s3, bucket) == "BucketOwnerPreferred"
    assert status(s3.delete_bucket_ownership_controls(Bucket=bucket)) == 204
    with pytest.raises(ClientError) as err:
        s3.get_bucket_ownership_controls(Bucket=bucket)
    assert (code(err), status(err)) == ("OwnershipControlsNotFoundError", 404)
    assert err.value.response["Error"]["BucketName"] == bucket
    assert "OwnershipControlsNotFoundError" in aws_refused(
        cloud, account, "s3api", "get-bucket-ownership-controls", "--bucket", bucket
    )
    assert status(s3.delete_bucket_ownership_controls(Bucket=bucket)) == 204  # again: still 204
    # Without controls the bucket acts as ObjectWriter: ACLs are on.
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    unchecked = cloud.client("s3", account, config=UNCHECKED)
    put = unchecked.put_bucket_ownership_controls
    for bad in ({"Rules": []}, {"Rules": [{"ObjectOwnership": "ObjectWriter"}] * 2}, rules("Nobody")):
        assert refused(lambda b=bad: put(Bucket=bucket, OwnershipControls=b)) == ("MalformedXML", 400)
    with pytest.raises(ClientError) as err:  # another account's bucket
        cloud.client("s3", cloud.new_account()).get_bucket_ownership_controls(Bucket=bucket)
    assert code(err) == "AccessDenied"


def test_public_access_block_put_get_delete_with_the_cli(cloud: Cloud, account: Keys, s3: Any) -> None:
    bucket = new_bucket(s3)
    some = "BlockPublicAcls=true,IgnorePublicAcls=true"
    aws(cloud, "s3api", "put-public-access-block", "--bucket", bucket,
        "--public-access-block-configuration", some, keys=account)  # fmt: skip
    answer = aws(cloud, "s3api", "get-public-access-block", "--bucket", bucket, keys=account)
    assert answer["PublicAccessBlockConfiguration"] == {  # what a Put leaves out is false
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": False,
        "RestrictPublicBuckets": False,
    }
    aws(cloud, "s3api", "delete-public-access-block", "--bucket", bucket, keys=account)
    with pytest.raises(ClientError) as err:
        s3.get_public_access_block(Bucket=bucket)
    assert (code(err), status(err)) == ("NoSuchPublicAccessBlockConfiguration", 404)
    assert err.value.response["Error"]["BucketName"] == bucket
    assert status(s3.delete_public_access_block(Bucket=bucket)) == 204  # again: still 204
    with pytest.raises(ClientError) as err:
        cloud.client("s3", cloud.new_account()).put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration={"BlockPublicAcls": False}
        )
    assert code(err) == "AccessDenied"


# --- BucketOwnerEnforced ---


def test_acls_off_refuse_acl_calls_and_answer_the_owners_full_control(
    cloud: Cloud, account: Keys, s3: Any
) -> None:
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    for call in (
        lambda: s3.put_bucket_acl(Bucket=bucket, ACL="private"),
        lambda: s3.put_bucket_acl(Bucket=bucket, GrantRead=f'id="{account.account_id}"'),
        lambda: s3.put_object_acl(Bucket=bucket, Key="k", ACL="bucket-owner-full-control"),
    ):
        assert refused(call) == ("AccessControlListNotSupported", 400)
    assert "The bucket does not allow ACLs" in aws_refused(
        cloud, account, "s3api", "put-bucket-acl", "--bucket", bucket, "--acl", "public-read"
    )
    me = {"ID": account.account_id, "DisplayName": account.account_id}
    for answer in (s3.get_bucket_acl(Bucket=bucket), s3.get_object_acl(Bucket=bucket, Key="k")):
        assert answer["Owner"] == me and answer["Grants"] == [owner_grant(account.account_id)]
    other = cloud.new_account()
    for params in ({"GrantRead": f'id="{other.account_id}"'}, {"ACL": "public-read"}):
        with pytest.raises(ClientError) as err:  # CreateBucket: ACLs granting others need them on
            s3.create_bucket(Bucket=f"own-{secrets.token_hex(5)}", **params)
        assert (code(err), status(err)) == ("InvalidBucketAclWithObjectOwnership", 400)
    new_bucket(s3, ACL="private")  # an owner-only ACL is fine


def test_disabling_acls_needs_a_private_bucket_acl_and_suspends_every_grant(
    cloud: Cloud, account: Keys, s3: Any
) -> None:
    """As S3 documents it: the bucket ACL must grant no one else first; while ACLs are off, bucket
    and object ACLs grant nothing; turned back on, they grant again."""
    other = cloud.new_account()
    theirs = cloud.client("s3", other)
    bucket = new_bucket(s3, ObjectOwnership="ObjectWriter")
    s3.put_object(Bucket=bucket, Key="k", Body=b"shared", GrantRead=f'id="{other.account_id}"')
    s3.put_bucket_acl(Bucket=bucket, GrantRead=f'id="{other.account_id}"')
    assert body(theirs, bucket, "k") == b"shared"
    assert theirs.list_objects_v2(Bucket=bucket)["KeyCount"] == 1
    enforced = rules("BucketOwnerEnforced")
    with pytest.raises(ClientError) as err:
        s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=enforced)
    assert (code(err), status(err)) == ("InvalidBucketAclWithObjectOwnership", 400)
    assert ownership(s3, bucket) == "ObjectWriter"
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=enforced)
    for call in (
        lambda: theirs.get_object(Bucket=bucket, Key="k"),
        lambda: theirs.list_objects_v2(Bucket=bucket),
    ):
        assert refused(call) == ("AccessDenied", 403)
    assert s3.get_object_acl(Bucket=bucket, Key="k")["Grants"] == [owner_grant(account.account_id)]
    # A bucket policy is how to share now.
    s3.put_bucket_policy(
        Bucket=bucket,
        Policy=policy(
            {
                "Effect": "Allow",
                "Principal": {"AWS": other.account_id},
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ),
    )
    assert body(theirs, bucket, "k") == b"shared"
    s3.delete_bucket_policy(Bucket=bucket)
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=rules("ObjectWriter"))
    assert body(theirs, bucket, "k") == b"shared"  # the object's ACL is back
    assert [g["Grantee"]["ID"] for g in s3.get_object_acl(Bucket=bucket, Key="k")["Grants"]] == [
        account.account_id,
        other.account_id,
    ]


def _share_writes(s3: Any, bucket: str, writer: Keys) -> None:
    s3.put_bucket_policy(
        Bucket=bucket,
        Policy=policy(
            {
                "Effect": "Allow",
                "Principal": {"AWS": writer.account_id},
                "Action": ["s3:PutObject", "s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ),
    )


def _owners(s3: Any, bucket: str) -> dict[str, str]:
    listed = s3.list_objects_v2(Bucket=bucket, FetchOwner=True).get("Contents", [])
    return {o["Key"]: o["Owner"]["ID"] for o in listed}


def test_acls_off_writes_take_no_acl_but_bucket_owner_full_control_and_belong_to_the_bucket_owner(
    cloud: Cloud, account: Keys, s3: Any
) -> None:
    writer = cloud.new_account()
    theirs = cloud.client("s3", writer)
    bucket = new_bucket(s3)
    _share_writes(s3, bucket, writer)
    theirs.put_object(Bucket=bucket, Key="plain", Body=b"p")
    theirs.put_object(Bucket=bucket, Key="bofc", Body=b"b", ACL="bucket-owner-full-control")
    theirs.copy_object(Bucket=bucket, Key="copied", CopySource=f"{bucket}/plain")
    upload = theirs.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    assert s3.list_multipart_uploads(Bucket=bucket)["Uploads"][0]["Owner"]["ID"] == account.account_id
    s3.abort_multipart_upload(Bucket=bucket, Key="parts", UploadId=upload)
    assert set(_owners(s3, bucket).values()) == {account.account_id}
    for call in (
        lambda: theirs.put_object(Bucket=bucket, Key="x", Body=b"x", ACL="private"),
        lambda: theirs.put_object(Bucket=bucket, Key="x", Body=b"x", GrantRead=f'id="{writer.account_id}"'),
        lambda: theirs.copy_object(Bucket=bucket, Key="x", CopySource=f"{bucket}/plain", ACL="public-read"),
        lambda: theirs.create_multipart_upload(Bucket=bucket, Key="x", ACL="authenticated-read"),
    ):
        assert refused(call) == ("AccessControlListNotSupported", 400)


# --- BucketOwnerPreferred and ObjectWriter across accounts ---


def test_bucket_owner_preferred_takes_over_what_is_written_with_bucket_owner_full_control(
    cloud: Cloud, account: Keys, s3: Any
) -> None:
    writer = cloud.new_account()
    theirs = cloud.client("s3", writer)
    bucket = new_bucket(s3, ObjectOwnership="BucketOwnerPreferred")
    _share_writes(s3, bucket, writer)
    theirs.put_object(Bucket=bucket, Key="given", Body=b"g", ACL="bucket-owner-full-control")
    theirs.put_object(Bucket=bucket, Key="kept", Body=b"k")
    assert _owners(s3, bucket) == {"given": account.account_id, "kept": writer.account_id}
    assert s3.get_object_acl(Bucket=bucket, Key="given")["Grants"] == [owner_grant(account.account_id)]


def test_object_writer_owns_what_it_writes_even_with_bucket_owner_full_control(
    cloud: Cloud, account: Keys, s3: Any
) -> None:
    writer = cloud.new_account()
    theirs = cloud.client("s3", writer)
    bucket = new_bucket(s3, ObjectOwnership="ObjectWriter")
    _share_writes(s3, bucket, writer)
    theirs.put_object(Bucket=bucket, Key="k", Body=b"k", ACL="bucket-owner-full-control")
    assert _owners(s3, bucket) == {"k": writer.account_id}
    grants = theirs.get_object_acl(Bucket=bucket, Key="k")["Grants"]
    assert [(g["Grantee"]["ID"], g["Permission"]) for g in grants] == [
        (writer.account_id, "FULL_CONTROL"),
        (account.account_id, "FULL_CONTROL"),
    ]


# --- Block Public Access ---


def test_block_public_policy_and_policy_status(cloud: Cloud, account: Keys, s3: Any) -> None:
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="index.html", Body=b"<html/>")
    public = public_read_policy(bucket)
    assert refused(lambda: s3.put_bucket_policy(Bucket=bucket, Policy=public)) == ("AccessDenied", 403)
    assert "AccessDenied" in aws_refused(
        cloud, account, "s3api", "put-bucket-policy", "--bucket", bucket, "--policy", public
    )
    narrowed = json.loads(public)
    narrowed["Statement"][0]["Condition"] = {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(narrowed))  # not public: allowed
    answer = aws(cloud, "s3api", "get-bucket-policy-status", "--bucket", bucket, keys=account)
    assert answer == {"PolicyStatus": {"IsPublic": False}}
    assert anonymous_get(cloud, f"/{bucket}/index.html") == (200, b"<html/>")  # from loopback
    s3.delete_public_access_block(Bucket=bucket)
    s3.put_bucket_policy(Bucket=bucket, Policy=public)
    assert s3.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is True
    # Turning the block back on leaves the stored policy alone (S3: it only refuses new ones).
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={"BlockPublicPolicy": True})
    assert anonymous_get(cloud, f"/{bucket}/index.html") == (200, b"<html/>")


def test_restrict_public_buckets_keeps_a_public_policy_to_the_owners_account(
    cloud: Cloud, account: Keys, s3: Any
) -> None:
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    other = cloud.new_account()
    theirs = cloud.client("s3", other)
    mine = cloud.client("s3", user_keys(cloud, account, f"u{secrets.token_hex(3)}"))  # no IAM policy
    everyone = json.loads(public_read_policy(bucket))["Statement"][0]
    named = {**everyone, "Principal": {"AWS": other.account_id}}
    own_users = {**named, "Principal": {"AWS": account.account_id}}
    s3.delete_public_access_block(Bucket=bucket)
    s3.put_bucket_policy(Bucket=bucket, Policy=policy(named, everyone, own_users))
    assert anonymous_get(cloud, f"/{bucket}/k") == (200, b"v")
    assert body(theirs, bucket, "k") == body(mine, bucket, "k") == b"v"
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={"RestrictPublicBuckets": True})
    assert anonymous_get(cloud, f"/{bucket}/k")[0] == 403
    # The public statement makes the whole policy public: the named account is cut off too.
    assert refused(lambda: theirs.get_object(Bucket=bucket, Key="k")) == ("AccessDenied", 403)
    assert body(mine, bucket, "k") == b"v"  # the owner's own users still are allowed by it
    s3.put_bucket_policy(Bucket=bucket, Policy=policy(named))  # no longer public
    assert body(theirs, bucket, "k") == b"v"
    assert anonymous_get(cloud, f"/{bucket}/k")[0] == 403


def test_block_public_acls_and_ignore_public_acls(cloud: Cloud, account: Keys, s3: Any) -> None:
    bucket = new_bucket(s3, ObjectOwnership="ObjectWriter")
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    for call in (
        lambda: s3.put_bucket_acl(Bucket=bucket, ACL="public-read"),
        lambda: s3.put_bucket_acl(Bucket=bucket, GrantRead=f'uri="{ALL_USERS}"'),
        lambda: s3.put_object_acl(Bucket=bucket, Key="k", ACL="authenticated-read"),
    ):
        assert refused(call) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as err:  # a new bucket is blocked from the start
        s3.create_bucket(
            Bucket=f"own-{secrets.token_hex(5)}", ObjectOwnership="ObjectWriter", ACL="public-read"
        )
    assert (code(err), status(err)) == ("AccessDenied", 403)
    # IgnorePublicAcls alone: public ACLs may be set, and count for nothing.
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={"IgnorePublicAcls": True})
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    s3.put_object_acl(Bucket=bucket, Key="k", ACL="public-read")
    assert anonymous_get(cloud, f"/{bucket}?list-type=2")[0] == 403
    assert anonymous_get(cloud, f"/{bucket}/k")[0] == 403
    assert s3.get_bucket_acl(Bucket=bucket)["Grants"] == [owner_grant(account.account_id)]  # as enforced
    s3.delete_public_access_block(Bucket=bucket)
    assert anonymous_get(cloud, f"/{bucket}?list-type=2")[0] == 200
    assert anonymous_get(cloud, f"/{bucket}/k") == (200, b"v")
    grants = s3.get_bucket_acl(Bucket=bucket)["Grants"]
    assert {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"} in grants


def test_block_public_acls_refuses_public_object_writes(cloud: Cloud, account: Keys, s3: Any) -> None:
    bucket = new_bucket(s3, ObjectOwnership="ObjectWriter")
    s3.put_object(Bucket=bucket, Key="src", Body=b"v")
    for call in (
        lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"v", ACL="public-read"),
        lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"v", GrantRead=f'uri="{ALL_USERS}"'),
        lambda: s3.copy_object(Bucket=bucket, Key="k", CopySource=f"{bucket}/src", ACL="public-read"),
        lambda: s3.create_multipart_upload(Bucket=bucket, Key="k", ACL="public-read-write"),
    ):
        assert refused(call) == ("AccessDenied", 403)
    assert _owners(s3, bucket) == {"src": account.account_id}
