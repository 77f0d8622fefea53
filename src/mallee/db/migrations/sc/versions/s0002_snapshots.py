"""The Storage Controller's snapshots, and volumes restored from them.

Revision ID: s0002
Revises: s0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mallee.db.base

revision = "s0002"
down_revision = "s0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sc_volumes") as batch:
        batch.add_column(sa.Column("snapshot_id", sa.String(length=32), server_default="", nullable=False))
    with op.batch_alter_table("sc_volumes") as batch:  # the default filled the old rows; the models set it
        batch.alter_column("snapshot_id", server_default=None)
    op.create_table(
        "sc_snapshots",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("volume_id", sa.String(length=32), nullable=False),
        sa.Column("size_gib", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("stored_bytes", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source_snapshot_id", sa.String(length=32), nullable=False),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sc_snapshots")),
    )
    op.create_table(
        "sc_snapshot_chunks",
        sa.Column("snapshot_id", sa.String(length=32), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("snapshot_id", "chunk", name=op.f("pk_sc_snapshot_chunks")),
    )
    op.create_index(op.f("ix_sc_snapshot_chunks_sha256"), "sc_snapshot_chunks", ["sha256"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_sc_snapshot_chunks_sha256"), table_name="sc_snapshot_chunks")
    op.drop_table("sc_snapshot_chunks")
    op.drop_table("sc_snapshots")
    with op.batch_alter_table("sc_volumes") as batch:
        batch.drop_column("snapshot_id")
