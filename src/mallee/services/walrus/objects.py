"""Objects: PutObject, GetObject, HeadObject, DeleteObject, with versions and conditional reads."""

from __future__ import annotations

import datetime as _dt
import json
import secrets
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import parse_qsl

from sqlalchemy import Table, bindparam, delete, insert, inspect, or_, select, update
from sqlalchemy.orm import Session

from mallee.core import clock
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.db.prepared import first_row, prepared, session_cursor
from mallee.db.session import Database, hold_write_lock
from mallee.protocol.scalars import format_timestamp
from mallee.protocol.serializer import STATUS_OVERRIDE
from mallee.services.walrus import acl, garbage
from mallee.services.walrus.apis import S3
from mallee.services.walrus.blob_reads import is_multipart, open_body, part_sizes, reading
from mallee.services.walrus.bodies import INLINE_MAX, receive_body
from mallee.services.walrus.buckets import get_bucket, read_bucket
from mallee.services.walrus.not_found import no_such_key
from mallee.services.walrus.ranges import parse_range
from mallee.services.walrus.runtime import database, deferred_commits, object_store, quotas, writer
from mallee.services.walrus.tables import Bucket, ObjectVersion

# Object headers S3 stores and returns as they were sent: output member -> input member.
STORED_HEADERS = ("ContentType", "ContentEncoding", "ContentDisposition", "ContentLanguage", "CacheControl",
                  "WebsiteRedirectLocation")  # fmt: skip
MAX_KEY_BYTES = 1024
# The storage classes a general-purpose bucket takes (S3 refuses the others: directory buckets'
# EXPRESS_ONEZONE, OUTPOSTS, SNOW, FSX_*, and anything else).
STORAGE_CLASSES = frozenset(("STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA",
                             "INTELLIGENT_TIERING", "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR"))  # fmt: skip


# Core statements for the hot paths, built once (those run on DB-API cursors: see db.prepared).
_TABLE = cast(Table, ObjectVersion.__table__)
_COLUMN_OF = {attr.key: attr.columns[0] for attr in ObjectVersion.__mapper__.column_attrs}
_new_version = ObjectVersion.__mapper__.class_manager.new_instance
# (attribute, column name, value when not given) of every column a new version inserts
_INSERTED = [
    (attr, col.key, col.default.arg if col.default is not None and col.default.is_scalar else None)
    for attr, col in _COLUMN_OF.items()
    if not col.primary_key
]
# The rows a new version of a key changes: the newest one, and the "null" one it may replace. One
# indexed lookup per key (SQLite answers `(bucket, key) IN (VALUES ...)` by scanning the table).
_CURRENT = select(
    _TABLE.c.id, _TABLE.c.version_id, _TABLE.c.is_latest, _TABLE.c.locator, _TABLE.c.parts,
).where(
    _TABLE.c.bucket == bindparam("bucket"),
    _TABLE.c.key == bindparam("key"),
    or_(_TABLE.c.is_latest, _TABLE.c.version_id == "null"),
)  # fmt: skip
_BY_ID = _TABLE.c.id == bindparam("row_id")
_UNSET_LATEST = update(_TABLE).where(_BY_ID).values(is_latest=False)
_DELETE_BY_ID = delete(_TABLE).where(_BY_ID)
_INSERT = insert(_TABLE).values(
    {name: bindparam(name, type_=_TABLE.c[name].type) for _, name, _ in _INSERTED}
)


def check_key(key: str) -> None:
    if not key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise CloudError("KeyTooLongError", "Your key is too long", 400)


def check_storage_class(value: str | None) -> None:
    if value is not None and value not in STORAGE_CLASSES:
        raise CloudError("InvalidStorageClass", "The storage class you specified is not valid", 400)


def new_version_id(bucket: Bucket) -> str:
    return secrets.token_urlsafe(24) if bucket.versioning == "Enabled" else "null"


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


def loose_version(fields: Mapping[Any, Any]) -> ObjectVersion:
    """An ObjectVersion of these attributes for no session (one read, or one for `add_versions`),
    filled the way the ORM fills what it loads: its constructor's attribute events cost a small
    GET or PUT ~10 % of its CPU."""
    version: ObjectVersion = _new_version()
    version.__dict__.update(fields)
    return version


def add_version(s: Session, bucket: Bucket, version: ObjectVersion) -> None:
    """Make `version` the newest of its key in `bucket` (see `add_versions`)."""
    assert version.bucket == bucket.name
    add_versions(s, [version])


