"""`acl`'s rules for a bucket's Object Ownership and BlockPublicAcls, on their own: who owns a new
object and what ACL it keeps (`object_owner_and_acl`, which PutObject, POST uploads, CopyObject and
CreateMultipartUpload use), what CreateBucket and Put*Acl may set, and when ACLs may be disabled."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from mallee.core.errors import CloudError
from mallee.services.walrus.acl import (
    ENFORCED,
    NO_CONTROLS,
    PREFERRED,
    WRITER,
    acls_enabled,
    check_acls_can_be_disabled,
    new_bucket_acl,
    object_owner_and_acl,
    replacement_acl,
)
from mallee.services.walrus.public import ALL_BLOCKED, ALL_USERS, AUTHENTICATED_USERS
from mallee.services.walrus.tables import Bucket

OWNER, WRITER_ACCOUNT = "111122223333", "444455556666"
BOFC = {"ACL": "bucket-owner-full-control"}


def bucket(ownership: str, blocked: bool = False, acl: str = "[]") -> Bucket:
    return Bucket(
        name="b",
        owner_account_id=OWNER,
        created=dt.datetime.now(dt.UTC),
        acl=acl,
        ownership=ownership,
        public_access_block=ALL_BLOCKED if blocked else None,
    )


def grants(stored: str) -> list[tuple[str, str]]:
    return [(g["Grantee"].get("ID") or g["Grantee"]["URI"], g["Permission"]) for g in json.loads(stored)]


def refused(call: Any) -> tuple[str, int]:
    with pytest.raises(CloudError) as err:
        call()
    return err.value.code, err.value.status


# --- BucketOwnerEnforced: ACLs off, the bucket owner owns everything ---


@pytest.mark.parametrize(
    "params",
    [
        {},
        BOFC,
        {"GrantFullControl": f'id="{OWNER}"'},  # the canned ACL's header form
    ],
)
def test_enforced_takes_no_acl_or_bucket_owner_full_control_and_gives_the_bucket_owner_the_object(
    params: dict[str, Any],
) -> None:
    for writer in (WRITER_ACCOUNT, OWNER):
        assert object_owner_and_acl(params, writer, bucket(ENFORCED)) == (OWNER, "[]")


@pytest.mark.parametrize(
    "params",
    [
        {"ACL": "private"},  # explicit, as S3 refuses it too
        {"ACL": "public-read"},
        {"ACL": "aws-exec-read"},
        {"GrantRead": f'id="{WRITER_ACCOUNT}"'},
        {"GrantFullControl": f'id="{WRITER_ACCOUNT}"'},  # full control, but not the bucket owner's
        {"GrantFullControl": f'id="{OWNER}"', "GrantRead": f'uri="{ALL_USERS}"'},
    ],
)
def test_enforced_refuses_any_other_acl(params: dict[str, Any]) -> None:
    found = refused(lambda: object_owner_and_acl(params, WRITER_ACCOUNT, bucket(ENFORCED, blocked=True)))
    assert found == ("AccessControlListNotSupported", 400)


def test_enforced_still_checks_the_acl_input() -> None:
    both = {"ACL": "bucket-owner-full-control", "GrantRead": f'id="{OWNER}"'}
    assert refused(lambda: object_owner_and_acl(both, OWNER, bucket(ENFORCED)))[0] == "InvalidRequest"


# --- BucketOwnerPreferred: bucket-owner-full-control hands the object to the bucket owner ---


def test_preferred_gives_the_bucket_owner_what_is_written_with_bucket_owner_full_control() -> None:
    assert object_owner_and_acl(BOFC, WRITER_ACCOUNT, bucket(PREFERRED)) == (OWNER, "[]")


@pytest.mark.parametrize("params", [{}, {"ACL": "private"}, {"GrantRead": f'id="{OWNER}"'}])
def test_preferred_leaves_other_writes_to_their_writer(params: dict[str, Any]) -> None:
    owner, stored = object_owner_and_acl(params, WRITER_ACCOUNT, bucket(PREFERRED))
    assert owner == WRITER_ACCOUNT
    assert grants(stored) == ([(OWNER, "READ")] if "GrantRead" in params else [])


# --- ObjectWriter, and a bucket without ownership controls: as before ---


@pytest.mark.parametrize("ownership", [WRITER, NO_CONTROLS])
def test_object_writer_owns_its_object_and_bucket_owner_full_control_names_the_bucket_owner(
    ownership: str,
) -> None:
    owner, stored = object_owner_and_acl(BOFC, WRITER_ACCOUNT, bucket(ownership))
    assert (owner, grants(stored)) == (WRITER_ACCOUNT, [(OWNER, "FULL_CONTROL")])
    assert object_owner_and_acl(BOFC, OWNER, bucket(ownership)) == (OWNER, "[]")
    assert acls_enabled(bucket(ownership))


def test_object_writer_checks_the_canned_acl_name() -> None:
    found = refused(lambda: object_owner_and_acl({"ACL": "no-such-acl"}, OWNER, bucket(WRITER)))
    assert found == ("InvalidArgument", 400)


# --- BlockPublicAcls ---


@pytest.mark.parametrize(
    "params",
    [
        {"ACL": "public-read"},
        {"ACL": "public-read-write"},
        {"ACL": "authenticated-read"},
        {"GrantRead": f'uri="{ALL_USERS}"'},
        {"GrantWriteACP": f'uri="{AUTHENTICATED_USERS}"'},
    ],
)
def test_block_public_acls_refuses_public_object_acls(params: dict[str, Any]) -> None:
    for ownership in (WRITER, PREFERRED):
        blocked = bucket(ownership, blocked=True)
        found = refused(lambda b=blocked: object_owner_and_acl(params, WRITER_ACCOUNT, b))
        assert found == ("AccessDenied", 403)
        _, stored = object_owner_and_acl(params, WRITER_ACCOUNT, bucket(ownership))  # no block
        assert stored != "[]"


def test_block_public_acls_lets_private_grants_through() -> None:
    params = {"GrantRead": f'id="{OWNER}"'}
    assert grants(object_owner_and_acl(params, WRITER_ACCOUNT, bucket(WRITER, True))[1]) == [(OWNER, "READ")]


# --- CreateBucket ---


@pytest.mark.parametrize("params", [{}, {"ACL": "private"}, BOFC, {"GrantFullControl": f'id="{OWNER}"'}])
def test_a_new_enforced_bucket_takes_owner_only_acls(params: dict[str, Any]) -> None:
    assert new_bucket_acl(params, OWNER, ENFORCED, block_public_acls=True) == "[]"


@pytest.mark.parametrize(
    "params", [{"GrantRead": f'id="{WRITER_ACCOUNT}"'}, {"ACL": "public-read"}, {"ACL": "authenticated-read"}]
)
def test_a_new_enforced_bucket_refuses_acls_granting_others(params: dict[str, Any]) -> None:
    found = refused(lambda: new_bucket_acl(params, OWNER, ENFORCED, block_public_acls=True))
    assert found == ("InvalidBucketAclWithObjectOwnership", 400)


def test_a_new_bucket_with_acls_on_takes_private_grants_but_no_public_ones() -> None:
    stored = new_bucket_acl({"GrantRead": f'id="{WRITER_ACCOUNT}"'}, OWNER, WRITER, block_public_acls=True)
    assert grants(stored) == [(WRITER_ACCOUNT, "READ")]
    found = refused(lambda: new_bucket_acl({"ACL": "public-read"}, OWNER, WRITER, block_public_acls=True))
    assert found == ("AccessDenied", 403)
    assert grants(new_bucket_acl({"ACL": "public-read"}, OWNER, WRITER, block_public_acls=False)) == [
        (ALL_USERS, "READ")
    ]


# --- PutBucketAcl / PutObjectAcl ---


@pytest.mark.parametrize("params", [{"ACL": "private"}, BOFC, {}])
def test_put_acl_is_refused_under_enforced_whatever_it_asks(params: dict[str, Any]) -> None:
    found = refused(lambda: replacement_acl(params, OWNER, bucket(ENFORCED)))
    assert found == ("AccessControlListNotSupported", 400)


def test_put_acl_under_acls_on() -> None:
    assert refused(lambda: replacement_acl({}, OWNER, bucket(WRITER)))[0] == "MissingSecurityHeader"
    public = {"ACL": "public-read"}
    assert refused(lambda: replacement_acl(public, OWNER, bucket(WRITER, True))) == ("AccessDenied", 403)
    assert grants(replacement_acl(public, OWNER, bucket(WRITER))) == [(ALL_USERS, "READ")]
    # An object another account owns: bucket-owner-full-control names the bucket owner.
    assert grants(replacement_acl(BOFC, WRITER_ACCOUNT, bucket(PREFERRED, True))) == [(OWNER, "FULL_CONTROL")]


# --- PutBucketOwnershipControls BucketOwnerEnforced ---


def test_acls_can_be_disabled_only_when_the_bucket_acl_grants_no_one_else() -> None:
    check_acls_can_be_disabled(bucket(WRITER))
    check_acls_can_be_disabled(
        bucket(WRITER, acl=json.dumps([{"Grantee": {"ID": OWNER}, "Permission": "READ"}]))
    )
    for grantee in ({"ID": WRITER_ACCOUNT}, {"URI": ALL_USERS}):
        others = bucket(WRITER, acl=json.dumps([{"Grantee": grantee, "Permission": "READ"}]))
        found = refused(lambda b=others: check_acls_can_be_disabled(b))
        assert found == ("InvalidBucketAclWithObjectOwnership", 400)
