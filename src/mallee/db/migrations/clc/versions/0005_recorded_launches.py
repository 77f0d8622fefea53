"""Instances keep their launch and their reservation's MinCount (record, then ask); images keep a
bundle's manifest as nodes need it (read once, at registration).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("min_count", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("launch", sa.Text(), nullable=False, server_default=""))
    with op.batch_alter_table("instances", schema=None) as batch_op:  # the default was for old rows only
        batch_op.alter_column("launch", server_default=None)
    with op.batch_alter_table("images", schema=None) as batch_op:
        # Bundles registered before this carry no manifest: register them again to launch them.
        batch_op.add_column(sa.Column("manifest", sa.Text(), nullable=False, server_default=""))
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.alter_column("manifest", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("manifest")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("launch")
        batch_op.drop_column("min_count")
