"""The Storage Controller's imported snapshots: the URL and format of the disk image they come from.

Revision ID: s0003
Revises: s0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s0003"
down_revision = "s0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sc_snapshots") as batch:
        batch.add_column(sa.Column("source_url", sa.Text(), server_default="", nullable=False))
        batch.add_column(sa.Column("disk_format", sa.String(length=16), server_default="", nullable=False))
    with op.batch_alter_table(
        "sc_snapshots"
    ) as batch:  # the defaults filled the old rows; the models set them
        batch.alter_column("source_url", server_default=None)
        batch.alter_column("disk_format", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("sc_snapshots") as batch:
        batch.drop_column("disk_format")
        batch.drop_column("source_url")
