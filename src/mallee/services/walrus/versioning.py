"""Bucket versioning: GetBucketVersioning, PutBucketVersioning.

A bucket starts unversioned (""), and once versioning is Enabled it can only be Suspended, never
unversioned again, as on S3. What versioning changes for writes and deletes lives in the object layer
(`object_layer`, its version rule): Enabled gives each write a new version id;
Suspended writes (and delete markers) get the version id "null" and replace only the null version.
MFA Delete is not supported.
"""

from __future__ import annotations

from typing import Any

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus import object_lock
from mallee.services.walrus.apis import S3
from mallee.services.walrus.buckets import get_bucket

STATES = ("Enabled", "Suspended")


@S3.operation()
def get_bucket_versioning(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    out: dict[str, Any] = {}
    if bucket.versioning:
        out["Status"] = bucket.versioning
    return out


@S3.operation()
def put_bucket_versioning(ctx: RequestContext, p: dict[str, Any]) -> None:
    bucket = get_bucket(ctx, p["Bucket"])
    config = p.get("VersioningConfiguration") or {}
    mfa_delete = config.get("MFADelete")
    if mfa_delete == "Enabled" or p.get("MFA"):
        raise CloudError("NotImplemented", "MFA Delete is not supported by this server.", 501)
    if mfa_delete not in (None, "Disabled"):
        raise CloudError("MalformedXML", "The XML you provided was not well-formed or did not validate.")
    status = config.get("Status")
    if status is None:
        if mfa_delete is None:
            raise CloudError("MalformedXML", "The XML you provided was not well-formed or did not validate.")
        return None
    if status not in STATES:
        raise CloudError("MalformedXML", "The XML you provided was not well-formed or did not validate.")
    object_lock.check_versioning_change(bucket, status)
    bucket.versioning = status
    ctx.session.flush()
    return None
