"""CopyObject: a new object (or version) from the bytes of an existing one, maybe in another bucket.

The gateway has already checked s3:PutObject on the destination; the source needs s3:GetObject
(s3:GetObjectVersion with a version id), checked here by the same evaluator (`S3Access`). The
bytes are read from the source blob(s) and written as a new blob: versions never share blobs, so
deleting one never takes another's bytes.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from mallee.core import clock
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus import acl, checksums, encryption, object_lock
from mallee.services.walrus.apis import S3
from mallee.services.walrus.authorize import authorize_object
from mallee.services.walrus.blob_reads import Opened, close, copy_body, is_multipart, open_body, reading
from mallee.services.walrus.bodies import INLINE_MAX
from mallee.services.walrus.buckets import get_bucket
from mallee.services.walrus.object_layer import WriteConditions
from mallee.services.walrus.objects import (
    check_conditions,
    check_key,
    check_storage_class,
    stored_headers,
    tags_from_header,
)
from mallee.services.walrus.runtime import layer
from mallee.services.walrus.tables import Bucket, ObjectVersion

MAX_COPY = 5 * 1024**3  # S3's limit for one CopyObject
_SELF_COPY = (
    "This copy request is illegal because it is trying to copy an object to itself without changing "
    "the object's metadata, storage class, website redirect location or encryption attributes."
)


def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """`bucket/key[?versionId=…]`, URL-encoded, with or without a leading slash."""
    path, sep, query = value.partition("?")
    version_id: str | None = None
    if sep:
        for part in query.split("&"):
            name, _, raw = part.partition("=")
            if name == "versionId":
                version_id = unquote(raw)
            else:
                raise CloudError("InvalidArgument", "Invalid copy source: unknown query parameter")
        if not version_id:
            raise CloudError("InvalidArgument", "Invalid version id specified")
    path = unquote(path)
    if path.startswith("/"):
        path = path[1:]
    bucket, slash, key = path.partition("/")
    if not bucket or not slash or not key:
        raise CloudError(
            "InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey"
        )
    if bucket.startswith("arn:"):
        raise CloudError("InvalidArgument", "Access point copy sources are not supported.")
    return bucket, key, version_id


def check_source_conditions(version: ObjectVersion, p: dict[str, Any]) -> None:
    """x-amz-copy-source-if-*: like GET's conditions, but every failure is 412."""
    conditions = {
        "IfMatch": p.get("CopySourceIfMatch"),
        "IfNoneMatch": p.get("CopySourceIfNoneMatch"),
        "IfModifiedSince": p.get("CopySourceIfModifiedSince"),
        "IfUnmodifiedSince": p.get("CopySourceIfUnmodifiedSince"),
    }
    try:
        check_conditions(version, conditions)
    except CloudError as err:
        if err.code != "NotModified":
            raise
        raise CloudError(
            "PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412
        ) from err


def _is_self_copy_without_change(
    p: dict[str, Any], bucket: str, key: str, source: ObjectVersion, directive: str
) -> bool:
    if bucket != source.bucket or key != source.key or not source.is_latest:
        return False
    if directive == "REPLACE":
        return False
    if p.get("StorageClass") and p["StorageClass"] != source.storage_class:
        return False
    encrypting = p.get("ServerSideEncryption") or p.get("SSECustomerKey")  # e.g. a key rotation
    return not (p.get("WebsiteRedirectLocation") or encrypting)


def _directive(p: dict[str, Any], name: str) -> str:
    value = p.get(name) or "COPY"
    if value not in ("COPY", "REPLACE"):
        raise CloudError("InvalidArgument", f"Unknown {name} value: {value}")
    return str(value)


