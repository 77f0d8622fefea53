"""The grants a request asks for: a canned ACL (`x-amz-acl`), `x-amz-grant-*` headers, or an
AccessControlPolicy document (CreateBucket, PutObject, CopyObject, CreateMultipartUpload and the
Put*Acl calls all read them here). Stored as JSON: the grants beyond the owner's FULL_CONTROL."""

from __future__ import annotations

import json
import re
from typing import Any

from mallee.core.errors import CloudError

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"


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


def acl_from_params(p: dict[str, Any], owner_account_id: str, bucket_owner_account_id: str) -> str:
    """The stored JSON grants a Put*Acl / PutObject request asks for (canned, headers or document)."""
    headers = _header_grants(p)
    if p.get("ACL") and headers:
        raise CloudError("InvalidRequest", "Specifying both Canned ACLs and Header Grants is not allowed")
    if p.get("AccessControlPolicy") and (p.get("ACL") or headers):
        raise CloudError("UnexpectedContent", "This request does not support content")
    if p.get("AccessControlPolicy"):
        grants = _document_grants(p["AccessControlPolicy"], owner_account_id)
    elif headers:
        grants = headers
    else:
        grants = canned(p.get("ACL") or "private", owner_account_id, bucket_owner_account_id)
    # The owner's FULL_CONTROL is implicit: keep it out of the stored list (answered first anyway).
    stored = [
        g
        for g in grants
        if not (g["Grantee"].get("ID") == owner_account_id and g["Permission"] == "FULL_CONTROL")
    ]
    return json.dumps(stored)


def has_acl_input(p: dict[str, Any]) -> bool:
    return bool(p.get("ACL") or p.get("AccessControlPolicy") or any(p.get(m) for m in GRANT_HEADERS))
