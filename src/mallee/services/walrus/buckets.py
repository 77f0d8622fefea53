"""Buckets: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation.

A new bucket is made as S3 has made them since April 2023: Object Ownership BucketOwnerEnforced
(ACLs off) unless `x-amz-object-ownership` says otherwise, and every Block Public Access setting
on (the owner deletes or changes the block to make anything public). So a CreateBucket ACL that
grants anyone but the owner needs another ownership, and a public one is refused (403).
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from sqlalchemy import select

from mallee.core import clock
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus.acl import ENFORCED, OWNERSHIPS, new_bucket_acl, ownership_of
from mallee.services.walrus.apis import S3
from mallee.services.walrus.checks import MAX_BUCKET_TAGS, check_tags
from mallee.services.walrus.public import ALL_BLOCKED, blocks
from mallee.services.walrus.runtime import buckets
from mallee.services.walrus.tables import Bucket, ObjectVersion, Upload
from mallee.services.walrus.tokens import continuation_token, token_marker

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


def read_bucket(ctx: RequestContext, name: str) -> Bucket:
    """The bucket as last committed, for handlers that only read it: the row the authorizer loaded
    from the bucket cache, or the cache's."""
    loaded = ctx.resource
    if isinstance(loaded, Bucket) and loaded.name == name:
        return loaded
    return _existing(buckets().get(name), name)


def _existing(bucket: Bucket | None, name: str) -> Bucket:
    if bucket is None:
        raise CloudError("NoSuchBucket", "The specified bucket does not exist", details={"BucketName": name})
    return bucket


def owner_view(account_id: str) -> dict[str, str]:
    return {"ID": account_id, "DisplayName": account_id}


# ListBuckets' page ceiling, and its page when the caller sets none (S3 answers an unpaginated call
# with every bucket, which its default quota keeps at 10,000 or fewer).
MAX_BUCKETS = 10_000
# What us-east-1 answers to re-creating a bucket you own: 200 OK (S3's legacy behaviour there).
LEGACY_REGION = "us-east-1"


@S3.operation()
def list_buckets(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    assert ctx.account_id is not None
    page = p.get("MaxBuckets")
    if page is None:
        page = MAX_BUCKETS
    elif not 1 <= page <= MAX_BUCKETS:
        raise CloudError(
            "InvalidArgument", f"Argument max-buckets must be an integer between 1 and {MAX_BUCKETS}"
        )
    out: dict[str, Any] = {"Buckets": [], "Owner": owner_view(ctx.account_id)}
    prefix, token = p.get("Prefix"), p.get("ContinuationToken")
    if prefix is not None:
        out["Prefix"] = prefix  # echoed when sent, as S3 does
    q = select(Bucket).where(Bucket.owner_account_id == ctx.account_id)
    if prefix:
        q = q.where(Bucket.name.startswith(prefix, autoescape=True))
    if token is not None:
        q = q.where(Bucket.name > token_marker(token))
    if p.get("BucketRegion") not in (None, ctx.region):
        return out  # every bucket of this cloud is in its one region
    rows = list(ctx.session.scalars(q.order_by(Bucket.name).limit(page + 1)))
    out["Buckets"] = [
        {"Name": b.name, "CreationDate": b.created, "BucketRegion": ctx.region} for b in rows[:page]
    ]
    if len(rows) > page:
        out["ContinuationToken"] = continuation_token(rows[page - 1].name)
    return out


@S3.operation()
def create_bucket(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    name = p["Bucket"]
    check_bucket_name(name)
    assert ctx.account_id is not None
    ownership = p.get("ObjectOwnership")
    if ownership is not None and ownership not in OWNERSHIPS:
        raise CloudError(
            "InvalidArgument",
            f"Invalid x-amz-object-ownership header: {ownership}",
            details={"ArgumentName": "x-amz-object-ownership"},
        )
    config = p.get("CreateBucketConfiguration") or {}
    if config.get("Location") or config.get("Bucket"):
        raise CloudError("NotImplemented", "Directory buckets are not supported by this server.", 501)
    existing = ctx.session.get(Bucket, name)
    if existing is not None:
        if existing.owner_account_id != ctx.account_id:
            raise CloudError(
                "BucketAlreadyExists",
                "The requested bucket name is not available. Please select a different name and try again.",
                409,
            )
        if ctx.region != LEGACY_REGION:
            raise CloudError(
                "BucketAlreadyOwnedByYou",
                "Your previous request to create the named bucket succeeded and you already own it.",
                409,
            )
        # us-east-1 answers 200 and resets the bucket's ACL (to what this request asks for), as
        # the bucket's own settings allow.
        existing.acl = new_bucket_acl(
            p, ctx.account_id, ownership_of(existing), blocks(existing).block_public_acls
        )
        return {"Location": f"/{name}"}
    location = config.get("LocationConstraint") or ""
    if location and location != ctx.region:
        raise CloudError(
            "InvalidLocationConstraint", f"The specified location-constraint is not valid: {location}", 400
        )
    ownership = ownership or ENFORCED
    bucket = Bucket(
        name=name,
        owner_account_id=ctx.account_id,
        created=clock.now(),
        location=location,
        acl=new_bucket_acl(p, ctx.account_id, ownership, block_public_acls=True),
        tags=_creation_tags(config),
        ownership=ownership,
        public_access_block=ALL_BLOCKED,
        # x-amz-bucket-object-lock-enabled: object lock (see object_lock) on versioning for good
        object_lock=json.dumps({"ObjectLockEnabled": "Enabled"})
        if p.get("ObjectLockEnabledForBucket")
        else None,
        versioning="Enabled" if p.get("ObjectLockEnabledForBucket") else "",
    )
    ctx.session.add(bucket)
    ctx.session.flush()
    return {"Location": f"/{name}"}


def _creation_tags(config: dict[str, Any]) -> str | None:
    """CreateBucketConfiguration's Tags, checked as PutBucketTagging checks a TagSet."""
    if config.get("Tags") is None:
        return None
    return json.dumps(check_tags(config["Tags"], MAX_BUCKET_TAGS))


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
