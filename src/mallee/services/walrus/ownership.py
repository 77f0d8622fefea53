"""Object Ownership: Put/Get/DeleteBucketOwnershipControls (what each setting does: `acl`).

A bucket's `ownership` is its one rule's ObjectOwnership, or "" once DeleteBucketOwnershipControls
removed the controls: GetBucketOwnershipControls then answers 404 OwnershipControlsNotFoundError
and the bucket acts as ObjectWriter, as S3 does (deleting again is a 204 too). Buckets made since
S3's April 2023 change (here: every CreateBucket) have BucketOwnerEnforced, so Get answers it; S3
answers 404 for buckets made before that which never had controls, which Walrus's migration
(w0003) instead marks ObjectWriter, so Get answers that.
"""

from __future__ import annotations

from typing import Any

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus.acl import ENFORCED, NO_CONTROLS, OWNERSHIPS, check_acls_can_be_disabled
from mallee.services.walrus.apis import S3
from mallee.services.walrus.buckets import get_bucket, read_bucket
from mallee.services.walrus.checks import malformed_xml


@S3.operation()
def put_bucket_ownership_controls(ctx: RequestContext, p: dict[str, Any]) -> None:
    bucket = get_bucket(ctx, p["Bucket"])
    rules = (p.get("OwnershipControls") or {}).get("Rules")
    # S3 takes exactly one rule naming a known setting; anything else is MalformedXML.
    if not isinstance(rules, list) or len(rules) != 1:
        raise malformed_xml()
    ownership = (rules[0] or {}).get("ObjectOwnership")
    if ownership not in OWNERSHIPS:
        raise malformed_xml()
    if ownership == ENFORCED:
        check_acls_can_be_disabled(bucket)
    bucket.ownership = ownership
    return None


@S3.operation()
def get_bucket_ownership_controls(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = read_bucket(ctx, p["Bucket"])
    if bucket.ownership == NO_CONTROLS:
        raise CloudError(
            "OwnershipControlsNotFoundError",
            "The bucket ownership controls were not found",
            404,
            details={"BucketName": bucket.name},
        )
    return {"OwnershipControls": {"Rules": [{"ObjectOwnership": bucket.ownership}]}}


@S3.operation()
def delete_bucket_ownership_controls(ctx: RequestContext, p: dict[str, Any]) -> None:
    get_bucket(ctx, p["Bucket"]).ownership = NO_CONTROLS
    return None
