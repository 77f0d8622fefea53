"""Listing a bucket: ListObjects (v1), ListObjectsV2 and ListObjectVersions.

Keys come back in UTF-8 byte order (the key column sorts that way; for valid Unicode strings it is
also Python's code-point order). A listing walks the index in key order with small LIMITed queries
and never holds more than one batch: when a key rolls up into a common prefix, the walk seeks past
every key sharing that prefix (`after_prefix`) instead of reading them. MaxKeys counts keys and
common prefixes together; a common prefix counts once, and the next page starts after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from sqlalchemy import and_, or_, select
from sqlalchemy.sql.elements import ColumnElement

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus.apis import S3
from mallee.services.walrus.buckets import get_bucket, owner_view
from mallee.services.walrus.tables import ObjectVersion
from mallee.services.walrus.tokens import continuation_token, token_marker

MAX_KEYS = 1000
BATCH = 1000
_MAX_CHAR = 0x10FFFF


def after_prefix(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix` (None: no such bound).

    Increment the last character that can be incremented (skipping the surrogate range, which
    UTF-8 cannot encode) and drop what follows it.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < _MAX_CHAR:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


def _max_keys(p: dict[str, Any]) -> int:
    value = p.get("MaxKeys")
    if value is None:
        return MAX_KEYS
    if value < 0:
        raise CloudError("InvalidArgument", "Argument maxKeys must be an integer between 0 and 2147483647")
    return min(int(value), MAX_KEYS)


def _encoding(p: dict[str, Any]) -> bool:
    kind = p.get("EncodingType")
    if kind is None:
        return False
    if kind != "url":
        raise CloudError("InvalidArgument", "Invalid Encoding Method specified in Request")
    return True


@dataclass(frozen=True)
class Start:
    """Where a walk starts: at `key` (inclusive) or just after it; for versions, after one of its
    versions (`version_row`: rows of `key` with a smaller id come next)."""

    key: str
    inclusive: bool = False
    version_row: int | None = None


def _start_after_marker(marker: str, prefix: str, delimiter: str) -> Start:
    """After `marker`; a marker that is itself a common prefix skips every key under it (S3 hands
    a common prefix back as NextMarker when a page ends on one)."""
    if delimiter and marker.startswith(prefix):
        rest = marker[len(prefix) :]
        cut = rest.find(delimiter)
        if cut >= 0 and cut + len(delimiter) == len(rest):
            bound = after_prefix(marker)
            return Start(bound, inclusive=True) if bound is not None else Start(marker)
    return Start(marker)


def _range(prefix: str, start: Start | None) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if prefix:
        conds.append(ObjectVersion.key >= prefix)
        upper = after_prefix(prefix)
        if upper is not None:
            conds.append(ObjectVersion.key < upper)
    if start is not None:
        if start.version_row is not None:
            conds.append(
                or_(
                    ObjectVersion.key > start.key,
                    and_(ObjectVersion.key == start.key, ObjectVersion.id < start.version_row),
                )
            )
        elif start.inclusive:
            conds.append(ObjectVersion.key >= start.key)
        else:
            conds.append(ObjectVersion.key > start.key)
    return conds


@dataclass
class Entry:
    """One item of a listing: an object version or a common prefix (`row` None)."""

    key: str
    row: ObjectVersion | None = None


def _walk(
    ctx: RequestContext, bucket: str, prefix: str, delimiter: str, start: Start | None, versions: bool
) -> Iterator[Entry]:
    """Entries in listing order, lazily, a LIMITed query at a time."""
    cursor = start
    while True:
        q = select(ObjectVersion).where(ObjectVersion.bucket == bucket, *_range(prefix, cursor))
        if versions:
            q = q.order_by(ObjectVersion.key, ObjectVersion.id.desc())
        else:
            q = q.where(ObjectVersion.is_latest, ObjectVersion.is_delete_marker.is_(False))
            q = q.order_by(ObjectVersion.key)
        rows = list(ctx.session.scalars(q.limit(BATCH)))
        skip_under: str | None = None
        for row in rows:
            if skip_under is not None and row.key.startswith(skip_under):
                continue
            skip_under = None
            common = _common_prefix(row.key, prefix, delimiter)
            if common is None:
                cursor = Start(row.key, version_row=row.id) if versions else Start(row.key)
                yield Entry(row.key, row)
                continue
            yield Entry(common)
            bound = after_prefix(common)
            if bound is None:
                return
            cursor = Start(bound, inclusive=True)
            skip_under = common
        if len(rows) < BATCH:
            return


def _common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    if not delimiter:
        return None
    cut = key.find(delimiter, len(prefix))
    if cut < 0:
        return None
    return key[: cut + len(delimiter)]


def _page(entries: Iterator[Entry], max_keys: int) -> tuple[list[Entry], bool]:
    page: list[Entry] = []
    if max_keys == 0:
        return page, False
    for entry in entries:
        if len(page) == max_keys:
            return page, True
        page.append(entry)
    return page, False


class _Encoder:
    def __init__(self, on: bool) -> None:
        self.on = on

    def __call__(self, value: str) -> str:
        return quote_plus(value, safe="/") if self.on else value


def _object_entry(row: ObjectVersion, enc: _Encoder, owner: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Key": enc(row.key),
        "LastModified": row.last_modified,
        "ETag": row.etag,
        "Size": row.size,
        "StorageClass": row.storage_class,
    }
    if owner:
        out["Owner"] = owner_view(row.owner_account_id)
    return out


def _common(
    out: dict[str, Any], p: dict[str, Any], bucket: str, max_keys: int, enc: _Encoder
) -> dict[str, Any]:
    out["Name"] = bucket
    out["Prefix"] = enc(p.get("Prefix") or "")
    out["MaxKeys"] = max_keys
    if p.get("Delimiter"):
        out["Delimiter"] = enc(p["Delimiter"])
    if enc.on:
        out["EncodingType"] = "url"
    return out


@S3.operation()
def list_objects(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    prefix, delimiter = p.get("Prefix") or "", p.get("Delimiter") or ""
    max_keys, enc = _max_keys(p), _Encoder(_encoding(p))
    marker = p.get("Marker") or ""
    start = _start_after_marker(marker, prefix, delimiter) if marker else None
    page, truncated = _page(_walk(ctx, bucket.name, prefix, delimiter, start, versions=False), max_keys)
    out: dict[str, Any] = {"IsTruncated": truncated, "Marker": enc(marker)}
    out["Contents"] = [_object_entry(e.row, enc, owner=True) for e in page if e.row is not None]
    out["CommonPrefixes"] = [{"Prefix": enc(e.key)} for e in page if e.row is None]
    if truncated and delimiter:
        out["NextMarker"] = enc(page[-1].key)  # S3 sends it only with a delimiter
    return _common(out, p, bucket.name, max_keys, enc)


@S3.operation()
def list_objects_v2(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    prefix, delimiter = p.get("Prefix") or "", p.get("Delimiter") or ""
    max_keys, enc = _max_keys(p), _Encoder(_encoding(p))
    token, start_after = p.get("ContinuationToken"), p.get("StartAfter") or ""
    start: Start | None = None
    if token is not None:
        start = _start_after_marker(token_marker(token), prefix, delimiter)
    elif start_after:
        start = Start(start_after)
    page, truncated = _page(_walk(ctx, bucket.name, prefix, delimiter, start, versions=False), max_keys)
    out: dict[str, Any] = {"IsTruncated": truncated, "KeyCount": len(page)}
    out["Contents"] = [
        _object_entry(e.row, enc, bool(p.get("FetchOwner"))) for e in page if e.row is not None
    ]
    out["CommonPrefixes"] = [{"Prefix": enc(e.key)} for e in page if e.row is None]
    if token is not None:
        out["ContinuationToken"] = token
    if start_after:
        out["StartAfter"] = enc(start_after)
    if truncated:
        out["NextContinuationToken"] = continuation_token(page[-1].key)
    return _common(out, p, bucket.name, max_keys, enc)


def _versions_start(
    ctx: RequestContext, bucket: str, p: dict[str, Any], prefix: str, delimiter: str
) -> Start | None:
    key_marker, version_marker = p.get("KeyMarker") or "", p.get("VersionIdMarker") or ""
    if version_marker and not key_marker:
        raise CloudError("InvalidArgument", "A version-id marker cannot be specified without a key marker.")
    if not key_marker:
        return None
    if not version_marker:
        return _start_after_marker(key_marker, prefix, delimiter)
    row_id = ctx.session.scalar(
        select(ObjectVersion.id).where(
            ObjectVersion.bucket == bucket,
            ObjectVersion.key == key_marker,
            ObjectVersion.version_id == version_marker,
        )
    )
    if row_id is None:
        raise CloudError("InvalidArgument", "Invalid version id specified")
    return Start(key_marker, version_row=row_id)


@S3.operation()
def list_object_versions(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    prefix, delimiter = p.get("Prefix") or "", p.get("Delimiter") or ""
    max_keys, enc = _max_keys(p), _Encoder(_encoding(p))
    start = _versions_start(ctx, bucket.name, p, prefix, delimiter)
    page, truncated = _page(_walk(ctx, bucket.name, prefix, delimiter, start, versions=True), max_keys)
    versions: list[dict[str, Any]] = []
    markers: list[dict[str, Any]] = []
    for e in page:
        row = e.row
        if row is None:
            continue
        common = {
            "Key": enc(row.key),
            "VersionId": row.version_id,
            "IsLatest": row.is_latest,
            "LastModified": row.last_modified,
            "Owner": owner_view(row.owner_account_id),
        }
        if row.is_delete_marker:
            markers.append(common)
        else:
            versions.append({**common, "ETag": row.etag, "Size": row.size, "StorageClass": row.storage_class})
    out: dict[str, Any] = {
        "IsTruncated": truncated,
        "KeyMarker": enc(p.get("KeyMarker") or ""),
        "VersionIdMarker": p.get("VersionIdMarker") or "",
        "Versions": versions,
        "DeleteMarkers": markers,
        "CommonPrefixes": [{"Prefix": enc(e.key)} for e in page if e.row is None],
    }
    if truncated:
        last = page[-1]
        out["NextKeyMarker"] = enc(last.key)
        if last.row is not None:
            out["NextVersionIdMarker"] = last.row.version_id
    return _common(out, p, bucket.name, max_keys, enc)
