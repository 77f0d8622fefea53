"""GetObjectAttributes: what HeadObject and ListParts tell of one object version, in one answer —
the ETag, Checksum, ObjectParts, StorageClass and ObjectSize that x-amz-object-attributes names.

Shaped as S3 answers it (AWS's API reference, and answers recorded from S3 in LocalStack's and
ceph's s3-tests suites):
- the ETag without quotes; the StorageClass always, STANDARD included;
- a composite checksum without its "-<parts>" suffix, beside its ChecksumType;
- ObjectParts for a multipart object only: its part count, and a page of its parts only when its
  checksum is COMPOSITE (S3 lists none for a FULL_OBJECT or checksum-less one).

Walrus keeps no checksum of each part once an upload completes (`ObjectVersion.parts` holds
locator, size, ETag and data key), so the parts listed carry their number and size only.
"""

from __future__ import annotations

import json
from typing import Any

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus.apis import S3
from mallee.services.walrus.authorize import authorize_object
from mallee.services.walrus.blob_reads import is_multipart
from mallee.services.walrus.buckets import read_bucket
from mallee.services.walrus.checksums import checksum_type
from mallee.services.walrus.multipart import checksum_members
from mallee.services.walrus.multipart_listing import max_items
from mallee.services.walrus.runtime import layer
from mallee.services.walrus.tables import ObjectVersion


@S3.operation()
def get_object_attributes(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    wanted = set(p.get("ObjectAttributes") or ())
    if not wanted:
        raise CloudError(
            "InvalidRequest",
            "The x-amz-object-attributes header specifying the attributes to be retrieved is either "
            "missing or empty",
        )
    bucket = read_bucket(ctx, p["Bucket"])
    # S3 asks for s3:GetObject(Version) too; the gateway checked s3:GetObject(Version)Attributes.
    # Before the read, so that a caller without it cannot tell which keys exist.
    authorize_object(ctx, "GetObject", bucket.name, p["Key"], p.get("VersionId"))
    objects = layer()
    # A delete marker: 404 NoSuchKey when it is the newest, 405 when named, as GetObject answers.
    version = objects.read(bucket.name, p["Key"], p.get("VersionId"), marker_headers=True)
    objects.reader_key(p, version.sse, version.sse_key_hmac)  # an SSE-C object needs its key
    sums: dict[str, str] = json.loads(version.checksums or "{}")
    out: dict[str, Any] = {"LastModified": version.last_modified}
    if bucket.versioning:
        out["VersionId"] = version.version_id
    if "ETag" in wanted:
        out["ETag"] = version.etag.strip('"')
    if "Checksum" in wanted and sums:
        out["Checksum"] = checksum_view(sums)
    if "ObjectParts" in wanted and is_multipart(version):
        out["ObjectParts"] = object_parts(version, checksum_type(sums) == "COMPOSITE", p)
    if "StorageClass" in wanted:
        out["StorageClass"] = version.storage_class
    if "ObjectSize" in wanted:
        out["ObjectSize"] = version.size
    return out


def checksum_view(sums: dict[str, str]) -> dict[str, str]:
    """The Checksum member: each value as S3 gives it here (no "-<parts>"), and its type."""
    view = checksum_members({algorithm: value.partition("-")[0] for algorithm, value in sums.items()})
    view["ChecksumType"] = checksum_type(sums)
    return view


def object_parts(version: ObjectVersion, composite: bool, p: dict[str, Any]) -> dict[str, Any]:
    """The ObjectParts member of a multipart object: the part count, and for a COMPOSITE one the
    page of parts after x-amz-part-number-marker (ListParts' paging over the completed parts, by
    their upload's part numbers; versions completed before those were kept count 1.. in order)."""
    entries = json.loads(version.parts or "[]")
    out: dict[str, Any] = {"TotalPartsCount": len(entries)}
    if not composite:
        return out
    parts = [_part_view(n, entry) for n, entry in enumerate(entries, 1)]
    max_parts = max_items(p.get("MaxParts"))
    marker = int(p.get("PartNumberMarker") or 0)
    after = [part for part in parts if part["PartNumber"] > marker]
    page = after[:max_parts]
    out.update(
        PartNumberMarker=marker,
        NextPartNumberMarker=page[-1]["PartNumber"] if page else 0,  # S3: 0 past the last part
        MaxParts=max_parts,
        IsTruncated=len(after) > len(page),
    )
    if page:
        out["Parts"] = page
    return out


def _part_view(position: int, entry: list[Any]) -> dict[str, Any]:
    """One part of ObjectParts (a `parts` entry: see multipart._part_entry)."""
    view: dict[str, Any] = {"PartNumber": entry[4] if len(entry) > 4 else position, "Size": int(entry[1])}
    if len(entry) > 5:
        view.update(checksum_members(entry[5]))
    return view
