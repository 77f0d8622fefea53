"""Instances.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mallee.db.base

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("reservation_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("image_id", sa.String(length=32), nullable=False),
        sa.Column("kernel_id", sa.String(length=32), nullable=True),
        sa.Column("ramdisk_id", sa.String(length=32), nullable=True),
        sa.Column("instance_type", sa.String(length=32), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("desired", sa.String(length=16), nullable=False),
        sa.Column("state_reason", sa.String(length=255), nullable=False),
        sa.Column("transition_reason", sa.String(length=255), nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("private_ip", sa.String(length=45), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("key_name", sa.String(length=255), nullable=True),
        sa.Column("user_data", sa.Text(), nullable=False),
        sa.Column("security_groups", sa.Text(), nullable=False),
        sa.Column("launch_index", sa.Integer(), nullable=False),
        sa.Column("launch_time", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("terminated_at", mallee.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("client_token", sa.String(length=64), nullable=True),
        sa.Column("disable_api_termination", sa.Boolean(), nullable=False),
        sa.Column("shutdown_behavior", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_instances_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
        sa.UniqueConstraint("account_id", "client_token", name=op.f("uq_instances_account_id")),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instances_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_instances_private_ip"), ["private_ip"], unique=False)
        batch_op.create_index(batch_op.f("ix_instances_reservation_id"), ["reservation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_instances_state"), ["state"], unique=False)


def downgrade() -> None:
    op.drop_table("instances")