def add_versions(s: Session, versions: list[ObjectVersion]) -> list[None]:
    """Make each version the newest of its key, in order; outside versioning a version replaces
    the key's previous "null" one (its blobs go to the garbage queue), even one earlier in the list.

    A few prepared statements on the session's DB-API connection for the whole list (the group
    committer batches every PUT's new version through this): the versions stay out of the
    session, and versions the session loaded are not updated."""
    s.flush()  # the session's own changes first, in order
    keys = list(dict.fromkeys((v.bucket, v.key) for v in versions))
    # A request's session too: what it reads as newest stays so until it commits.
    hold_write_lock(s, [key_lock(bucket, key) for bucket, key in keys])
    with session_cursor(s) as (dialect, cursor):
        current = {
            (bucket, key): prepared(dialect, _CURRENT).all(cursor, {"bucket": bucket, "key": key})
            for bucket, key in keys
        }
    unset: set[int] = set()
    dropped: set[int] = set()
    blobs: list[str] = []
    rows: list[dict[str, Any] | None] = []  # to insert; None: replaced within this list
    for version in versions:
        older = current[version.bucket, version.key]
        for row in older:  # what was newest stops being so (a row of this list included)
            if row["is_latest"]:
                row["is_latest"] = False
                if "id" in row:
                    unset.add(row["id"])
        if version.version_id == "null":
            for row in [r for r in older if r["version_id"] == "null"]:
                older.remove(row)
                blobs += garbage.blobs_of(row["locator"], row["parts"])
                if "id" in row:
                    dropped.add(row["id"])
                else:  # a new row of this list (rows without an id)
                    rows[next(n for n, r in enumerate(rows) if r is row)] = None
        given = inspect(version).dict  # the attributes it was given (the rest take column defaults)
        new = {name: given.get(attr, default) for attr, name, default in _INSERTED}
        rows.append(new)
        older.append(new)
    if blobs:
        garbage.queue(s, blobs)
    with session_cursor(s) as (dialect, cursor):
        for statement, ids in ((_UNSET_LATEST, unset - dropped), (_DELETE_BY_ID, dropped)):
            prepared(dialect, statement).execute_many(cursor, [{"row_id": n} for n in sorted(ids)])
        prepared(dialect, _INSERT).execute_many(cursor, [row for row in rows if row is not None])
    return [None] * len(versions)


def key_lock(bucket: str, key: str) -> str:
    """The name of a key's write lock (`hold_write_lock`): held by whoever changes its versions."""
    return f"{bucket}/{key}"


def find_version(
    ctx: RequestContext, bucket: str, key: str, version_id: str | None, *, marker_headers: bool = False
) -> ObjectVersion:
    """The version a request names, in the request's session. `marker_headers`: when it is a delete
    marker, say so in the error's headers (x-amz-delete-marker, x-amz-version-id), as S3 does for
    GetObject/HeadObject."""
    q = select(ObjectVersion).where(ObjectVersion.bucket == bucket, ObjectVersion.key == key)
    found: ObjectVersion | None = ctx.session.scalar(
        q.where(ObjectVersion.version_id == version_id) if version_id else q.where(ObjectVersion.is_latest)
    )
    return _readable(found, key, version_id, marker_headers)


# Every column labelled with its attribute's name, so that a row builds an ObjectVersion.
_COLUMNS = [column.label(attr) for attr, column in _COLUMN_OF.items()]
_BY_KEY = select(*_COLUMNS).where(_TABLE.c.bucket == bindparam("bucket"), _TABLE.c.key == bindparam("key"))
_LATEST = _BY_KEY.where(_TABLE.c.is_latest)
_VERSION = _BY_KEY.where(_TABLE.c.version_id == bindparam("version_id"))


def read_version(
    db: Database, bucket: str, key: str, version_id: str | None, *, marker_headers: bool = False
) -> ObjectVersion:
    """`find_version` for handlers that only read it (GetObject, HeadObject: the hot path). One
    prepared query on a DB-API connection instead of ORM loading (several times cheaper); the
    version it returns belongs to no session."""
    params = {"bucket": bucket, "key": key, "version_id": version_id}
    row = first_row(db.engine, _VERSION if version_id else _LATEST, params)
    found = loose_version(row) if row is not None else None
    return _readable(found, key, version_id, marker_headers)


def _readable(
    found: ObjectVersion | None, key: str, version_id: str | None, marker_headers: bool
) -> ObjectVersion:
    if found is None:
        raise no_such_key(key, version_id)
    if found.is_delete_marker:
        marker = [("x-amz-delete-marker", "true"), ("x-amz-version-id", found.version_id)]
        marker = marker if marker_headers else []
        if version_id:
            raise CloudError(
                "MethodNotAllowed", "The specified method is not allowed against this resource.", 405, marker
            )
        raise no_such_key(key, headers=marker)
    return found