@S3.operation()
def copy_object(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    check_key(p["Key"])
    check_storage_class(p.get("StorageClass"))
    src_bucket_name, src_key, src_version_id = parse_copy_source(p["CopySource"])
    src_bucket = get_bucket(ctx, src_bucket_name)
    authorize_object(
        ctx, "GetObject", src_bucket_name, src_key, src_version_id, p.get("ExpectedSourceBucketOwner")
    )

    def open_source() -> tuple[ObjectVersion, Opened]:
        source = read_source(ctx, src_bucket.name, src_key, src_version_id)
        check_source_conditions(source, p)
        return source, open_copy_source(p, source, 0, source.size)

    source, pieces = reading(open_source)
    try:
        return _copy(ctx, p, bucket, bool(src_bucket.versioning), source, pieces)
    finally:
        close(pieces)


def open_copy_source(p: dict[str, Any], source: ObjectVersion, offset: int, length: int) -> Opened:
    """A copy source's bytes offset..offset+length, open and decrypted (an SSE-C source needs its
    key in x-amz-copy-source-server-side-encryption-customer-*)."""
    objects = layer()
    customer = objects.reader_key(p, source.sse, source.sse_key_hmac, prefix="CopySource")
    return open_body(source, offset, length, objects.data_keys(source, customer))


def read_source(ctx: RequestContext, bucket: str, key: str, version_id: str | None) -> ObjectVersion:
    """The version a copy source names (CopyObject, UploadPartCopy)."""
    try:
        return layer().read(bucket, key, version_id)
    except CloudError as err:
        if err.code == "MethodNotAllowed":
            raise CloudError(
                "InvalidRequest",
                "The source of a copy request may not specifically refer to a delete marker by version id.",
            ) from err
        raise


def _copy(
    ctx: RequestContext,
    p: dict[str, Any],
    bucket: Bucket,
    source_versioned: bool,
    source: ObjectVersion,
    pieces: Opened,
) -> dict[str, Any]:
    metadata_directive = _directive(p, "MetadataDirective")
    tagging_directive = _directive(p, "TaggingDirective")
    assert ctx.account_id is not None
    owner, stored_acl = acl.object_owner_and_acl(p, ctx.account_id, bucket)
    if _is_self_copy_without_change(p, bucket.name, p["Key"], source, metadata_directive):
        raise CloudError("InvalidRequest", _SELF_COPY)
    if source.size > MAX_COPY:
        raise CloudError(
            "InvalidRequest",
            "The specified copy source is larger than the maximum allowable size for a copy source: "
            f"{MAX_COPY}",
        )
    assert ctx.account_id is not None
    objects = layer()
    objects.check_quota(bucket, source.size)  # before copying the bytes (again when recorded)

    source_sums: dict[str, str] = json.loads(source.checksums or "{}") if not is_multipart(source) else {}
    algorithms = list(source_sums)
    wanted = (p.get("ChecksumAlgorithm") or "").lower()
    if wanted:
        if wanted not in checksums.ALGORITHMS:
            raise CloudError("InvalidRequest", f"Checksum algorithm {wanted} is not supported.")
        if wanted not in algorithms:
            algorithms.append(wanted)
    sealing = objects.sealing(p, bucket)  # as a PUT: the request's, else the bucket's default
    sealed = objects.seal(sealing)
    copied = copy_body(pieces, checksums.Hashers(algorithms), keep_up_to=INLINE_MAX, cipher=sealed.cipher)
    stored, sums = copied.stored, copied.checksums

    if metadata_directive == "REPLACE":
        headers, metadata = stored_headers(p), p.get("Metadata") or {}
    else:
        headers, metadata = json.loads(source.headers or "{}"), json.loads(source.metadata_ or "{}")
    if tagging_directive == "REPLACE":
        tags = tags_from_header(p.get("Tagging"))
    else:
        tags = json.loads(source.tags or "[]")
    version = ObjectVersion(
        bucket=bucket.name,
        key=p["Key"],
        version_id=objects.new_version_id(bucket),
        is_latest=True,
        size=stored.size,
        etag=copied.etag,
        last_modified=clock.now(),
        owner_account_id=owner,
        storage_class=p.get("StorageClass") or "STANDARD",
        headers=json.dumps(headers),
        metadata_=json.dumps(metadata),
        tags=json.dumps(tags),
        acl=stored_acl,
        checksums=json.dumps(sums),
        locator=stored.locator,
        body=stored.inline,
        **sealed.fields(),
        **object_lock.for_new_object(p, bucket),
    )
    objects.add(ctx.session, bucket, version, stored, WriteConditions.of(p))
    result: dict[str, Any] = {"ETag": version.etag, "LastModified": version.last_modified}
    if wanted:
        result[f"Checksum{wanted.upper()}"] = sums[wanted]
    out: dict[str, Any] = {"CopyObjectResult": result, **encryption.answer(sealed.sse, sealing.customer)}
    if bucket.versioning:
        out["VersionId"] = version.version_id
    if source_versioned:
        out["CopySourceVersionId"] = source.version_id
    return out
