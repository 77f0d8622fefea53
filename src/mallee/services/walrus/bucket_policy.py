"""Bucket policies: Put/Get/DeleteBucketPolicy and GetBucketPolicyStatus.

A policy is validated with the IAM policy language (`core.policy.parse_resource_policy`), then as
S3 does: every action an `s3:` one, every resource this bucket or an object in it; under the
bucket's BlockPublicPolicy a public policy (`public.policy_is_public`) is then refused with 403
AccessDenied. `access` evaluates the stored document on every request.
"""

from __future__ import annotations

import json
from typing import Any

from mallee.core import policy as iam_policy
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus.apis import S3
from mallee.services.walrus.buckets import get_bucket
from mallee.services.walrus.public import blocks, policy_is_public


def _malformed(message: str) -> CloudError:
    return CloudError("MalformedPolicy", message, 400)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def check_policy(document: str, bucket: str) -> iam_policy.Policy:
    try:
        parsed = iam_policy.parse_resource_policy(document)
    except CloudError as err:
        raise _malformed(
            err.message or "Policies must be valid JSON and the first byte must be '{'"
        ) from None
    root = json.loads(document)
    for statement in _as_list(root["Statement"]):
        for action in _as_list(statement.get("Action", statement.get("NotAction", []))):
            if action != "*" and not action.lower().startswith("s3:"):
                raise _malformed("Policy has invalid action")
        for resource in _as_list(statement.get("Resource", statement.get("NotResource", []))):
            arn = f"arn:aws:s3:::{bucket}"
            if (
                resource not in ("*", "arn:aws:s3:::*")
                and resource != arn
                and not resource.startswith(arn + "/")
            ):
                raise _malformed("Policy has invalid resource")
    return parsed


@S3.operation()
def put_bucket_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    bucket = get_bucket(ctx, p["Bucket"])
    document = p.get("Policy")
    if isinstance(document, bytes):
        document = document.decode("utf-8", "replace")
    if not document:
        raise _malformed("Policies must be valid JSON and the first byte must be '{'")
    check_policy(document, bucket.name)
    if blocks(bucket).block_public_policy and policy_is_public(document):
        raise CloudError("AccessDenied", "Access Denied", 403)
    bucket.policy = document
    return None


@S3.operation()
def get_bucket_policy(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    if not bucket.policy:
        raise CloudError("NoSuchBucketPolicy", "The bucket policy does not exist", 404)
    return {"Policy": bucket.policy}


@S3.operation()
def delete_bucket_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    get_bucket(ctx, p["Bucket"]).policy = None
    return None


@S3.operation()
def get_bucket_policy_status(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    if not bucket.policy:
        raise CloudError("NoSuchBucketPolicy", "The bucket policy does not exist", 404)
    return {"PolicyStatus": {"IsPublic": policy_is_public(bucket.policy)}}
