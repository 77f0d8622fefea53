"""Block Public Access on buckets: Put/Get/DeletePublicAccessBlock (what each setting does and
what is public: `public`; where they are enforced: `acl`, `bucket_policy` and `access`).

A new bucket has all four settings on; DeletePublicAccessBlock removes the configuration (each
setting then off; Get answers 404 NoSuchPublicAccessBlockConfiguration) and a Put replaces it
whole, a member it leaves out being false, as on S3. Walrus has no account-level settings.
"""

from __future__ import annotations

import json
from typing import Any

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus.apis import S3
from mallee.services.walrus.buckets import get_bucket, read_bucket
from mallee.services.walrus.checks import malformed_xml
from mallee.services.walrus.public import FLAGS


@S3.operation()
def put_public_access_block(ctx: RequestContext, p: dict[str, Any]) -> None:
    bucket = get_bucket(ctx, p["Bucket"])
    config = p.get("PublicAccessBlockConfiguration")
    if not isinstance(config, dict):
        raise malformed_xml()
    bucket.public_access_block = json.dumps({flag: bool(config.get(flag)) for flag in FLAGS})
    return None


@S3.operation()
def get_public_access_block(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = read_bucket(ctx, p["Bucket"])
    if not bucket.public_access_block:
        raise CloudError(
            "NoSuchPublicAccessBlockConfiguration",
            "The public access block configuration was not found",
            404,
            details={"BucketName": bucket.name},
        )
    return {"PublicAccessBlockConfiguration": json.loads(bucket.public_access_block)}


@S3.operation()
def delete_public_access_block(ctx: RequestContext, p: dict[str, Any]) -> None:
    get_bucket(ctx, p["Bucket"]).public_access_block = None
    return None
