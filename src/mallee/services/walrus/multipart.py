"""Multipart uploads: CreateMultipartUpload, UploadPart, UploadPartCopy, CompleteMultipartUpload,
AbortMultipartUpload (ListParts and ListMultipartUploads: `multipart_listing`).

Every part is its own blob. Completing an upload writes no bytes: one transaction creates the
object version pointing at the parts' blobs in order (`ObjectVersion.parts`) and deletes the upload's
rows, so readers see either no object or the whole one. Blobs no row points at any more (replaced,
unused or aborted parts) are queued as garbage in the same transaction.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any
from urllib.parse import quote

from sqlalchemy import delete, select

from mallee.core import clock
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus import checksums, encryption, garbage
from mallee.services.walrus.apis import S3
from mallee.services.walrus.authorize import authorize_object
from mallee.services.walrus.blob_reads import Opened, close, copy_body, reading
from mallee.services.walrus.bodies import ReceivedBody, receive_body
from mallee.services.walrus.buckets import get_bucket
from mallee.services.walrus.copy import (
    check_source_conditions,
    open_copy_source,
    parse_copy_source,
    read_source,
)
from mallee.services.walrus.encryption import CustomerKey, Sealing
from mallee.services.walrus.not_found import no_such_upload
from mallee.services.walrus.object_layer import Sealed, WriteConditions
from mallee.services.walrus.objects import check_key, check_storage_class, described
from mallee.services.walrus.runtime import layer, object_store
from mallee.services.walrus.tables import Bucket, ObjectVersion, Part, Upload

MIN_PART = 5 * 1024 * 1024  # every part but the last must be at least this big
MAX_PART = 5 * 1024**3
MAX_PART_NUMBER = 10000
MAX_LISTED = 1000
# The upload's id is recorded in the version it completes, so a retried Complete can find it.
UPLOAD_ID_HEADER = "x-mallee-upload-id"
# Full-object checksums only exist for the CRCs (their values over parts can be combined).
_FULL_OBJECT_ALGORITHMS = ("crc32", "crc32c", "crc64nvme")


_PART_ORDER = (
    "The list of parts was not in ascending order. The parts list must be specified in order by part number."
)
_INVALID_PART = (
    "One or more of the specified parts could not be found. The part may not have been uploaded, "
    "or the specified entity tag may not match the part's entity tag."
)


def check_sent_key(p: dict[str, Any], upload: Upload) -> None:
    """An SSE-C key that CompleteMultipartUpload or ListParts need not send, but, when they do,
    must be the upload's."""
    if CustomerKey.of(p) is not None:
        layer().reader_key(p, upload.sse, upload.sse_key_hmac)


def find_upload(ctx: RequestContext, bucket: Bucket, key: str, upload_id: str) -> Upload:
    upload: Upload | None = ctx.session.get(Upload, upload_id)
    if upload is None or upload.bucket != bucket.name or upload.key != key:
        raise no_such_upload(upload_id)
    return upload


def _check_part_number(number: Any) -> int:
    if not isinstance(number, int) or not 1 <= number <= MAX_PART_NUMBER:
        raise CloudError("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive")
    return number


# -- checksum settings of an upload: Upload.checksum_algorithm holds "crc32" or "crc32:FULL_OBJECT" --


def checksum_setting(upload: Upload) -> tuple[str, str]:
    """(algorithm in lower case or "", "COMPOSITE" | "FULL_OBJECT" | "")."""
    algorithm, _, kind = (upload.checksum_algorithm or "").partition(":")
    if not algorithm:
        return "", ""
    return algorithm, kind or "COMPOSITE"


def _encode_setting(p: dict[str, Any]) -> str:
    algorithm = (p.get("ChecksumAlgorithm") or "").lower()
    kind = (p.get("ChecksumType") or "").upper()
    if kind and not algorithm:
        raise CloudError(
            "InvalidRequest", "The x-amz-checksum-type header requires x-amz-checksum-algorithm."
        )
    if not algorithm:
        return ""
    if algorithm not in checksums.ALGORITHMS:
        raise CloudError("InvalidRequest", f"Checksum algorithm {algorithm} is not supported.")
    if not kind:
        kind = "FULL_OBJECT" if algorithm == "crc64nvme" else "COMPOSITE"
    if kind not in ("COMPOSITE", "FULL_OBJECT"):
        raise CloudError("InvalidRequest", f"Value for x-amz-checksum-type header is invalid: {kind}")
    if kind == "FULL_OBJECT" and algorithm not in _FULL_OBJECT_ALGORITHMS:
        raise CloudError("InvalidRequest", f"The {algorithm.upper()} algorithm does not support FULL_OBJECT.")
    if kind == "COMPOSITE" and algorithm == "crc64nvme":
        raise CloudError("InvalidRequest", "The CRC64NVME algorithm supports only the FULL_OBJECT type.")
    return algorithm if kind == "COMPOSITE" else f"{algorithm}:{kind}"


