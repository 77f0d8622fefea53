"""Walrus: what S3 added since 2023 — bucket ownership controls, public access blocks, default
encryption and object lock on buckets; encryption at rest and object lock on object versions
and multipart uploads.

Buckets made before this revision have no ownership controls ("": ACLs work, as S3 kept them for
buckets made before April 2023); new buckets take BucketOwnerEnforced (the model's default).

Revision ID: w0003
Revises: w0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mallee.db.base import UTCDateTime

revision = "w0003"
down_revision = "w0002"
branch_labels = None
depends_on = None

_LOCK = ("lock_mode", "lock_until", "legal_hold")


def _lock_columns() -> list[sa.Column[object]]:
    """Object lock's columns, for objects and uploads (a Column belongs to one table)."""
    return [
        sa.Column("lock_mode", sa.String(16), nullable=False, server_default=""),
        sa.Column("lock_until", UTCDateTime(timezone=True), nullable=True),
        sa.Column("legal_hold", sa.Boolean(), nullable=False, server_default=sa.false()),
    ]


def upgrade() -> None:
    with op.batch_alter_table("buckets") as batch:
        batch.add_column(sa.Column("ownership", sa.String(32), nullable=False, server_default=""))
        batch.add_column(sa.Column("public_access_block", sa.Text(), nullable=True))
        batch.add_column(sa.Column("encryption", sa.Text(), nullable=True))
        batch.add_column(sa.Column("object_lock", sa.Text(), nullable=True))
    with op.batch_alter_table("objects") as batch:
        batch.add_column(sa.Column("sse", sa.String(16), nullable=False, server_default=""))
        batch.add_column(sa.Column("sse_key", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("sse_key_hmac", sa.String(64), nullable=False, server_default=""))
        for column in _lock_columns():
            batch.add_column(column)
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("sse", sa.String(16), nullable=False, server_default=""))
        batch.add_column(sa.Column("sse_key_hmac", sa.String(64), nullable=False, server_default=""))
        for column in _lock_columns():
            batch.add_column(column)
    with op.batch_alter_table("parts") as batch:
        batch.add_column(sa.Column("sse_key", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("parts") as batch:
        batch.drop_column("sse_key")
    with op.batch_alter_table("uploads") as batch:
        for name in reversed(_LOCK):
            batch.drop_column(name)
        batch.drop_column("sse_key_hmac")
        batch.drop_column("sse")
    with op.batch_alter_table("objects") as batch:
        for name in reversed(_LOCK):
            batch.drop_column(name)
        for name in ("sse_key_hmac", "sse_key", "sse"):
            batch.drop_column(name)
    with op.batch_alter_table("buckets") as batch:
        for name in ("object_lock", "encryption", "public_access_block", "ownership"):
            batch.drop_column(name)
