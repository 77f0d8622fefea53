"""Canned ACLs and grants (Get/PutBucketAcl, Get/PutObjectAcl build on these)."""

from __future__ import annotations

import json

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


def canned_grants(name: str, owner_account_id: str) -> str:
    """The JSON grant list stored for a canned ACL (the owner's FULL_CONTROL is implicit)."""
    if name not in CANNED:
        raise CloudError("InvalidArgument", f"Invalid canned ACL: {name}")
    return json.dumps(CANNED[name])
