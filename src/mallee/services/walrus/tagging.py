"""Object tags: Put/Get/DeleteObjectTagging (of the current version, or of one by VersionId).

PutObject's `x-amz-tagging` sets the first tags (`objects`); GetObject reports their count.
"""

from __future__ import annotations

import json
from typing import Any

from mallee.core.context import RequestContext
from mallee.services.walrus.apis import S3
from mallee.services.walrus.buckets import get_bucket
from mallee.services.walrus.checks import check_tags
from mallee.services.walrus.runtime import layer

MAX_OBJECT_TAGS = 10


def _version_out(versioned: bool, version_id: str) -> dict[str, Any]:
    return {"VersionId": version_id} if versioned else {}


@S3.operation()
def put_object_tagging(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    version = layer().find(ctx.session, bucket.name, p["Key"], p.get("VersionId"))
    version.tags = json.dumps(check_tags((p.get("Tagging") or {}).get("TagSet"), MAX_OBJECT_TAGS))
    return _version_out(bool(bucket.versioning), version.version_id)


@S3.operation()
def get_object_tagging(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    version = layer().find(ctx.session, bucket.name, p["Key"], p.get("VersionId"))
    out = _version_out(bool(bucket.versioning), version.version_id)
    out["TagSet"] = json.loads(version.tags or "[]")
    return out


@S3.operation()
def delete_object_tagging(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    version = layer().find(ctx.session, bucket.name, p["Key"], p.get("VersionId"))
    version.tags = "[]"
    return _version_out(bool(bucket.versioning), version.version_id)
