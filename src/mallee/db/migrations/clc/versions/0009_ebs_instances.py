"""EBS-backed images and instances: root device types, image builds (CreateImage), and snapshots
imported from Walrus (ImportSnapshot).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("root_device_type", sa.String(16), nullable=False, server_default="instance-store")
        )
        batch_op.add_column(sa.Column("build_instance_id", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("build_stage", sa.String(16), nullable=False, server_default=""))
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("root_device_type", sa.String(16), nullable=False, server_default="instance-store")
        )
        batch_op.add_column(
            sa.Column("root_device_name", sa.String(32), nullable=False, server_default="/dev/vda")
        )
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("import_task_id", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("import_source", sa.String(1024), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("import_format", sa.String(8), nullable=False, server_default=""))
        batch_op.create_index(batch_op.f("ix_snapshots_import_task_id"), ["import_task_id"], unique=False)
    # The empty defaults stay (the models declare them too): dropping a default on SQLite rebuilds
    # the table, and dropping `images` or `snapshots` with foreign keys on deletes the rows that
    # cascade from them (launch and create-volume permissions). Clouds that ran this revision
    # before it was changed have no default on these columns; the models set "" anyway.


def downgrade() -> None:
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_snapshots_import_task_id"))
        batch_op.drop_column("import_format")
        batch_op.drop_column("import_source")
        batch_op.drop_column("import_task_id")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("root_device_name")
        batch_op.drop_column("root_device_type")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("build_stage")
        batch_op.drop_column("build_instance_id")
        batch_op.drop_column("root_device_type")
