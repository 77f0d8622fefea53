"""ListParts and ListMultipartUploads: reading the state of in-progress multipart uploads."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from sqlalchemy import or_, select, tuple_

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus.apis import S3
from mallee.services.walrus.buckets import get_bucket, owner_view
from mallee.services.walrus.multipart import (
    MAX_LISTED,
    check_sent_key,
    checksum_members,
    checksum_setting,
    find_upload,
)
from mallee.services.walrus.tables import Part, Upload


def max_items(value: Any) -> int:
    if value is None:
        return MAX_LISTED
    if not isinstance(value, int) or value < 0:
        raise CloudError("InvalidArgument", "Provided max value must be a non-negative integer")
    return min(value, MAX_LISTED)


@S3.operation()
def list_parts(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    upload = find_upload(ctx, bucket, p["Key"], p["UploadId"])
    check_sent_key(p, upload)
    max_parts = max_items(p.get("MaxParts"))
    marker = int(p.get("PartNumberMarker") or 0)
    rows = list(
        ctx.session.scalars(
            select(Part)
            .where(Part.upload_id == upload.upload_id, Part.part_number > marker)
            .order_by(Part.part_number)
            .limit(max_parts + 1)
        )
    )
    truncated = len(rows) > max_parts
    rows = rows[:max_parts]
    parts = [
        {
            "PartNumber": part.part_number,
            "LastModified": part.last_modified,
            "ETag": part.etag,
            "Size": part.size,
            **checksum_members(json.loads(part.checksum or "{}")),
        }
        for part in rows
    ]
    out: dict[str, Any] = {
        "Bucket": bucket.name,
        "Key": upload.key,
        "UploadId": upload.upload_id,
        "PartNumberMarker": marker,
        "MaxParts": max_parts,
        "IsTruncated": truncated,
        "Parts": parts,
        "Initiator": owner_view(upload.owner_account_id),
        "Owner": owner_view(upload.owner_account_id),
        "StorageClass": upload.storage_class,
    }
    if rows:
        out["NextPartNumberMarker"] = rows[-1].part_number
    algorithm, kind = checksum_setting(upload)
    if algorithm:
        out["ChecksumAlgorithm"] = algorithm.upper()
        out["ChecksumType"] = kind
    return out


def _upload_view(upload: Upload, encode: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "UploadId": upload.upload_id,
        "Key": quote(upload.key, safe="/") if encode else upload.key,
        "Initiated": upload.initiated,
        "StorageClass": upload.storage_class,
        "Owner": owner_view(upload.owner_account_id),
        "Initiator": owner_view(upload.owner_account_id),
    }
    algorithm, kind = checksum_setting(upload)
    if algorithm:
        view["ChecksumAlgorithm"] = algorithm.upper()
        view["ChecksumType"] = kind
    return view


@S3.operation()
def list_multipart_uploads(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    max_uploads = max_items(p.get("MaxUploads"))
    prefix, delimiter = p.get("Prefix") or "", p.get("Delimiter") or ""
    key_marker, id_marker = p.get("KeyMarker") or "", p.get("UploadIdMarker") or ""
    encode = p.get("EncodingType") == "url"
    q = select(Upload).where(Upload.bucket == bucket.name)
    if prefix:
        q = q.where(Upload.key.startswith(prefix, autoescape=True))
    if key_marker:
        after = Upload.key > key_marker
        marker_upload = ctx.session.get(Upload, id_marker) if id_marker else None
        if marker_upload is not None and marker_upload.key == key_marker:
            after = or_(
                after,
                (Upload.key == key_marker)
                & (
                    tuple_(Upload.initiated, Upload.upload_id)
                    > tuple_(marker_upload.initiated, marker_upload.upload_id)
                ),
            )
        q = q.where(after)
    q = q.order_by(Upload.key, Upload.initiated, Upload.upload_id)
    uploads: list[dict[str, Any]] = []
    prefixes: list[str] = []
    truncated = False
    last_key, last_id = "", ""
    for upload in ctx.session.scalars(q.execution_options(yield_per=500)):
        common = None
        if delimiter:
            rest = upload.key[len(prefix) :]
            cut = rest.find(delimiter)
            if cut >= 0:
                common = prefix + rest[: cut + len(delimiter)]
        if common is not None and (common == key_marker or (prefixes and prefixes[-1] == common)):
            continue
        if len(uploads) + len(prefixes) >= max_uploads:
            truncated = True
            break
        if common is not None:
            prefixes.append(common)
            last_key, last_id = common, ""
        else:
            uploads.append(_upload_view(upload, encode))
            last_key, last_id = upload.key, upload.upload_id
    out: dict[str, Any] = {
        "Bucket": bucket.name,
        "KeyMarker": key_marker,
        "UploadIdMarker": id_marker,
        "MaxUploads": max_uploads,
        "IsTruncated": truncated,
        "Uploads": uploads,
    }
    if prefix:
        out["Prefix"] = quote(prefix, safe="/") if encode else prefix
    if delimiter:
        out["Delimiter"] = quote(delimiter, safe="/") if encode else delimiter
    if prefixes:
        out["CommonPrefixes"] = [{"Prefix": quote(c, safe="/") if encode else c} for c in prefixes]
    if encode:
        out["EncodingType"] = "url"
    if truncated:
        out["NextKeyMarker"] = quote(last_key, safe="/") if encode else last_key
        out["NextUploadIdMarker"] = last_id
    return out