@S3.operation()
def put_object(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = read_bucket(p["Bucket"])
    check_key(p["Key"])
    check_storage_class(p.get("StorageClass"))
    received = receive_body(ctx, object_store(), keep_up_to=INLINE_MAX)
    stored = received.stored
    assert ctx.account_id is not None
    version = loose_version(
        dict(
            bucket=bucket.name,
            key=p["Key"],
            version_id=new_version_id(bucket),
            is_latest=True,
            size=stored.size,
            etag=received.etag,
            last_modified=clock.now(),
            owner_account_id=ctx.account_id,
            **described(ctx, p, bucket),
            checksums=json.dumps(received.checksums),
            locator=stored.locator,
            body=stored.inline,
        )
    )
    try:
        quotas().check(bucket.owner_account_id, 1, stored.size)
        # Committed with other requests' new versions (group commit): a blob is durable already, a
        # small body is made durable by this commit.
        pending = deferred_commits.get()
        if pending is not None and stored.locator is None:  # on the event loop: it commits, then answers
            pending.append(writer().defer(add_versions, version))
        else:
            writer().run_batched(add_versions, version)
    except BaseException:
        stored.discard(object_store())
        raise
    out: dict[str, Any] = {"ETag": received.etag}
    if bucket.versioning:
        out["VersionId"] = version.version_id
    for algorithm, value in received.checksums.items():
        out[f"Checksum{algorithm.upper()}"] = value
    return out


def described(ctx: RequestContext, p: dict[str, Any], bucket: Bucket) -> dict[str, Any]:
    """What a PutObject or CreateMultipartUpload request says of the object it makes: storage
    class, content headers, user metadata, tags and ACL (ObjectVersion and Upload columns alike)."""
    assert ctx.account_id is not None
    return {
        "storage_class": p.get("StorageClass") or "STANDARD",
        "headers": json.dumps(stored_headers(p)),
        "metadata_": json.dumps(p.get("Metadata") or {}),
        "tags": json.dumps(_tags_from_header(p.get("Tagging"))),
        "acl": acl.acl_from_params(p, ctx.account_id, bucket.owner_account_id),
    }


def _tags_from_header(value: str | None) -> list[dict[str, str]]:
    if not value:
        return []
    return [{"Key": k, "Value": v} for k, v in parse_qsl(value, keep_blank_values=True)]


def object_view(version: ObjectVersion, p: dict[str, Any], versioned: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ETag": version.etag,
        "LastModified": version.last_modified,
        "ContentLength": version.size,
        "AcceptRanges": "bytes",
        "Metadata": json.loads(version.metadata_ or "{}"),
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
        for algorithm, value in json.loads(version.checksums or "{}").items():
            out[f"Checksum{algorithm.upper()}"] = value
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
    bucket = read_bucket(p["Bucket"])
    version = read_version(database(), bucket.name, p["Key"], p.get("VersionId"), marker_headers=True)
    check_conditions(version, p)
    out = object_view(version, p, bool(bucket.versioning))
    offset, length = 0, version.size
    if p.get("PartNumber") is not None:
        offset, length = select_part(version, p, out)
    elif p.get("Range"):
        offset, length = select_range(version, p["Range"], out)
    out["ContentLength"] = length
    out["Body"] = open_body(version, offset, length)
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
    bucket = read_bucket(p["Bucket"])
    version = read_version(database(), bucket.name, p["Key"], p.get("VersionId"), marker_headers=True)
    check_conditions(version, p)
    out = object_view(version, p, bool(bucket.versioning))
    if p.get("PartNumber") is not None:
        out["ContentLength"] = select_part(version, p, out)[1]
    elif p.get("Range"):  # only the length changes, as on S3
        out["ContentLength"] = select_range(version, p["Range"], out)[1]
    return out


@S3.operation()
def delete_object(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    return delete_one(ctx, bucket, p["Key"], p.get("VersionId"))


def delete_one(ctx: RequestContext, bucket: Bucket, key: str, version_id: str | None) -> dict[str, Any]:
    s = ctx.session
    hold_write_lock(s, [key_lock(bucket.name, key)])  # which version is newest stays so meanwhile
    if version_id:
        found = s.scalar(
            select(ObjectVersion).where(
                ObjectVersion.bucket == bucket.name,
                ObjectVersion.key == key,
                ObjectVersion.version_id == version_id,
            )
        )
        if found is None:
            return {"VersionId": version_id}  # deleting what is not there succeeds, as on S3
        was_latest, marker = found.is_latest, found.is_delete_marker
        garbage.discard(s, found)
        s.flush()
        if was_latest:
            _promote_newest(ctx, bucket.name, key)
        out: dict[str, Any] = {"VersionId": version_id}
        if marker:
            out["DeleteMarker"] = True
        return out
    if bucket.versioning:
        assert ctx.account_id is not None
        marker_version = ObjectVersion(
            bucket=bucket.name,
            key=key,
            version_id=new_version_id(bucket),
            is_latest=True,
            is_delete_marker=True,
            last_modified=clock.now(),
            owner_account_id=ctx.account_id,
        )
        add_version(s, bucket, marker_version)
        return {"DeleteMarker": True, "VersionId": marker_version.version_id}
    for old in s.scalars(
        select(ObjectVersion).where(ObjectVersion.bucket == bucket.name, ObjectVersion.key == key)
    ):
        garbage.discard(s, old)
    return {}


def _promote_newest(ctx: RequestContext, bucket: str, key: str) -> None:
    newest = ctx.session.scalar(
        select(ObjectVersion)
        .where(ObjectVersion.bucket == bucket, ObjectVersion.key == key)
        .order_by(ObjectVersion.id.desc())
        .limit(1)
    )
    if newest is not None:
        newest.is_latest = True
