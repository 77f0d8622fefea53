"""Buckets: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from sqlalchemy import select

from mallee.core import clock
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus.acl import acl_from_params
from mallee.services.walrus.apis import S3
from mallee.services.walrus.runtime import buckets
from mallee.services.walrus.tables import Bucket, ObjectVersion, Upload

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def check_bucket_name(name: str) -> None:
    """S3's naming rules for new buckets (general purpose buckets)."""
    bad = (
        not _BUCKET_NAME.match(name)
        or ".." in name
        or ".-" in name
        or "-." in name
        or name.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
        or name.endswith(("-s3alias", "--ol-s3", "--x-s3", "--table-s3"))
        or _is_ip(name)
    )
    if bad:
        raise CloudError("InvalidBucketName", "The specified bucket is not valid.")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def get_bucket(ctx: RequestContext, name: str) -> Bucket:
    """The bucket, in the request's session (to change it, or to read it with the transaction)."""
    return _existing(ctx.session.get(Bucket, name), name)


def read_bucket(name: str) -> Bucket:
    """The bucket as last committed, from the bucket cache: for handlers that only read it."""
    return _existing(buckets().get(name), name)


def _existing(bucket: Bucket | None, name: str) -> Bucket:
    if bucket is None:
        raise CloudError("NoSuchBucket", "The specified bucket does not exist", details={"BucketName": name})
    return bucket


def owner_view(account_id: str) -> dict[str, str]:
    return {"ID": account_id, "DisplayName": account_id}


@S3.operation()
def list_buckets(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    assert ctx.account_id is not None
    q = select(Bucket).where(Bucket.owner_account_id == ctx.account_id).order_by(Bucket.name)
    if p.get("Prefix"):
        q = q.where(Bucket.name.startswith(p["Prefix"]))
    buckets = [
        {"Name": b.name, "CreationDate": b.created, "BucketRegion": ctx.region}
        for b in ctx.session.scalars(q)
    ]
    return {"Buckets": buckets, "Owner": owner_view(ctx.account_id)}


@S3.operation()
def create_bucket(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    name = p["Bucket"]
    check_bucket_name(name)
    assert ctx.account_id is not None
    existing = ctx.session.get(Bucket, name)
    if existing is not None:
        if existing.owner_account_id == ctx.account_id:
            raise CloudError(
                "BucketAlreadyOwnedByYou",
                "Your previous request to create the named bucket succeeded and you already own it.",
                409,
            )
        raise CloudError(
            "BucketAlreadyExists",
            "The requested bucket name is not available. Please select a different name and try again.",
            409,
        )
    location = (p.get("CreateBucketConfiguration") or {}).get("LocationConstraint") or ""
    if location and location != ctx.region:
        raise CloudError(
            "InvalidLocationConstraint", f"The specified location-constraint is not valid: {location}", 400
        )
    bucket = Bucket(
        name=name,
        owner_account_id=ctx.account_id,
        created=clock.now(),
        location=location,
        acl=acl_from_params(p, ctx.account_id, ctx.account_id),
    )
    ctx.session.add(bucket)
    ctx.session.flush()
    return {"Location": f"/{name}"}


@S3.operation()
def head_bucket(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    get_bucket(ctx, p["Bucket"])
    return {"BucketRegion": ctx.region, "AccessPointAlias": False}


@S3.operation()
def delete_bucket(ctx: RequestContext, p: dict[str, Any]) -> None:
    bucket = get_bucket(ctx, p["Bucket"])
    has_objects = ctx.session.scalar(
        select(ObjectVersion.id).where(ObjectVersion.bucket == bucket.name).limit(1)
    )
    has_uploads = ctx.session.scalar(select(Upload.upload_id).where(Upload.bucket == bucket.name).limit(1))
    if has_objects is not None or has_uploads is not None:
        raise CloudError("BucketNotEmpty", "The bucket you tried to delete is not empty", 409)
    ctx.session.delete(bucket)
    return None


@S3.operation()
def get_bucket_location(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    return {"LocationConstraint": bucket.location or None}
