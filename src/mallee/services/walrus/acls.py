"""Access control lists: Get/PutBucketAcl and Get/PutObjectAcl.

An ACL is set by a canned ACL (`x-amz-acl`), by `x-amz-grant-*` headers, or by an
AccessControlPolicy document. The stored JSON (`Bucket.acl`, `ObjectVersion.acl`) holds the grants
beyond the owner's FULL_CONTROL, which is implicit and answered first, as S3 lists it. A canonical
user is named by its 12-digit account id (Mallee's canonical id).

The answers are the permissions S3 enforces: under BucketOwnerEnforced the bucket owner's
FULL_CONTROL alone (the bucket owner owns every object), under IgnorePublicAcls without the public
grants. Setting an ACL is refused or limited as `acl.replacement_acl` says.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus.acl import acls_enabled, replacement_acl, user_grant
from mallee.services.walrus.apis import S3
from mallee.services.walrus.buckets import get_bucket, owner_view
from mallee.services.walrus.not_found import no_such_key
from mallee.services.walrus.public import blocks, public_grant
from mallee.services.walrus.tables import Bucket, ObjectVersion


def _view(bucket: Bucket, owner_account_id: str, stored: str) -> dict[str, Any]:
    if not acls_enabled(bucket):
        owner_account_id, stored = bucket.owner_account_id, "[]"
    ignored = blocks(bucket).ignore_public_acls
    grants = [user_grant(owner_account_id, "FULL_CONTROL")]
    for grant in json.loads(stored or "[]"):
        if ignored and public_grant(grant):
            continue
        grantee = dict(grant["Grantee"])
        if grantee.get("Type") == "CanonicalUser":
            grantee.setdefault("DisplayName", grantee.get("ID"))
        grants.append({"Grantee": grantee, "Permission": grant["Permission"]})
    return {"Owner": owner_view(owner_account_id), "Grants": grants}


@S3.operation()
def get_bucket_acl(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    return _view(bucket, bucket.owner_account_id, bucket.acl)


@S3.operation()
def put_bucket_acl(ctx: RequestContext, p: dict[str, Any]) -> None:
    bucket = get_bucket(ctx, p["Bucket"])
    bucket.acl = replacement_acl(p, bucket.owner_account_id, bucket)
    return None


def _object(ctx: RequestContext, bucket: str, key: str, version_id: str | None) -> ObjectVersion:
    q = select(ObjectVersion).where(ObjectVersion.bucket == bucket, ObjectVersion.key == key)
    found: ObjectVersion | None = ctx.session.scalar(
        q.where(ObjectVersion.version_id == version_id) if version_id else q.where(ObjectVersion.is_latest)
    )
    if found is None or (found.is_delete_marker and not version_id):
        raise no_such_key(key, version_id)
    if found.is_delete_marker:
        raise CloudError("MethodNotAllowed", "The specified method is not allowed against this resource.")
    return found


@S3.operation()
def get_object_acl(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    version = _object(ctx, bucket.name, p["Key"], p.get("VersionId"))
    return _view(bucket, version.owner_account_id, version.acl)


@S3.operation()
def put_object_acl(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    version = _object(ctx, bucket.name, p["Key"], p.get("VersionId"))
    version.acl = replacement_acl(p, version.owner_account_id, bucket)
    return {}
