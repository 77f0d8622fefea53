"""What Walrus calls public (`public.policy_is_public`, AWS's "The meaning of 'public'"), a bucket's
Block Public Access settings, and how the authorizer applies them with Object Ownership:
BucketOwnerEnforced and IgnorePublicAcls take grants away, RestrictPublicBuckets keeps a public
policy to the owner's account."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, cast

import pytest

from mallee.core.context import Headers, HttpRequest, Principal, RequestContext
from mallee.core.errors import CloudError
from mallee.protocol.dispatch import Operation
from mallee.services.walrus.access import S3Access
from mallee.services.walrus.acl import ENFORCED, WRITER
from mallee.services.walrus.identity import RemoteIdentity
from mallee.services.walrus.public import ALL_BLOCKED, ALL_USERS, NO_BLOCKS, Blocks, blocks, policy_is_public
from mallee.services.walrus.tables import Bucket

OWNER, OTHER = "111122223333", "444455556666"
ARN = "arn:aws:s3:::b/*"


def statement(principal: Any = "*", condition: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    found = {"Effect": "Allow", "Principal": principal, "Action": "s3:GetObject", "Resource": ARN, **extra}
    if condition is not None:
        found["Condition"] = condition
    return found


def document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@pytest.mark.parametrize(
    ("policy", "public"),
    [
        (document(statement("*")), True),
        (document(statement({"AWS": "*"})), True),
        (document(statement({"AWS": OTHER})), False),
        (document(statement({"AWS": f"arn:aws:iam::{OTHER}:user/alice"})), False),
        (document(statement({"AWS": "arn:aws:iam::*:root"})), True),  # a wildcard is no fixed value
        (document(statement({"Service": "cloudtrail.amazonaws.com"})), False),
        (document(statement({"Federated": "graph.facebook.com"})), True),  # AWS's own example
        (document(statement("*", {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}})), False),
        (document(statement("*", {"IpAddress": {"aws:SourceIp": ["10.0.0.1", "192.0.2.0/24"]}})), False),
        (document(statement("*", {"IpAddress": {"aws:SourceIp": "0.0.0.0/1"}})), True),  # wider than /8
        (document(statement("*", {"IpAddress": {"aws:SourceIp": "2001:db8::/32"}})), False),
        (document(statement("*", {"IpAddress": {"aws:SourceIp": "2001::/16"}})), True),
        (document(statement("*", {"NotIpAddress": {"aws:SourceIp": "192.0.2.0/24"}})), True),
        (document(statement("*", {"StringEquals": {"aws:SourceVpc": "vpc-91237329"}})), False),
        (document(statement("*", {"StringLike": {"aws:SourceVpc": "vpc-*"}})), True),  # AWS's example
        (document(statement("*", {"StringNotEquals": {"aws:SourceVpc": "vpc-1"}})), True),
        (document(statement("*", {"StringEqualsIfExists": {"aws:SourceVpc": "vpc-1"}})), True),
        (document(statement("*", {"StringEquals": {"aws:PrincipalAccount": OTHER}})), False),
        (document(statement("*", {"StringEquals": {"aws:SourceAccount": "${aws:username}"}})), True),
        (document(statement("*", {"StringLike": {"s3:prefix": "home/"}})), True),  # not a narrowing key
        (document(statement("*", Effect="Deny")), False),
        (document(statement({"AWS": OTHER}), statement("*")), True),  # one public statement is enough
    ],
)
def test_policy_is_public(policy: str, public: bool) -> None:
    assert policy_is_public(policy) is public


def test_not_principal_allow_is_public() -> None:
    raw = statement()
    del raw["Principal"]
    raw["NotPrincipal"] = {"AWS": OTHER}
    assert policy_is_public(document(raw)) is True


def bucket(
    ownership: str = WRITER, block: str | None = None, acl: str = "[]", policy: str | None = None
) -> Bucket:
    return Bucket(
        name="b",
        owner_account_id=OWNER,
        created=dt.datetime.now(dt.UTC),
        acl=acl,
        policy=policy,
        ownership=ownership,
        public_access_block=block,
    )


def test_blocks_of_a_bucket() -> None:
    assert blocks(bucket()) == NO_BLOCKS
    assert blocks(bucket(block=ALL_BLOCKED)) == Blocks(True, True, True, True)
    only = json.dumps({"BlockPublicAcls": False, "IgnorePublicAcls": True})
    assert blocks(bucket(block=only)) == Blocks(ignore_public_acls=True)


# --- the authorizer ---


def root(account: str) -> Principal:
    return Principal(account_id=account, account_name=account, access_key_id="AKID", user_id=account)


def allowed(found: Bucket, principal: Principal | None, operation: str, **params: Any) -> bool:
    """Root principals and anonymous callers only: neither needs the CLC's IAM answers."""
    access = S3Access(cast(RemoteIdentity, None), lambda name: found if name == "b" else None)
    request = HttpRequest("GET", "/b", "", Headers(), remote_addr="192.0.2.1")
    ctx = RequestContext(request, "req", "r", principal=principal, params={"Bucket": "b", **params})
    try:
        access.authorize(ctx, Operation(operation, lambda c, p: None))
    except CloudError as err:
        assert err.code == "AccessDenied"
        return False
    return True


PUBLIC_READ = json.dumps([{"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"}])
OTHER_READ = json.dumps([{"Grantee": {"Type": "CanonicalUser", "ID": OTHER}, "Permission": "READ"}])


def test_bucket_acls_grant_under_acls_on() -> None:
    assert allowed(bucket(acl=PUBLIC_READ), None, "ListObjectsV2")
    assert allowed(bucket(acl=OTHER_READ), root(OTHER), "ListObjectsV2")


def test_bucket_owner_enforced_acls_grant_nothing() -> None:
    assert not allowed(bucket(ENFORCED, acl=PUBLIC_READ), None, "ListObjectsV2")
    assert not allowed(bucket(ENFORCED, acl=OTHER_READ), root(OTHER), "ListObjectsV2")
    assert allowed(bucket(ENFORCED, acl=OTHER_READ), root(OWNER), "ListObjectsV2")


def test_ignore_public_acls_ignores_only_public_grants() -> None:
    ignore = json.dumps({"IgnorePublicAcls": True})
    assert not allowed(bucket(block=ignore, acl=PUBLIC_READ), None, "ListObjectsV2")
    assert not allowed(bucket(block=ignore, acl=PUBLIC_READ), root(OTHER), "ListObjectsV2")
    assert allowed(bucket(block=ignore, acl=OTHER_READ), root(OTHER), "ListObjectsV2")


def test_restrict_public_buckets_keeps_a_public_policy_to_the_owners_account() -> None:
    listing = {"Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b"}
    public = document(statement("*", **listing), statement({"AWS": OTHER}, **listing))
    private = document(statement({"AWS": OTHER}, **listing))
    restrict = json.dumps({"RestrictPublicBuckets": True})
    assert allowed(bucket(policy=public), None, "ListObjectsV2")
    assert allowed(bucket(policy=public), root(OTHER), "ListObjectsV2")
    assert not allowed(bucket(block=restrict, policy=public), None, "ListObjectsV2")
    # Even the statement naming OTHER stops working while the policy is public (AWS's example).
    assert not allowed(bucket(block=restrict, policy=public), root(OTHER), "ListObjectsV2")
    assert allowed(bucket(block=restrict, policy=public), root(OWNER), "ListObjectsV2")
    assert allowed(bucket(block=restrict, policy=private), root(OTHER), "ListObjectsV2")