def checksum_members(values: dict[str, str]) -> dict[str, str]:
    return {f"Checksum{algorithm.upper()}": value for algorithm, value in values.items()}


# -- CreateMultipartUpload ------------------------------------------------------------------------


@S3.operation()
def create_multipart_upload(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    check_key(p["Key"])
    check_storage_class(p.get("StorageClass"))
    assert ctx.account_id is not None
    setting = _encode_setting(p)
    objects = layer()
    sealing = objects.sealing(p, bucket)  # each part gets a data key of its own under it
    upload = Upload(
        upload_id=secrets.token_urlsafe(48),
        bucket=bucket.name,
        key=p["Key"],
        initiated=clock.now(),
        **described(ctx, p, bucket),
        checksum_algorithm=setting,
        sse=sealing.mode,
        sse_key_hmac=objects.key_hmac(sealing),
    )
    ctx.session.add(upload)
    ctx.session.flush()
    out: dict[str, Any] = {"Bucket": bucket.name, "Key": upload.key, "UploadId": upload.upload_id}
    out.update(encryption.answer(sealing.mode, sealing.customer))
    algorithm, kind = checksum_setting(upload)
    if algorithm:
        out["ChecksumAlgorithm"] = algorithm.upper()
        out["ChecksumType"] = kind
    return out


# -- UploadPart / UploadPartCopy --------------------------------------------------------------------


def _store_part(
    ctx: RequestContext, upload: Upload, number: int, received: ReceivedBody, sse_key: str
) -> None:
    """Record a part's new blob (replacing the part's earlier one); `sse_key`: its data key, wrapped."""
    s = ctx.session
    locator = received.stored.locator
    assert locator is not None  # parts are always blobs
    fields = dict(
        size=received.stored.size,
        etag=received.etag,
        locator=locator,
        last_modified=clock.now(),
        checksum=json.dumps(received.checksums),
        sse_key=sse_key,
    )
    existing: Part | None = s.get(Part, (upload.upload_id, number))
    if existing is not None:
        garbage.queue(s, [existing.locator])
        for name, value in fields.items():
            setattr(existing, name, value)
    else:
        s.add(Part(upload_id=upload.upload_id, part_number=number, **fields))
    s.flush()


def _check_part_checksums(upload: Upload, received: dict[str, str]) -> None:
    """A part carries checksums of its upload's algorithm only."""
    algorithm, _ = checksum_setting(upload)
    others = [a for a in received if a != algorithm]
    if algorithm and others:
        raise CloudError(
            "InvalidRequest",
            f"Checksum Type mismatch occurred, expected checksum Type: {algorithm}, "
            f"actual checksum Type: {others[0]}",
        )


def _part_sealed(p: dict[str, Any], upload: Upload) -> tuple[Sealed, CustomerKey | None]:
    """A new part's encryption: its upload's, under a data key of its own (an SSE-C upload's parts
    must carry the upload's key)."""
    objects = layer()
    customer = objects.reader_key(p, upload.sse, upload.sse_key_hmac)
    return objects.seal(Sealing(upload.sse, customer)), customer


@S3.operation()
def upload_part(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    number = _check_part_number(p.get("PartNumber"))
    upload = find_upload(ctx, bucket, p["Key"], p["UploadId"])
    sealed, customer = _part_sealed(p, upload)
    algorithm, _ = checksum_setting(upload)
    store = object_store()
    received = receive_body(
        ctx, store, limit=MAX_PART, cipher=sealed.cipher, also=(algorithm,) if algorithm else ()
    )
    try:
        _check_part_checksums(upload, received.checksums)
        _store_part(ctx, upload, number, received, sealed.sse_key)
    except BaseException:
        received.stored.discard(store)
        raise
    return {
        "ETag": received.etag,
        **checksum_members(received.checksums),
        **encryption.answer(upload.sse, customer),
    }


def _copy_range(header: str | None, size: int) -> tuple[int, int]:
    if not header:
        return 0, size
    spec = header.strip()
    first, sep, last = spec.removeprefix("bytes=").partition("-")
    if not spec.startswith("bytes=") or not sep or not first.isdigit() or not last.isdigit():
        raise CloudError(
            "InvalidArgument", "The x-amz-copy-source-range value must be of the form bytes=first-last"
        )
    start, end = int(first), int(last)
    if end < start or end >= size:
        raise CloudError("InvalidRange", f"The requested range is not satisfiable (object size {size})", 416)
    return start, end - start + 1


@S3.operation()
def upload_part_copy(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    number = _check_part_number(p.get("PartNumber"))
    upload = find_upload(ctx, bucket, p["Key"], p["UploadId"])
    source_bucket_name, source_key, source_version = parse_copy_source(p["CopySource"])
    source_bucket = get_bucket(ctx, source_bucket_name)
    authorize_object(
        ctx, "GetObject", source_bucket.name, source_key, source_version, p.get("ExpectedSourceBucketOwner")
    )

    def open_range() -> tuple[ObjectVersion, Opened]:
        source = read_source(ctx, source_bucket.name, source_key, source_version)
        check_source_conditions(source, p)
        offset, length = _copy_range(p.get("CopySourceRange"), source.size)
        if length > MAX_PART:
            raise CloudError("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
        return source, open_copy_source(p, source, offset, length)

    sealed, customer = _part_sealed(p, upload)
    source, pieces = reading(open_range)
    algorithm, _ = checksum_setting(upload)
    try:
        copied = copy_body(pieces, checksums.Hashers([algorithm] if algorithm else []), cipher=sealed.cipher)
    finally:
        close(pieces)
    try:
        _store_part(ctx, upload, number, copied, sealed.sse_key)
    except BaseException:
        copied.stored.discard(object_store())
        raise
    result: dict[str, Any] = {
        "ETag": copied.etag,
        "LastModified": clock.now(),
        **checksum_members(copied.checksums),
    }
    out: dict[str, Any] = {"CopyPartResult": result, **encryption.answer(upload.sse, customer)}
    if source_bucket.versioning:
        out["CopySourceVersionId"] = source.version_id
    return out


# -- CompleteMultipartUpload ---------------------------------------------------------------------


def _part_entry(part: Part) -> list[Any]:
    """A completed part as its version's `parts` keeps it: [locator, size, ETag, wrapped data key
    ("" in clear), part number, checksums] (versions made before the last three have only three)."""
    return [
        part.locator,
        part.size,
        part.etag,
        part.sse_key,
        part.part_number,
        json.loads(part.checksum or "{}"),
    ]


def _plain_etag(etag: str) -> str:
    return etag.strip().strip('"')


def multipart_etag(part_etags: list[str]) -> str:
    """S3's ETag of a multipart object: md5 of the parts' binary md5s, then -<number of parts>."""
    digests = b"".join(bytes.fromhex(_plain_etag(e)) for e in part_etags)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(part_etags)}"'


def _combine_crcs(algorithm: str, parts: list[tuple[str, int]]) -> str:
    from awscrt import checksums as crt

    combine = {"crc32": crt.combine_crc32, "crc32c": crt.combine_crc32c, "crc64nvme": crt.combine_crc64nvme}
    width = 8 if algorithm == "crc64nvme" else 4
    total = 0
    for index, (value, size) in enumerate(parts):
        crc = int.from_bytes(base64.b64decode(value), "big")
        total = crc if index == 0 else combine[algorithm](total, crc, size)
    return base64.b64encode(total.to_bytes(width, "big")).decode()


def _object_checksum(upload: Upload, chosen: list[Part]) -> dict[str, str]:
    algorithm, kind = checksum_setting(upload)
    if not algorithm:
        return {}
    values: list[str] = []
    for part in chosen:
        value = json.loads(part.checksum or "{}").get(algorithm)
        if value is None:  # uploaded before a checksum could be computed: none for the object
            return {}
        values.append(value)
    if kind == "FULL_OBJECT":
        return {
            algorithm: _combine_crcs(
                algorithm, [(v, part.size) for v, part in zip(values, chosen, strict=True)]
            )
        }
    hasher = checksums.Hashers([algorithm])
    for value in values:
        hasher.update(base64.b64decode(value))
    composite = hasher.values()[algorithm]
    return {algorithm: f"{composite}-{len(chosen)}"}


def _complete_retry(ctx: RequestContext, bucket: Bucket, p: dict[str, Any]) -> dict[str, Any] | None:
    """A Complete retried after it succeeded: S3 answers with the object it made (same parts)."""
    marker = json.dumps({UPLOAD_ID_HEADER: p["UploadId"]})[1:-1]
    version: ObjectVersion | None = ctx.session.scalar(
        select(ObjectVersion).where(
            ObjectVersion.bucket == bucket.name,
            ObjectVersion.key == p["Key"],
            ObjectVersion.headers.contains(marker),
        )
    )
    if version is None:
        return None
    listed = (p.get("MultipartUpload") or {}).get("Parts") or []
    if multipart_etag([str(part.get("ETag", "")) for part in listed]) != version.etag:
        return None
    return _complete_answer(ctx, bucket, version)


def _complete_answer(ctx: RequestContext, bucket: Bucket, version: ObjectVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Location": f"/{bucket.name}/{quote(version.key)}",
        "Bucket": bucket.name,
        "Key": version.key,
        "ETag": version.etag,
    }
    sums = json.loads(version.checksums or "{}")
    out.update(checksum_members(sums))
    if sums:
        out["ChecksumType"] = checksums.checksum_type(sums)
    if bucket.versioning:
        out["VersionId"] = version.version_id
    out.update(encryption.answer(version.sse, None))
    return out


@S3.operation()
def complete_multipart_upload(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    s = ctx.session
    upload: Upload | None = s.get(Upload, p["UploadId"])
    if upload is None or upload.bucket != bucket.name or upload.key != p["Key"]:
        retried = _complete_retry(ctx, bucket, p) if upload is None else None
        if retried is not None:
            return retried
        raise no_such_upload(p["UploadId"])
    check_sent_key(p, upload)
    listed = (p.get("MultipartUpload") or {}).get("Parts") or []
    if not listed:
        raise CloudError(
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our published schema",
        )
    stored = {
        part.part_number: part for part in s.scalars(select(Part).where(Part.upload_id == upload.upload_id))
    }
    algorithm, kind = checksum_setting(upload)
    chosen: list[Part] = []
    previous = 0
    for item in listed:
        number = item.get("PartNumber")
        if not isinstance(number, int) or number <= previous:
            raise CloudError("InvalidPartOrder", _PART_ORDER)
        previous = number
        part = stored.get(number)
        if part is None or _plain_etag(str(item.get("ETag") or "")) != _plain_etag(part.etag):
            raise CloudError("InvalidPart", _INVALID_PART)
        part_sums = json.loads(part.checksum or "{}")
        for name, value in item.items():
            if name.startswith("Checksum") and value is not None:
                sent_algorithm = name[len("Checksum") :].lower()
                if part_sums.get(sent_algorithm) not in (None, value) or (
                    algorithm and sent_algorithm != algorithm
                ):
                    message = f"The {sent_algorithm.upper()} checksum of part {number} does not match."
                    raise CloudError("InvalidPart", message)
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < MIN_PART:
            raise CloudError(
                "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size"
            )
    total = sum(part.size for part in chosen)
    sums = _object_checksum(upload, chosen)
    if algorithm and kind == "FULL_OBJECT" and sums:
        sent = p.get(f"Checksum{algorithm.upper()}")
        if sent is not None and sent != sums[algorithm]:
            raise CloudError(
                "BadDigest", f"The {algorithm.upper()} you specified did not match the calculated checksum."
            )
    if p.get("MpuObjectSize") is not None and int(p["MpuObjectSize"]) != total:
        raise CloudError("InvalidRequest", "The provided MpuObjectSize does not match the object's size.")
    # The upload row goes first: of two concurrent Completes only one deletes it.
    gone = s.execute(delete(Upload).where(Upload.upload_id == upload.upload_id))
    if getattr(gone, "rowcount", 1) != 1:
        raise no_such_upload(upload.upload_id)
    used = {part.part_number for part in chosen}
    garbage.queue(s, [part.locator for number, part in stored.items() if number not in used])
    s.execute(delete(Part).where(Part.upload_id == upload.upload_id))
    headers = json.loads(upload.headers or "{}")
    headers[UPLOAD_ID_HEADER] = upload.upload_id
    version = ObjectVersion(
        bucket=bucket.name,
        key=upload.key,
        version_id=layer().new_version_id(bucket),
        is_latest=True,
        size=total,
        etag=multipart_etag([part.etag for part in chosen]),
        last_modified=clock.now(),
        owner_account_id=upload.owner_account_id,
        storage_class=upload.storage_class,
        headers=json.dumps(headers),
        metadata_=upload.metadata_,
        tags=upload.tags,
        acl=upload.acl,
        checksums=json.dumps(sums),
        parts=json.dumps([_part_entry(part) for part in chosen]),
        locator=None,
        sse=upload.sse,
        sse_key_hmac=upload.sse_key_hmac,  # each part's data key is in `parts`
        lock_mode=upload.lock_mode,
        lock_until=upload.lock_until,
        legal_hold=upload.legal_hold,
    )
    layer().add(s, bucket, version, conditions=WriteConditions.of(p))
    return _complete_answer(ctx, bucket, version)


# -- AbortMultipartUpload ---------------------------------------------------------------------------


@S3.operation()
def abort_multipart_upload(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    upload = find_upload(ctx, bucket, p["Key"], p["UploadId"])
    layer().drop_upload(ctx.session, upload)
    return {}
