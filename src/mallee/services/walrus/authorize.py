"""A second authorization within one request: the gateway authorized the request's own action;
some requests also act on another resource or need another permission (a copy's source,
each key of DeleteObjects, GetObjectAttributes' s3:GetObject, bypassing governance retention)."""

from __future__ import annotations

import dataclasses
from typing import Any

from mallee.core.context import RequestContext
from mallee.protocol.dispatch import Operation
from mallee.services.walrus import runtime


def authorize_object(
    ctx: RequestContext,
    operation: str,
    bucket: str,
    key: str,
    version_id: str | None,
    expected_owner: str | None = None,
) -> None:
    """Raise AccessDenied unless the caller may do `operation` on bucket/key, evaluated as the
    gateway evaluates a request for it (IAM policies, bucket policy, ACLs, and `expected_owner`:
    a copy's x-amz-source-expected-bucket-owner)."""
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        params["VersionId"] = version_id
    if expected_owner is not None:
        params["ExpectedBucketOwner"] = expected_owner
    check = dataclasses.replace(ctx, params=params, operation=operation)
    runtime.access().authorize(check, Operation(operation, _no_handler))


def _no_handler(ctx: RequestContext, p: dict[str, Any]) -> None:
    return None
