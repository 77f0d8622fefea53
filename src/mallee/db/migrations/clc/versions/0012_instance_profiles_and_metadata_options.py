"""Instances' IAM instance profile associations and metadata service options
(services/clc/instance_profile_tables.py).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mallee.db.base import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "iam_instance_profile_associations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("instance_id", sa.String(length=32), nullable=False),
        sa.Column("profile_id", sa.String(length=32), nullable=False),
        sa.Column("profile_arn", sa.String(length=2048), nullable=False),
        sa.Column("created", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_iam_instance_profile_associations_instance_id"),
        "iam_instance_profile_associations",
        ["instance_id"],
        unique=True,
    )
    op.create_table(
        "instance_metadata_options",
        sa.Column("instance_id", sa.String(length=32), nullable=False),
        sa.Column("http_tokens", sa.String(length=16), nullable=False),
        sa.Column("http_put_response_hop_limit", sa.Integer(), nullable=False),
        sa.Column("http_endpoint", sa.String(length=16), nullable=False),
        sa.Column("instance_metadata_tags", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("instance_id"),
    )


def downgrade() -> None:
    op.drop_table("instance_metadata_options")
    op.drop_index(
        op.f("ix_iam_instance_profile_associations_instance_id"),
        table_name="iam_instance_profile_associations",
    )
    op.drop_table("iam_instance_profile_associations")
