"""The object layer: the one owner of object versions. Handlers turn an S3 request into one call
here and its answer back into S3's; nothing else writes the `object_versions` table.

The version rule lives in `add_versions` and nowhere else: a new version (an object, or a delete
marker) becomes its key's newest; in a bucket whose versioning is not Enabled it gets the id
"null" and replaces the key's previous "null" version; whatever a write or delete stops pointing at
goes to the garbage queue in the same transaction (blobs are deleted once it committed).

Behind it, the machinery that makes it fast and safe, kept out of the handlers:
- key locks (`hold_write_lock` on "bucket/key"): whoever changes a key's versions holds its lock,
  several keys' in one order;
- group commit: a PutObject's new version commits with other requests' (`GroupCommitter`), or, on
  the event loop, is deferred to a commit the loop awaits (`deferred_commits`);
- prepared statements on the DB-API connection for the hot reads and writes (`db.prepared`);
- conditional writes (If-Match / If-None-Match) checked under the key's lock, at commit;
- encryption at rest (`encryption`): each new blob or row under a data key of its own.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import functools
import json
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, inspect, or_, select, update
from sqlalchemy.orm import Session

from mallee.core import clock
from mallee.core.errors import CloudError
from mallee.db.group_commit import GroupCommitter
from mallee.db.prepared import first_row, prepared, session_cursor
from mallee.db.session import Database, hold_write_lock
from mallee.drivers.objectstore.base import ObjectStore
from mallee.services.walrus import garbage
from mallee.services.walrus.bodies import Cipher, StoredBody
from mallee.services.walrus.encryption import (
    KEY_BYTES,
    SSE_C,
    SSE_S3,
    CustomerKey,
    Keys,
    Sealing,
    SegmentKeys,
    StreamCipher,
    customer_for_read,
    default_algorithm,
    in_clear,
    sealing_for_write,
)
from mallee.services.walrus.not_found import no_such_key
from mallee.services.walrus.quota import Quotas
from mallee.services.walrus.tables import Bucket, ObjectVersion, Part, Upload

# Set while a request is answered on the event loop: the commits it queues are collected here for
# the app to await (a handler thread waits for them instead; on the loop a wait would stop it).
deferred_commits: contextvars.ContextVar[list[Future[Any]] | None] = contextvars.ContextVar(
    "deferred_commits", default=None
)
_PRECONDITION = "At least one of the pre-conditions you specified did not hold"
_CONFLICT = "A conflicting operation occurred. If using PutObject you can retry the request."


@dataclass(frozen=True)
class WriteConditions:
    """A conditional write's If-Match / If-None-Match (PutObject, CompleteMultipartUpload), held
    against the key's newest version when the write commits. `checked_early`: they already held
    when the request began, so failing at commit means another write got in between: S3's 409
    ConditionalRequestConflict rather than 412."""

    if_match: str | None = None
    if_none_match: str | None = None
    checked_early: bool = False

    @classmethod
    def of(cls, p: Mapping[str, Any]) -> WriteConditions | None:
        if p.get("IfMatch") is None and p.get("IfNoneMatch") is None:
            return None
        if p.get("IfNoneMatch") is not None and p["IfNoneMatch"].strip() != "*":
            raise CloudError("NotImplemented", "If-None-Match on a write takes only '*'.", 501)
        return cls(p.get("IfMatch"), p.get("IfNoneMatch"))

    def failure(self, latest: Mapping[str, Any] | None, key: str) -> CloudError | None:
        """Why a write must not go ahead over `latest` (the key's newest row, None: no version)."""
        exists = latest is not None and not latest["is_delete_marker"]
        if self.if_none_match is not None and exists:
            return self._failed()
        if self.if_match is not None:
            if not exists:
                return no_such_key(key)
            assert latest is not None
            wanted = [t.strip().strip('"') for t in self.if_match.split(",")]
            if "*" not in wanted and str(latest["etag"]).strip('"') not in wanted:
                return self._failed()
        return None

    def _failed(self) -> CloudError:
        if self.checked_early:
            return CloudError("ConditionalRequestConflict", _CONFLICT, 409)
        return CloudError("PreconditionFailed", _PRECONDITION, 412, details={"Condition": self._named()})

    def _named(self) -> str:
        return "If-None-Match" if self.if_none_match is not None else "If-Match"


@dataclass(frozen=True)
class Write:
    """One new version for `add_versions`, with the conditions its write must meet."""

    version: ObjectVersion
    conditions: WriteConditions | None = None


# -- statements, built once (they run on DB-API cursors: see db.prepared) --------------------------

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
    _TABLE.c.etag, _TABLE.c.is_delete_marker,
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
# Every column labelled with its attribute's name, so that a row builds an ObjectVersion.
_COLUMNS = [column.label(attr) for attr, column in _COLUMN_OF.items()]
_BY_KEY = select(*_COLUMNS).where(_TABLE.c.bucket == bindparam("bucket"), _TABLE.c.key == bindparam("key"))
_LATEST = _BY_KEY.where(_TABLE.c.is_latest)
_VERSION = _BY_KEY.where(_TABLE.c.version_id == bindparam("version_id"))


def loose_version(fields: Mapping[Any, Any]) -> ObjectVersion:
    """An ObjectVersion of these attributes for no session (one read, or one to add), filled the
    way the ORM fills what it loads: its constructor's attribute events cost a small GET or PUT
    ~10 % of its CPU."""
    version: ObjectVersion = _new_version()
    version.__dict__.update(fields)
    return version


def key_lock(bucket: str, key: str) -> str:
    """The name of a key's write lock (`hold_write_lock`): held by whoever changes its versions."""
    return f"{bucket}/{key}"


def add_versions(s: Session, writes: Sequence[Write]) -> list[CloudError | None]:
    """The version rule, for a list of writes in order (the group committer hands every queued
    PUT's here at once): each version becomes the newest of its key; outside versioning it
    replaces the key's previous "null" one (its blobs go to the garbage queue), even one earlier in
    the list. A write whose conditions fail is left out and answered with its error.

    A few prepared statements on the session's DB-API connection for the whole list: the versions
    stay out of the session; versions the session loaded of these keys are expired (re-read)."""
    s.flush()  # the session's own changes first, in order
    keys = list(dict.fromkeys((w.version.bucket, w.version.key) for w in writes))
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
    answers: list[CloudError | None] = []
    for write in writes:
        version = write.version
        older = current[version.bucket, version.key]
        if write.conditions is not None:
            latest = next((row for row in older if row["is_latest"]), None)
            failed = write.conditions.failure(latest, version.key)
            answers.append(failed)
            if failed is not None:
                continue
        else:
            answers.append(None)
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
    touched = set(keys)
    for loaded in list(s.identity_map.values()):  # a request's session: none of them stale
        if isinstance(loaded, ObjectVersion) and (loaded.bucket, loaded.key) in touched:
            s.expire(loaded)
    return answers


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


@dataclass(frozen=True)
class Sealed:
    """New bytes' encryption (see encryption): the sink's cipher, and what the row keeps of it."""

    cipher: Cipher | None
    sse: str = ""
    sse_key: str = ""  # the data key, wrapped
    sse_key_hmac: str = ""

    def fields(self) -> dict[str, str]:
        """ObjectVersion (and Upload, without sse_key) columns."""
        return {"sse": self.sse, "sse_key": self.sse_key, "sse_key_hmac": self.sse_key_hmac}


class ObjectLayer:
    """Versions of objects over a database (rows) and an object store (blobs), encrypted at rest
    as their writers ask; one per Walrus process (`runtime.layer()`)."""

    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        writer: GroupCommitter,
        quotas: Quotas | None = None,
        keys: Keys | None = None,
        default_encryption: bool = False,
    ) -> None:
        self.db = db
        self.store = store
        self.writer = writer
        self.quotas = quotas  # None: no account quotas (tests, tools)
        self.keys = keys or Keys(os.urandom(KEY_BYTES))  # tests and tools: a key of their own
        self.default_encryption = default_encryption  # SSE-S3 where a bucket does not say (S3's)

    # -- encryption -------------------------------------------------------------------------------

    def bucket_sse(self, bucket: Bucket) -> str:
        """How the bucket encrypts new objects that ask nothing (PutBucketEncryption)."""
        if bucket.encryption is None:
            return SSE_S3 if self.default_encryption else ""
        return default_algorithm(bucket.encryption)

    def sealing(self, p: Mapping[str, Any], bucket: Bucket) -> Sealing:
        """How a write's new bytes are to be stored (its headers, else the bucket's default)."""
        return sealing_for_write(p, self.bucket_sse(bucket))

    def key_hmac(self, sealing: Sealing) -> str:
        """What is kept of an SSE-C write's key ("" for others)."""
        return self.keys.customer_hmac(sealing.customer) if sealing.customer is not None else ""

    def seal(self, sealing: Sealing) -> Sealed:
        """A data key for one new blob or row under `sealing`."""
        new = self.keys.new_key(sealing)
        if new is None:
            return Sealed(None)
        key_hmac = self.key_hmac(sealing)
        cipher = Cipher(StreamCipher(new.key), etag_of_stored=sealing.mode == SSE_C)
        return Sealed(cipher, sealing.mode, new.wrapped, key_hmac)

    def reader_key(
        self, p: Mapping[str, Any], sse: str, key_hmac: str, prefix: str = ""
    ) -> CustomerKey | None:
        """The customer's key a read of bytes stored as `sse` carries (checked; None unless SSE-C)."""
        return customer_for_read(self.keys, p, sse, key_hmac, prefix)

    def data_keys(self, version: ObjectVersion, customer: CustomerKey | None) -> SegmentKeys:
        """The data key of the version's segment n (None: stored in clear; see
        blob_reads.open_body), unwrapped when first asked for: a ranged GET of one part of a
        10,000-part object unwraps one key, not 10,000."""
        if not version.sse:
            return in_clear
        if version.sse_key:  # one blob, or bytes in the row; multipart: a key per part
            wrapped = [version.sse_key]
        else:
            wrapped = [str(part[3]) for part in json.loads(version.parts or "[]")]
        sse, keys = version.sse, self.keys

        @functools.cache
        def key(number: int) -> bytes | None:
            return keys.unwrap(wrapped[number], sse, customer)

        return key

    # -- reads ---------------------------------------------------------------------------------

    def read(
        self, bucket: str, key: str, version_id: str | None, *, marker_headers: bool = False
    ) -> ObjectVersion:
        """The version a request names (its key's newest without `version_id`), as last committed:
        one prepared query on a connection of its own, each call a fresh snapshot (see blob_reads);
        the version belongs to no session. `marker_headers`: when it is a delete marker, say so in
        the error's headers (x-amz-delete-marker, x-amz-version-id), as S3 does for GET and HEAD."""
        params = {"bucket": bucket, "key": key, "version_id": version_id}
        row = first_row(self.db.engine, _VERSION if version_id else _LATEST, params)
        found = loose_version(row) if row is not None else None
        return _readable(found, key, version_id, marker_headers)

    @staticmethod
    def find(s: Session, bucket: str, key: str, version_id: str | None) -> ObjectVersion:
        """The version a request names, in the request's session (to change its tags or ACL)."""
        q = select(ObjectVersion).where(ObjectVersion.bucket == bucket, ObjectVersion.key == key)
        found: ObjectVersion | None = s.scalar(
            q.where(ObjectVersion.version_id == version_id)
            if version_id
            else q.where(ObjectVersion.is_latest)
        )
        return _readable(found, key, version_id, False)

    # -- writes --------------------------------------------------------------------------------

    @staticmethod
    def new_version_id(bucket: Bucket) -> str:
        return secrets.token_urlsafe(24) if bucket.versioning == "Enabled" else "null"

    def check_early(
        self, bucket: str, key: str, conditions: WriteConditions | None
    ) -> WriteConditions | None:
        """A conditional write's conditions against what is there before its body is read (no
        body stored for a write that cannot happen); they are checked again at commit."""
        if conditions is None:
            return None
        try:
            latest = self.read(bucket, key, None)
            row: dict[str, Any] | None = {"etag": latest.etag, "is_delete_marker": False}
        except CloudError as err:
            if err.code != "NoSuchKey":
                raise
            row = None
        failed = conditions.failure(row, key)
        if failed is not None:
            raise failed
        return WriteConditions(conditions.if_match, conditions.if_none_match, checked_early=True)

    def put(
        self, bucket: Bucket, version: ObjectVersion, stored: StoredBody, conditions: WriteConditions | None
    ) -> None:
        """PutObject's new version, committed with other requests' (group commit): its blob is
        durable already, a small body is made durable by that commit. On the event loop the commit
        is deferred for the loop to await (a conditional write waits: its answer depends on it)."""
        write = Write(version, conditions)
        try:
            self.check_quota(bucket, version.size)
            pending = deferred_commits.get()
            if pending is not None and stored.locator is None and conditions is None:
                pending.append(self.writer.defer(add_versions, write))
                return
            failed = self.writer.run_batched(add_versions, write)
            if failed is not None:
                raise failed
        except BaseException:
            stored.discard(self.store)
            raise

    def add(
        self,
        s: Session,
        bucket: Bucket,
        version: ObjectVersion,
        stored: StoredBody | None = None,
        conditions: WriteConditions | None = None,
    ) -> None:
        """A new version in a request's own transaction (CopyObject, CompleteMultipartUpload), its
        owner's quota checked; `stored`: its new blob, deleted again if it is not recorded."""
        try:
            self.check_quota(bucket, version.size)
            failed = add_versions(s, [Write(version, conditions)])[0]
            if failed is not None:
                raise failed
        except BaseException:
            if stored is not None:
                stored.discard(self.store)
            raise

    def check_quota(self, bucket: Bucket, size: int) -> None:
        """Refuse one more object of `size` bytes past the bucket owner's quota."""
        if self.quotas is not None:
            self.quotas.check(bucket.owner_account_id, 1, size)

    def lock(self, s: Session, bucket: str, keys: Sequence[str]) -> None:
        """Hold several keys' locks at once, in the one order all multi-key writers use (taken one
        by one, two requests naming keys in other orders could each wait for the other)."""
        hold_write_lock(s, [key_lock(bucket, key) for key in keys])

    def delete(
        self,
        s: Session,
        bucket: Bucket,
        key: str,
        version_id: str | None,
        owner: str,
        guard: Callable[[ObjectVersion], None] | None = None,
    ) -> dict[str, Any]:
        """DeleteObject's effect and answer: a version removed (the next newest becomes the
        latest), a delete marker added (versioned bucket), or the key's object removed. `guard`
        may refuse to remove a version (object lock) by raising."""
        self.lock(s, bucket.name, [key])  # which version is newest stays so meanwhile
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
            if guard is not None:
                guard(found)
            was_latest, marker = found.is_latest, found.is_delete_marker
            self.discard(s, found)
            if was_latest:
                _promote_newest(s, bucket.name, key)
            out: dict[str, Any] = {"VersionId": version_id}
            if marker:
                out["DeleteMarker"] = True
            return out
        if bucket.versioning:
            marker_id = self.add_delete_marker(s, bucket, key, owner)
            return {"DeleteMarker": True, "VersionId": marker_id}
        for old in s.scalars(
            select(ObjectVersion).where(ObjectVersion.bucket == bucket.name, ObjectVersion.key == key)
        ):
            garbage.discard(s, old)
        s.flush()
        return {}

    def add_delete_marker(
        self, s: Session, bucket: Bucket, key: str, owner: str, at: _dt.datetime | None = None
    ) -> str:
        """A delete marker as the key's newest version (DeleteObject, lifecycle expiry as of `at`);
        its id."""
        marker = loose_version(
            dict(
                bucket=bucket.name,
                key=key,
                version_id=self.new_version_id(bucket),
                is_latest=True,
                is_delete_marker=True,
                last_modified=at or clock.now(),
                owner_account_id=owner,
            )
        )
        add_versions(s, [Write(marker)])
        return str(marker.version_id)

    @staticmethod
    def drop_upload(s: Session, upload: Upload) -> None:
        """A multipart upload gone without an object (aborted, or expired by lifecycle): its
        parts' blobs queued as garbage."""
        garbage.queue(s, list(s.scalars(select(Part.locator).where(Part.upload_id == upload.upload_id))))
        s.execute(delete(Part).where(Part.upload_id == upload.upload_id))
        s.delete(upload)
        s.flush()

    @staticmethod
    def discard(s: Session, version: ObjectVersion) -> None:
        """A version removed for good (its blobs queued as garbage); the caller holds its key's
        lock and decides what becomes the latest."""
        garbage.discard(s, version)
        s.flush()


def _promote_newest(s: Session, bucket: str, key: str) -> None:
    newest = s.scalar(
        select(ObjectVersion)
        .where(ObjectVersion.bucket == bucket, ObjectVersion.key == key)
        .order_by(ObjectVersion.id.desc())
        .limit(1)
    )
    if newest is not None:
        newest.is_latest = True
