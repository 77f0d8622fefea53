"""Bucket policies: Put/Get/DeleteBucketPolicy and GetBucketPolicyStatus.

A policy is validated with the IAM policy language (`core.policy.parse_resource_policy`), then as
S3 does: every action an `s3:` one, every resource this bucket or an object in it. `access`
evaluates the stored document on every request.
"""

from __future__ import annotations

import json
from typing import Any

from mallee.core import policy as iam_policy
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus.apis import S3
from mallee.services.walrus.buckets import get_bucket


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
    """Public when an Allow statement names every principal ("*") without any condition."""
    bucket = get_bucket(ctx, p["Bucket"])
    if not bucket.policy:
        raise CloudError("NoSuchBucketPolicy", "The bucket policy does not exist", 404)
    public = any(
        statement.effect == "Allow"
        and not statement.not_principal
        and not statement.conditions
        and any(pr.kind == "*" or (pr.kind == "AWS" and pr.value == "*") for pr in statement.principals or ())
        for statement in iam_policy.parse_resource_policy(bucket.policy).statements
    )
    return {"PolicyStatus": {"IsPublic": public}}
