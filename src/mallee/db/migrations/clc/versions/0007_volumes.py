"""EBS volumes and their attachments (services/clc/volume_tables.py).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mallee.db.base

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "volumes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("size_gib", sa.Integer(), nullable=False),
        sa.Column("volume_type", sa.String(length=16), nullable=False),
        sa.Column("iops", sa.Integer(), nullable=True),
        sa.Column("throughput", sa.Integer(), nullable=True),
        sa.Column("snapshot_id", sa.String(length=32), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_reason", sa.String(length=255), nullable=False),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("client_token", sa.String(length=64), nullable=True),
        sa.Column("auto_enable_io", sa.Boolean(), nullable=False),
        sa.Column("modification_state", sa.String(length=16), nullable=True),
        sa.Column("target_size_gib", sa.Integer(), nullable=True),
        sa.Column("target_volume_type", sa.String(length=16), nullable=True),
        sa.Column("target_iops", sa.Integer(), nullable=True),
        sa.Column("target_throughput", sa.Integer(), nullable=True),
        sa.Column("original_size_gib", sa.Integer(), nullable=True),
        sa.Column("original_volume_type", sa.String(length=16), nullable=True),
        sa.Column("original_iops", sa.Integer(), nullable=True),
        sa.Column("original_throughput", sa.Integer(), nullable=True),
        sa.Column("modification_started", mallee.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("modification_ended", mallee.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_volumes_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_volumes")),
    )
    op.create_index(op.f("ix_volumes_account_id"), "volumes", ["account_id"], unique=False)
    op.create_index(op.f("ix_volumes_state"), "volumes", ["state"], unique=False)
    op.create_index(op.f("ix_volumes_zone"), "volumes", ["zone"], unique=False)
    op.create_table(
        "volume_attachments",
        sa.Column("volume_id", sa.String(length=32), nullable=False),
        sa.Column("instance_id", sa.String(length=32), nullable=False),
        sa.Column("device", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("force", sa.Boolean(), nullable=False),
        sa.Column("delete_on_termination", sa.Boolean(), nullable=False),
        sa.Column("attach_time", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("target", sa.String(length=8), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_volume_attachments_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["volume_id"],
            ["volumes.id"],
            name=op.f("fk_volume_attachments_volume_id_volumes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("volume_id", name=op.f("pk_volume_attachments")),
    )
    op.create_index(
        op.f("ix_volume_attachments_instance_id"), "volume_attachments", ["instance_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_volume_attachments_instance_id"), table_name="volume_attachments")
    op.drop_table("volume_attachments")
    op.drop_index(op.f("ix_volumes_zone"), table_name="volumes")
    op.drop_index(op.f("ix_volumes_state"), table_name="volumes")
    op.drop_index(op.f("ix_volumes_account_id"), table_name="volumes")
    op.drop_table("volumes")
