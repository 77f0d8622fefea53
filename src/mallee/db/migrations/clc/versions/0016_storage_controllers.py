"""The zones' storage controllers (services/clc/tables.py StorageController): the CLC's own zone's,
made by bootstrap, and those RegisterStorageController added (services/clc/ec2/services.py).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mallee.db.base

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "storage_controllers",
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("zone", name=op.f("pk_storage_controllers")),
        sa.UniqueConstraint("name", name=op.f("uq_storage_controllers_name")),
    )


def downgrade() -> None:
    op.drop_table("storage_controllers")
