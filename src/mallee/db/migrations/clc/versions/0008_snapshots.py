"""EBS snapshots and their createVolumePermission (services/clc/volume_tables.py).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mallee.db.base

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("volume_id", sa.String(length=32), nullable=False),
        sa.Column("volume_size_gib", sa.Integer(), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("source_snapshot_id", sa.String(length=32), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_message", sa.String(length=255), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("stored_bytes", sa.BigInteger(), nullable=False),
        sa.Column("started", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("client_token", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_snapshots_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshots")),
    )
    op.create_index(op.f("ix_snapshots_account_id"), "snapshots", ["account_id"], unique=False)
    op.create_index(op.f("ix_snapshots_state"), "snapshots", ["state"], unique=False)
    op.create_index(op.f("ix_snapshots_volume_id"), "snapshots", ["volume_id"], unique=False)
    op.create_index(op.f("ix_snapshots_zone"), "snapshots", ["zone"], unique=False)
    op.create_table(
        "snapshot_permissions",
        sa.Column("snapshot_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshots.id"],
            name=op.f("fk_snapshot_permissions_snapshot_id_snapshots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("snapshot_id", "account_id", name=op.f("pk_snapshot_permissions")),
    )


def downgrade() -> None:
    op.drop_table("snapshot_permissions")
    for column in ("zone", "volume_id", "state", "account_id"):
        op.drop_index(op.f(f"ix_snapshots_{column}"), table_name="snapshots")
    op.drop_table("snapshots")
