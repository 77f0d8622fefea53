"""Walrus: buckets, object versions, multipart uploads, parts, garbage.

Revision ID: w0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mallee.db.base

revision = "w0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "buckets",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("owner_account_id", sa.String(length=12), nullable=False),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=False),
        sa.Column("versioning", sa.String(length=16), nullable=False),
        sa.Column("acl", sa.Text(), nullable=False),
        sa.Column("policy", sa.Text(), nullable=True),
        sa.Column("cors", sa.Text(), nullable=True),
        sa.Column("lifecycle", sa.Text(), nullable=True),
        sa.Column("tags", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_buckets")),
    )
    op.create_index(op.f("ix_buckets_owner_account_id"), "buckets", ["owner_account_id"], unique=False)
    op.create_table(
        "garbage",
        sa.Column("locator", sa.String(length=255), nullable=False),
        sa.Column("queued", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("locator", name=op.f("pk_garbage")),
    )
    op.create_table(
        "objects",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("bucket", sa.String(length=63), nullable=False),
        sa.Column(
            "key",
            sa.String(length=1024).with_variant(sa.String(length=1024, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("version_id", sa.String(length=64), nullable=False),
        sa.Column("is_latest", sa.Boolean(), nullable=False),
        sa.Column("is_delete_marker", sa.Boolean(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(length=80), nullable=False),
        sa.Column("last_modified", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("owner_account_id", sa.String(length=12), nullable=False),
        sa.Column("storage_class", sa.String(length=32), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("acl", sa.Text(), nullable=False),
        sa.Column("checksums", sa.Text(), nullable=False),
        sa.Column("parts", sa.Text(), nullable=False),
        sa.Column("locator", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_objects")),
        sa.UniqueConstraint("bucket", "key", "version_id", name=op.f("uq_objects_bucket")),
    )
    op.create_index("ix_objects_listing", "objects", ["bucket", "key", "is_latest"], unique=False)
    op.create_table(
        "parts",
        sa.Column("upload_id", sa.String(length=64), nullable=False),
        sa.Column("part_number", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(length=80), nullable=False),
        sa.Column("locator", sa.String(length=255), nullable=False),
        sa.Column("last_modified", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("checksum", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("upload_id", "part_number", name=op.f("pk_parts")),
    )
    op.create_table(
        "uploads",
        sa.Column("upload_id", sa.String(length=64), nullable=False),
        sa.Column("bucket", sa.String(length=63), nullable=False),
        sa.Column(
            "key",
            sa.String(length=1024).with_variant(sa.String(length=1024, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("initiated", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("owner_account_id", sa.String(length=12), nullable=False),
        sa.Column("storage_class", sa.String(length=32), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("acl", sa.Text(), nullable=False),
        sa.Column("checksum_algorithm", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("upload_id", name=op.f("pk_uploads")),
    )
    op.create_index(op.f("ix_uploads_bucket"), "uploads", ["bucket"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_uploads_bucket"), table_name="uploads")
    op.drop_table("uploads")
    op.drop_table("parts")
    op.drop_index("ix_objects_listing", table_name="objects")
    op.drop_table("objects")
    op.drop_table("garbage")
    op.drop_index(op.f("ix_buckets_owner_account_id"), table_name="buckets")
    op.drop_table("buckets")
