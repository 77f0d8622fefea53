"""Walrus's metadata: buckets, object versions, multipart uploads and their parts.

Object keys compare as raw UTF-8 bytes (S3's listing order): SQLite's default BINARY collation
does that; on PostgreSQL the key columns use the "C" collation.
"""

from __future__ import annotations

import datetime as _dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mallee.db.base import NAMING, UTCDateTime


class Base(DeclarativeBase):
    """Walrus has its own database (its own migration tree `db/migrations/walrus`)."""

    metadata = MetaData(naming_convention=NAMING)


KEY = String(1024).with_variant(String(1024, collation="C"), "postgresql")


class Bucket(Base):
    __tablename__ = "buckets"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner_account_id: Mapped[str] = mapped_column(String(12), index=True)
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    location: Mapped[str] = mapped_column(String(64), default="")
    versioning: Mapped[str] = mapped_column(String(16), default="")  # "", Enabled, Suspended
    acl: Mapped[str] = mapped_column(Text, default="[]")  # JSON grants beyond the owner's
    policy: Mapped[str | None] = mapped_column(Text)
    cors: Mapped[str | None] = mapped_column(Text)  # JSON CORSRules
    lifecycle: Mapped[str | None] = mapped_column(Text)  # JSON Rules
    tags: Mapped[str | None] = mapped_column(Text)  # JSON TagSet
    # BucketOwnerEnforced (ACLs off, the default for new buckets as on S3), BucketOwnerPreferred,
    # ObjectWriter, or "" (no controls, as ObjectWriter: buckets made before they existed here).
    ownership: Mapped[str] = mapped_column(String(32), default="BucketOwnerEnforced")
    public_access_block: Mapped[str | None] = mapped_column(Text)  # JSON PublicAccessBlockConfiguration
    encryption: Mapped[str | None] = mapped_column(Text)  # JSON ServerSideEncryptionConfiguration
    object_lock: Mapped[str | None] = mapped_column(Text)  # JSON ObjectLockConfiguration; None: off


class ObjectVersion(Base):
    """One stored version of a key, or a delete marker. The newest one of a key is `is_latest`."""

    __tablename__ = "objects"
    __table_args__ = (
        Index("ix_objects_listing", "bucket", "key", "is_latest"),
        UniqueConstraint("bucket", "key", "version_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bucket: Mapped[str] = mapped_column(String(63))
    key: Mapped[str] = mapped_column(KEY)
    version_id: Mapped[str] = mapped_column(String(64))  # "null" outside versioning, as S3 says
    is_latest: Mapped[bool] = mapped_column(Boolean)
    is_delete_marker: Mapped[bool] = mapped_column(Boolean, default=False)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    etag: Mapped[str] = mapped_column(String(80), default="")
    last_modified: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    owner_account_id: Mapped[str] = mapped_column(String(12))
    storage_class: Mapped[str] = mapped_column(String(32), default="STANDARD")
    headers: Mapped[str] = mapped_column(Text, default="{}")  # JSON: Content-Type, Cache-Control, …
    metadata_: Mapped[str] = mapped_column("metadata", Text, default="{}")  # JSON x-amz-meta-*
    tags: Mapped[str] = mapped_column(Text, default="[]")
    acl: Mapped[str] = mapped_column(Text, default="[]")
    checksums: Mapped[str] = mapped_column(Text, default="{}")  # JSON algorithm -> base64 value
    # JSON [[locator, size, etag, wrapped data key (encrypted parts only)], …]: multipart
    parts: Mapped[str] = mapped_column(Text, default="[]")
    locator: Mapped[str | None] = mapped_column(String(255))  # single-blob objects
    # Encryption at rest (see encryption): "" none, AES256 (SSE-S3) or SSE-C; the data key of the
    # blob or row bytes, wrapped (multipart: each part's is in `parts`); SSE-C: an HMAC of the
    # customer's key, to refuse another key (the key itself is never kept).
    sse: Mapped[str] = mapped_column(String(16), default="")
    sse_key: Mapped[str] = mapped_column(Text, default="")
    sse_key_hmac: Mapped[str] = mapped_column(String(64), default="")
    # Object lock: retention mode (GOVERNANCE, COMPLIANCE) until a date, and a legal hold.
    lock_mode: Mapped[str] = mapped_column(String(16), default="")
    lock_until: Mapped[_dt.datetime | None] = mapped_column(UTCDateTime)
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    # Small objects' bytes, kept in the row instead of a blob (see bodies.BodySink). Deferred: only
    # reads of the object load them, not listings or ORM loads of the version.
    body: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)


class Upload(Base):
    __tablename__ = "uploads"

    upload_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(63), index=True)
    key: Mapped[str] = mapped_column(KEY)
    initiated: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    owner_account_id: Mapped[str] = mapped_column(String(12))
    storage_class: Mapped[str] = mapped_column(String(32), default="STANDARD")
    headers: Mapped[str] = mapped_column(Text, default="{}")
    metadata_: Mapped[str] = mapped_column("metadata", Text, default="{}")
    tags: Mapped[str] = mapped_column(Text, default="[]")
    acl: Mapped[str] = mapped_column(Text, default="[]")
    checksum_algorithm: Mapped[str] = mapped_column(String(32), default="")  # "crc32:FULL_OBJECT"
    sse: Mapped[str] = mapped_column(String(16), default="")  # as ObjectVersion's
    sse_key_hmac: Mapped[str] = mapped_column(String(64), default="")
    lock_mode: Mapped[str] = mapped_column(String(16), default="")
    lock_until: Mapped[_dt.datetime | None] = mapped_column(UTCDateTime)
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)


class Part(Base):
    __tablename__ = "parts"

    upload_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    part_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    etag: Mapped[str] = mapped_column(String(80))
    locator: Mapped[str] = mapped_column(String(255))
    last_modified: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    checksum: Mapped[str] = mapped_column(Text, default="")
    sse_key: Mapped[str] = mapped_column(Text, default="")  # its blob's data key, wrapped


class Garbage(Base):
    """Blobs the database no longer points at, deleted from the object store after commit."""

    __tablename__ = "garbage"

    locator: Mapped[str] = mapped_column(String(255), primary_key=True)
    queued: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
