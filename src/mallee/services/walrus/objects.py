"""Objects: PutObject, GetObject, HeadObject, DeleteObject, with versions and conditional reads."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any
from urllib.parse import parse_qsl

from mallee.core import clock
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.protocol.scalars import format_timestamp
from mallee.protocol.serializer import STATUS_OVERRIDE
from mallee.services.walrus import acl, checksums, encryption, object_lock
from mallee.services.walrus.apis import S3
from mallee.services.walrus.blob_reads import is_multipart, open_body, part_sizes, reading
from mallee.services.walrus.bodies import INLINE_MAX, receive_body
from mallee.services.walrus.buckets import get_bucket, read_bucket
from mallee.services.walrus.encryption import CustomerKey
from mallee.services.walrus.object_layer import WriteConditions, loose_version
from mallee.services.walrus.ranges import parse_range
from mallee.services.walrus.runtime import layer
from mallee.services.walrus.tables import Bucket, ObjectVersion

# Object headers S3 stores and returns as they were sent: output member -> input member.
STORED_HEADERS = ("ContentType", "ContentEncoding", "ContentDisposition", "ContentLanguage", "CacheControl",
                  "WebsiteRedirectLocation")  # fmt: skip
MAX_KEY_BYTES = 1024
# The storage classes a general-purpose bucket takes (S3 refuses the others: directory buckets'
# EXPRESS_ONEZONE, OUTPOSTS, SNOW, FSX_*, and anything else).
STORAGE_CLASSES = frozenset(("STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA",
                             "INTELLIGENT_TIERING", "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR"))  # fmt: skip


def check_key(key: str) -> None:
    if not key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise CloudError("KeyTooLongError", "Your key is too long", 400)


def check_storage_class(value: str | None) -> None:
    if value is not None and value not in STORAGE_CLASSES:
        raise CloudError("InvalidStorageClass", "The storage class you specified is not valid", 400)


def stored_headers(p: dict[str, Any]) -> dict[str, str]:
    headers = {name: str(p[name]) for name in STORED_HEADERS if p.get(name) is not None}
    codings = [c.strip() for c in headers.get("ContentEncoding", "").split(",")]
    if "aws-chunked" in (c.lower() for c in codings):  # how the body travelled: S3 does not keep it
        kept = ",".join(c for c in codings if c.lower() != "aws-chunked")
        headers.pop("ContentEncoding")
        if kept:
            headers["ContentEncoding"] = kept
    if p.get("Expires") is not None:
        expires = p["Expires"]
        headers["Expires"] = expires.isoformat() if isinstance(expires, _dt.datetime) else str(expires)
    return headers


@S3.operation()
def put_object(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = read_bucket(ctx, p["Bucket"])
    check_key(p["Key"])
    check_storage_class(p.get("StorageClass"))
    objects = layer()
    fields = described(ctx, p, bucket)  # refused (an ACL, a lock) before the body is read
    if (p.get("ObjectLockMode") or p.get("ObjectLockLegalHoldStatus")) and not _has_digest(ctx):
        raise CloudError(
            "InvalidRequest",
            "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object "
            "Lock parameters",
        )
    conditions = objects.check_early(bucket.name, p["Key"], WriteConditions.of(p))
    sealing = objects.sealing(p, bucket)
    sealed = objects.seal(sealing)
    received = receive_body(ctx, objects.store, keep_up_to=INLINE_MAX, cipher=sealed.cipher)
    stored = received.stored
    assert ctx.account_id is not None
    version = loose_version(
        dict(
            bucket=bucket.name,
            key=p["Key"],
            version_id=objects.new_version_id(bucket),
            is_latest=True,
            size=stored.size,
            etag=received.etag,
            last_modified=clock.now(),
            **fields,
            checksums=json.dumps(received.checksums),
            locator=stored.locator,
            body=stored.inline,
            **sealed.fields(),
        )
    )
    objects.put(bucket, version, stored, conditions)
    out: dict[str, Any] = {"ETag": received.etag, **encryption.answer(sealed.sse, sealing.customer)}
    if bucket.versioning:
        out["VersionId"] = version.version_id
    for algorithm, value in received.checksums.items():
        out[f"Checksum{algorithm.upper()}"] = value
    if received.checksums:
        out["ChecksumType"] = "FULL_OBJECT"
    return out


def _has_digest(ctx: RequestContext) -> bool:
    headers = ctx.request.headers
    return "content-md5" in headers or bool(checksums.requested(headers))


def described(ctx: RequestContext, p: dict[str, Any], bucket: Bucket) -> dict[str, Any]:
    """What a PutObject or CreateMultipartUpload request says of the object it makes: its owner
    and ACL (as the bucket's ownership controls decide), storage class, content headers, user
    metadata, tags, and object lock (ObjectVersion and Upload columns alike)."""
    assert ctx.account_id is not None
    owner, stored_acl = acl.object_owner_and_acl(p, ctx.account_id, bucket)
    return {
        "owner_account_id": owner,
        "storage_class": p.get("StorageClass") or "STANDARD",
        "headers": json.dumps(stored_headers(p)),
        "metadata_": json.dumps(p.get("Metadata") or {}),
        "tags": json.dumps(tags_from_header(p.get("Tagging"))),
        "acl": stored_acl,
        **object_lock.for_new_object(p, bucket),
    }


def tags_from_header(value: str | None) -> list[dict[str, str]]:
    if not value:
        return []
    return [{"Key": k, "Value": v} for k, v in parse_qsl(value, keep_blank_values=True)]


def object_view(
    version: ObjectVersion, p: dict[str, Any], versioned: bool, customer: CustomerKey | None
) -> dict[str, Any]:
    """GetObject's and HeadObject's members about the version (`customer`: the SSE-C key the
    request carried, checked)."""
    out: dict[str, Any] = {
        "ETag": version.etag,
        "LastModified": version.last_modified,
        "ContentLength": version.size,
        "AcceptRanges": "bytes",
        "Metadata": json.loads(version.metadata_ or "{}"),
        **encryption.answer(version.sse, customer),
        **object_lock.view(version),
    }
    headers = json.loads(version.headers or "{}")
    for name in STORED_HEADERS:
        if name in headers:
            out[name] = headers[name]
    out.setdefault("ContentType", "binary/octet-stream")
    if "Expires" in headers:
        out["Expires"] = _dt.datetime.fromisoformat(headers["Expires"])
    if version.storage_class != "STANDARD":
        out["StorageClass"] = version.storage_class
    if versioned:
        out["VersionId"] = version.version_id
    tags = json.loads(version.tags or "[]")
    if tags:
        out["TagCount"] = len(tags)
    if (p.get("ChecksumMode") or "").upper() == "ENABLED":
        sums = json.loads(version.checksums or "{}")
        for algorithm, value in sums.items():
            out[f"Checksum{algorithm.upper()}"] = value
        if sums:
            out["ChecksumType"] = checksums.checksum_type(sums)
    for override in (
        "ContentType",
        "ContentLanguage",
        "ContentDisposition",
        "ContentEncoding",
        "CacheControl",
    ):
        if p.get(f"Response{override}"):
            out[override] = p[f"Response{override}"]
    if p.get("ResponseExpires"):
        out["Expires"] = p["ResponseExpires"]
    return out


def check_conditions(version: ObjectVersion, p: dict[str, Any]) -> None:
    """If-Match / If-None-Match / If-(Un)Modified-Since, in S3's order of precedence."""
    etag = version.etag
    modified = version.last_modified.replace(microsecond=0)
    if_match, if_none = p.get("IfMatch"), p.get("IfNoneMatch")
    if if_match is not None and not _etag_matches(if_match, etag):
        raise CloudError(
            "PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412
        )
    if if_match is None and p.get("IfUnmodifiedSince") is not None and modified > p["IfUnmodifiedSince"]:
        raise CloudError(
            "PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412
        )
    if (if_none is not None and _etag_matches(if_none, etag)) or (
        if_none is None and p.get("IfModifiedSince") is not None and modified <= p["IfModifiedSince"]
    ):  # a 304 names the version the client has (RFC 9110 15.4.5), as S3's does
        validators = [("ETag", etag), ("Last-Modified", format_timestamp(modified, "rfc822"))]
        raise CloudError("NotModified", "Not Modified", 304, validators)


def _etag_matches(condition: str, etag: str) -> bool:
    wanted = [c.strip() for c in condition.split(",")]
    return "*" in wanted or etag in wanted or etag.strip('"') in [w.strip('"') for w in wanted]


@S3.operation()
def get_object(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    """The object with its files open (see blob_reads: a GET racing an overwrite reads again)."""
    return reading(lambda: _get_once(ctx, p))


def _get_once(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = read_bucket(ctx, p["Bucket"])
    objects = layer()
    version = objects.read(bucket.name, p["Key"], p.get("VersionId"), marker_headers=True)
    customer = objects.reader_key(p, version.sse, version.sse_key_hmac)
    check_conditions(version, p)
    out = object_view(version, p, bool(bucket.versioning), customer)
    offset, length = 0, version.size
    if p.get("PartNumber") is not None:
        offset, length = select_part(version, p, out)
    elif p.get("Range"):
        offset, length = select_range(version, p["Range"], out)
    out["ContentLength"] = length
    out["Body"] = open_body(version, offset, length, objects.data_keys(version, customer))
    return out


def select_range(version: ObjectVersion, header: str, out: dict[str, Any]) -> tuple[int, int]:
    """GetObject/HeadObject `Range`: (offset, length) to send, and the 206 answer's headers in
    `out`; the whole object when S3 would ignore the header."""
    found = parse_range(header, version.size)
    if found is None:
        return 0, version.size
    offset, length = found
    out["ContentRange"] = f"bytes {offset}-{offset + length - 1}/{version.size}"
    out[STATUS_OVERRIDE] = 206
    # S3 sends no whole-object checksum with part of an object (clients would check it).
    for name in [n for n in out if n.startswith("Checksum")]:
        del out[name]
    return offset, length


def select_part(version: ObjectVersion, p: dict[str, Any], out: dict[str, Any]) -> tuple[int, int]:
    """GetObject/HeadObject `PartNumber=N`: (offset, length) of part N, and the 206 answer's headers
    in `out` (Content-Range, x-amz-mp-parts-count). A single-blob object has one part."""
    if p.get("Range"):
        raise CloudError("InvalidRequest", "Cannot specify both Range header and partNumber query parameter")
    number = p["PartNumber"]
    sizes = part_sizes(version)
    if not 1 <= number <= len(sizes):
        raise CloudError("InvalidPartNumber", "The requested partnumber is not satisfiable", 416)
    offset = sum(sizes[: number - 1])
    length = sizes[number - 1]
    if is_multipart(version):
        out["PartsCount"] = len(sizes)
    if length:
        out["ContentRange"] = f"bytes {offset}-{offset + length - 1}/{version.size}"
    out[STATUS_OVERRIDE] = 206
    for name in [n for n in out if n.startswith("Checksum")]:
        del out[name]  # the object's checksum does not cover one part
    return offset, length


@S3.operation()
def head_object(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = read_bucket(ctx, p["Bucket"])
    objects = layer()
    version = objects.read(bucket.name, p["Key"], p.get("VersionId"), marker_headers=True)
    customer = objects.reader_key(p, version.sse, version.sse_key_hmac)
    check_conditions(version, p)
    out = object_view(version, p, bool(bucket.versioning), customer)
    if p.get("PartNumber") is not None:
        out["ContentLength"] = select_part(version, p, out)[1]
    elif p.get("Range"):  # only the length changes, as on S3
        out["ContentLength"] = select_range(version, p["Range"], out)[1]
    return out


@S3.operation()
def delete_object(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    assert ctx.account_id is not None
    version_id = p.get("VersionId")
    guard = object_lock.guard(ctx, p, bucket.name, p["Key"], version_id)
    return layer().delete(ctx.session, bucket, p["Key"], version_id, ctx.account_id, guard)
