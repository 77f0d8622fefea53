"""The grants a request asks for: a canned ACL (`x-amz-acl`), `x-amz-grant-*` headers, or an
AccessControlPolicy document (CreateBucket, PutObject, CopyObject, CreateMultipartUpload and the
Put*Acl calls all read them here). Stored as JSON: the grants beyond the owner's FULL_CONTROL.

And what a bucket's settings let such a request do (S3 User Guide, "Controlling ownership of
objects and disabling ACLs for your bucket", and "Blocking public access"):

- Object Ownership (`Bucket.ownership`). BucketOwnerEnforced, the default of new buckets: ACLs are
  off; a write may carry no ACL or bucket-owner-full-control only, anything else is 400
  AccessControlListNotSupported, as is every Put*Acl; the bucket owner owns every object.
  BucketOwnerPreferred: the bucket owner owns what is written with bucket-owner-full-control.
  ObjectWriter (also what a bucket without ownership controls does): the writer owns its objects.
- BlockPublicAcls (`public.blocks`): a public ACL asked for is 403 AccessDenied.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mallee.core.errors import CloudError
from mallee.services.walrus.public import ALL_USERS, AUTHENTICATED_USERS, acl_is_public, blocks
from mallee.services.walrus.tables import Bucket


def _group(uri: str, permission: str) -> dict[str, object]:
    return {"Grantee": {"Type": "Group", "URI": uri}, "Permission": permission}


CANNED: dict[str, list[dict[str, object]]] = {
    "private": [],
    "public-read": [_group(ALL_USERS, "READ")],
    "public-read-write": [_group(ALL_USERS, "READ"), _group(ALL_USERS, "WRITE")],
    "authenticated-read": [_group(AUTHENTICATED_USERS, "READ")],
    "bucket-owner-read": [],
    "bucket-owner-full-control": [],
    "aws-exec-read": [],
    "log-delivery-write": [],
}


LOG_DELIVERY = "http://acs.amazonaws.com/groups/s3/LogDelivery"
GROUPS = (ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY)
PERMISSIONS = ("FULL_CONTROL", "READ", "WRITE", "READ_ACP", "WRITE_ACP")
GRANT_HEADERS = {
    "GrantFullControl": "FULL_CONTROL",
    "GrantRead": "READ",
    "GrantWrite": "WRITE",
    "GrantReadACP": "READ_ACP",
    "GrantWriteACP": "WRITE_ACP",
}
_ACCOUNT = re.compile(r"\d{12}")
_GRANTEE = re.compile(r'\s*(id|uri|emailAddress)\s*=\s*"?([^",]*)"?\s*(?:,|$)', re.IGNORECASE)


def user_grant(account_id: str, permission: str) -> dict[str, Any]:
    grantee = {"Type": "CanonicalUser", "ID": account_id, "DisplayName": account_id}
    return {"Grantee": grantee, "Permission": permission}


def _email_not_implemented() -> CloudError:
    return CloudError("NotImplemented", "Grants to email addresses are not supported by this server.", 501)


def _malformed_acl() -> CloudError:
    return CloudError(
        "MalformedACLError",
        "The XML you provided was not well-formed or did not validate against our published schema",
    )


def _grantee(kind: str, value: str) -> dict[str, Any]:
    kind = kind.lower()
    if kind == "emailaddress":
        raise _email_not_implemented()
    if kind == "id":
        if not _ACCOUNT.fullmatch(value):
            raise CloudError("InvalidArgument", "Invalid id")
        return {"Type": "CanonicalUser", "ID": value, "DisplayName": value}
    if value not in GROUPS:
        raise CloudError("InvalidArgument", "Invalid group uri")
    return {"Type": "Group", "URI": value}


def canned(name: str, owner_account_id: str, bucket_owner_account_id: str) -> list[dict[str, Any]]:
    """The grants (beyond the owner's) of a canned ACL; bucket-owner-* name the bucket's owner."""
    if name not in CANNED:
        raise CloudError("InvalidArgument", f"Invalid canned ACL: {name}")
    grants = [dict(g) for g in CANNED[name]]
    if (
        name in ("bucket-owner-read", "bucket-owner-full-control")
        and bucket_owner_account_id != owner_account_id
    ):
        permission = "READ" if name == "bucket-owner-read" else "FULL_CONTROL"
        grants.append(user_grant(bucket_owner_account_id, permission))
    return grants


def _header_grants(p: dict[str, Any]) -> list[dict[str, Any]]:
    grants = []
    for member, permission in GRANT_HEADERS.items():
        value = p.get(member)
        if value is None:
            continue
        found = _GRANTEE.findall(value)
        if not found:
            raise CloudError("InvalidArgument", f"Invalid grant header value: {value}")
        grants += [{"Grantee": _grantee(kind, v.strip()), "Permission": permission} for kind, v in found]
    return grants


def _document_grants(policy: dict[str, Any], owner_account_id: str) -> list[dict[str, Any]]:
    owner = (policy.get("Owner") or {}).get("ID")
    if owner is not None and owner != owner_account_id:
        raise CloudError("AccessDenied", "Access Denied")
    grants = []
    for grant in policy.get("Grants") or []:
        grantee, permission = grant.get("Grantee") or {}, grant.get("Permission")
        if permission not in PERMISSIONS:
            raise _malformed_acl()
        kind = grantee.get("Type")
        if kind == "CanonicalUser" and grantee.get("ID"):
            parsed = _grantee("id", grantee["ID"])
        elif kind == "Group" and grantee.get("URI"):
            parsed = _grantee("uri", grantee["URI"])
        elif kind == "AmazonCustomerByEmail":
            raise _email_not_implemented()
        else:
            raise _malformed_acl()
        grants.append({"Grantee": parsed, "Permission": permission})
    return grants


def _requested_grants(
    p: dict[str, Any], owner_account_id: str, bucket_owner_account_id: str
) -> list[dict[str, Any]]:
    headers = _header_grants(p)
    if p.get("ACL") and headers:
        raise CloudError("InvalidRequest", "Specifying both Canned ACLs and Header Grants is not allowed")
    if p.get("AccessControlPolicy") and (p.get("ACL") or headers):
        raise CloudError("UnexpectedContent", "This request does not support content")
    if p.get("AccessControlPolicy"):
        return _document_grants(p["AccessControlPolicy"], owner_account_id)
    if headers:
        return headers
    return canned(p.get("ACL") or "private", owner_account_id, bucket_owner_account_id)


def acl_from_params(p: dict[str, Any], owner_account_id: str, bucket_owner_account_id: str) -> str:
    """The stored JSON grants a Put*Acl / PutObject request asks for (canned, headers or document)."""
    grants = _requested_grants(p, owner_account_id, bucket_owner_account_id)
    # The owner's FULL_CONTROL is implicit: keep it out of the stored list (answered first anyway).
    stored = [
        g
        for g in grants
        if not (g["Grantee"].get("ID") == owner_account_id and g["Permission"] == "FULL_CONTROL")
    ]
    return json.dumps(stored)


def has_acl_input(p: dict[str, Any]) -> bool:
    return bool(p.get("ACL") or p.get("AccessControlPolicy") or any(p.get(m) for m in GRANT_HEADERS))


# --- what a bucket's Object Ownership and BlockPublicAcls let a request's ACL do ---

ENFORCED, PREFERRED, WRITER = "BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter"
OWNERSHIPS = (ENFORCED, PREFERRED, WRITER)
NO_CONTROLS = ""  # Bucket.ownership after DeleteBucketOwnershipControls: S3 acts as ObjectWriter


def ownership_of(bucket: Bucket) -> str:
    return bucket.ownership or WRITER


def acls_enabled(bucket: Bucket) -> bool:
    """False under BucketOwnerEnforced: ACLs are kept (turned back on if ownership changes) but
    grant nothing and cannot be set."""
    return ownership_of(bucket) != ENFORCED


def acl_not_supported() -> CloudError:
    return CloudError("AccessControlListNotSupported", "The bucket does not allow ACLs", 400)


def _denied() -> CloudError:
    return CloudError("AccessDenied", "Access Denied", 403)


def refuse_public(bucket: Bucket, stored: str) -> None:
    """BlockPublicAcls: a request asking for a public ACL is refused, whoever asks."""
    if blocks(bucket).block_public_acls and acl_is_public(stored):
        raise _denied()


def _grants_others(stored: str, owner_account_id: str) -> bool:
    return any(g["Grantee"].get("ID") != owner_account_id for g in json.loads(stored or "[]"))


def check_acls_can_be_disabled(bucket: Bucket) -> None:
    """BucketOwnerEnforced needs a bucket ACL that grants no one but the owner (S3: migrate such
    grants to the bucket policy first)."""
    if _grants_others(bucket.acl, bucket.owner_account_id):
        raise _acl_conflicts_with_ownership()


def _acl_conflicts_with_ownership() -> CloudError:
    return CloudError(
        "InvalidBucketAclWithObjectOwnership",
        "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting",
        400,
    )


def new_bucket_acl(p: dict[str, Any], owner_account_id: str, ownership: str, block_public_acls: bool) -> str:
    """The stored ACL of a bucket CreateBucket makes (or, in us-east-1, makes again)."""
    stored = acl_from_params(p, owner_account_id, owner_account_id)
    if ownership == ENFORCED and _grants_others(stored, owner_account_id):
        raise _acl_conflicts_with_ownership()
    if block_public_acls and acl_is_public(stored):
        raise _denied()
    return stored


def replacement_acl(p: dict[str, Any], owner_account_id: str, bucket: Bucket) -> str:
    """The stored ACL a PutBucketAcl or PutObjectAcl sets on what `owner_account_id` owns."""
    if not acls_enabled(bucket):
        raise acl_not_supported()
    if not has_acl_input(p):
        raise CloudError("MissingSecurityHeader", "Your request was missing a required header")
    stored = acl_from_params(p, owner_account_id, bucket.owner_account_id)
    refuse_public(bucket, stored)
    return stored


def _bucket_owner_full_control(p: dict[str, Any], bucket_owner_account_id: str) -> bool:
    """Does a write's ACL input grant the bucket owner FULL_CONTROL and nothing else (the canned
    ACL or its `x-amz-grant-full-control: id=...` form)? Explicit `private` does not."""
    grants = _requested_grants(p, bucket_owner_account_id, bucket_owner_account_id)  # checks it
    if p.get("ACL"):
        return bool(p["ACL"] == "bucket-owner-full-control")
    return bool(grants) and all(
        g["Permission"] == "FULL_CONTROL" and g["Grantee"].get("ID") == bucket_owner_account_id
        for g in grants
    )


def object_owner_and_acl(p: dict[str, Any], writer_account: str, bucket: Bucket) -> tuple[str, str]:
    """(owner account id, stored ACL JSON) of an object that `writer_account` writes into `bucket`
    (PutObject, POST upload, CopyObject, CreateMultipartUpload), raising what S3 answers when the
    bucket's Object Ownership or BlockPublicAcls refuse the request's ACL."""
    bucket_owner = bucket.owner_account_id
    ownership = ownership_of(bucket)
    if ownership == ENFORCED:
        if has_acl_input(p) and not _bucket_owner_full_control(p, bucket_owner):
            raise acl_not_supported()
        return bucket_owner, "[]"
    if ownership == PREFERRED and p.get("ACL") == "bucket-owner-full-control":
        writer_account = bucket_owner  # the bucket owner takes the object over
    stored = acl_from_params(p, writer_account, bucket_owner)
    refuse_public(bucket, stored)
    return writer_account, stored
